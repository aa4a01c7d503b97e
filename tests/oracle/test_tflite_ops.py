"""The TFLite writer against LiteRT (issue 3, "TFLite writer"), before any zoo model exists in NHWC.

tflite_testgen writes the hand-built NHWC IR graphs of tests/io/tflite_test_graphs.h as .tflite
files (float32, and float16 weights for some) plus a manifest describing each IR graph. Every
model runs in LiteRT.js 2.5.3 (one Node process, tests/oracle/litert_run.mjs) and is compared
with a numpy evaluation of the IR graph written here from the ops' definitions (PyTorch/ONNX
semantics), independently of modex:
    float32  max|diff| <= 1e-4 * max|ref| + 1e-5
    float16  max|diff| <= 1e-2 * max|ref| + 1e-5
The ops LiteRT's file holds (read from the flatbuffer by litert_run.mjs, not by modex) must
include each case's expected ops, versions must be the runtime's, and float16 models must
dequantize every weight. The harness itself is checked on int8 inputs and outputs and on models
LiteRT cannot run (an unknown custom op, a missing file), which later int8 work relies on.

    MODEX_TFLITE_TESTGEN=build/tests/tflite_testgen /usr/bin/python3 -m pytest -q tests/oracle/test_tflite_ops.py
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402

TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
ABS_TOL = 1e-5
# Op versions the runtime registers for what these models use (TFLite's op_version rules).
EXPECTED_VERSIONS = {("grouped_conv", "CONV_2D"): 6, ("grouped_conv_32", "CONV_2D"): 6,
                     ("matmul", "FULLY_CONNECTED"): 5}


# ---------------------------------------------------------------------------------------------
# numpy reference of the IR ops (NHWC layout for convolutions and pools), in float64.

def activation(x, name):
    return {
        "none": lambda v: v,
        "relu": lambda v: np.maximum(v, 0),
        "relu6": lambda v: np.clip(v, 0, 6),
        "hardswish": lambda v: v * np.clip(v + 3, 0, 6) / 6,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "silu": lambda v: v / (1 + np.exp(-v)),
    }[name](x)


def out_size(size, k, s, d, pb, pe, ceil):
    eff = d * (k - 1) + 1
    span = size + pb + pe - eff
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:  # the last window must start inside the input or its padding
        out -= 1
    return out


def conv(x, w, b, a):
    assert a["layout"] == "NHWC"
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    g = a["groups"]
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    pt, pl, pb, pr = a["pads"]
    oh = out_size(h, kh, sh, dh, pt, pb, False)
    ow = out_size(wd, kw, sw, dw, pl, pr, False)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = np.zeros((n, oh, ow, o))
    og = o // g
    for gi in range(g):
        xs = xp[..., gi * cg:(gi + 1) * cg]
        ws = w[gi * og:(gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
                out[..., gi * og:(gi + 1) * og] += patch @ ws[:, i, j, :].T
    if b is not None:
        out += b
    return activation(out, a["activation"])


def pool(x, a, kind):
    """PyTorch's max/avg pooling (asymmetric pads, ceil_mode, count_include_pad) on NHWC."""
    assert a["layout"] == "NHWC"
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    pt, pl, pb, pr = a["pads"]
    oh = out_size(h, kh, sh, 1, pt, pb, a["ceil_mode"])
    ow = out_size(w, kw, sw, 1, pl, pr, a["ceil_mode"])
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        hs = i * sh - pt
        he = min(hs + kh, h + pb)
        for j in range(ow):
            ws = j * sw - pl
            we = min(ws + kw, w + pr)
            window = x[:, max(hs, 0):min(he, h), max(ws, 0):min(we, w), :]
            if kind == "max":
                out[:, i, j, :] = window.max(axis=(1, 2))
            else:
                count = (he - hs) * (we - ws) if a["count_include_pad"] else window.shape[1] * window.shape[2]
                out[:, i, j, :] = window.sum(axis=(1, 2)) / count
    return out


def reshape(x, target):
    return x.reshape([x.shape[i] if t == 0 else t for i, t in enumerate(target)])


def unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    for ax in sorted(a % rank for a in axes):
        x = np.expand_dims(x, ax)
    return x


def onnx_pad(x, a):
    r = x.ndim
    return np.pad(x, [(a["pads"][i], a["pads"][i + r]) for i in range(r)], constant_values=a["value"])


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


OPS = {
    "Conv": lambda i, a: conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "MaxPool": lambda i, a: pool(i[0], a, "max"),
    "AveragePool": lambda i, a: pool(i[0], a, "avg"),
    "Gemm": lambda i, a: activation(i[0] @ i[1].T + (i[2] if len(i) > 2 and i[2] is not None else 0), a["activation"]),
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
    "Add": lambda i, a: activation(i[0] + i[1], a["activation"]),
    "Sub": lambda i, a: activation(i[0] - i[1], a["activation"]),
    "Mul": lambda i, a: activation(i[0] * i[1], a["activation"]),
    "Div": lambda i, a: activation(i[0] / i[1], a["activation"]),
    "Relu": lambda i, a: activation(i[0], "relu"),
    "Sigmoid": lambda i, a: activation(i[0], "sigmoid"),
    "HardSwish": lambda i, a: activation(i[0], "hardswish"),
    "Silu": lambda i, a: activation(i[0], "silu"),
    "Tanh": lambda i, a: np.tanh(i[0]),
    "Clip": lambda i, a: np.clip(i[0], a["min"], a["max"]),
    "HardSigmoid": lambda i, a: np.clip(a["alpha"] * i[0] + a["beta"], 0, 1),
    "LeakyRelu": lambda i, a: np.where(i[0] >= 0, i[0], a["alpha"] * i[0]),
    "PRelu": lambda i, a: np.where(i[0] >= 0, i[0], i[1] * i[0]),
    "Identity": lambda i, a: i[0],
    "ReduceMean": lambda i, a: i[0].mean(axis=tuple(a["axes"]) or None, keepdims=a["keepdims"]),
    "Flatten": lambda i, a: i[0].reshape(int(np.prod(i[0].shape[:a["axis"]])), -1),
    "Reshape": lambda i, a: reshape(i[0], a["shape"]),
    "Squeeze": lambda i, a: np.squeeze(i[0], axis=tuple(a["axes"])),
    "Unsqueeze": lambda i, a: unsqueeze(i[0], a["axes"]),
    "Transpose": lambda i, a: np.transpose(i[0], a["perm"] or None),
    "Concat": lambda i, a: np.concatenate(i, axis=a["axis"]),
    "Softmax": lambda i, a: softmax(i[0], a["axis"]),
    "Pad": lambda i, a: onnx_pad(i[0], a),
}


def evaluate(case, inputs, root):
    values = {name: x.astype(np.float64) for name, x in inputs.items()}
    for name, c in case["constants"].items():
        values[name] = np.fromfile(root / c["file"], dtype="<f4").reshape(c["dims"]).astype(np.float64)
    for node in case["nodes"]:
        args = [values[i] if i is not None else None for i in node["inputs"]]
        values[node["outputs"][0]] = OPS[node["op"]](args, node["attrs"])
    return [values[o["name"]] for o in case["outputs"]]


# ---------------------------------------------------------------------------------------------

_WORK_DIR = ou.WorkDir("modex-tflite-ops-")
WORK = _WORK_DIR.path


MANIFEST = ou.tflite_testgen_manifest(WORK)
CASES = {c["name"]: c for c in MANIFEST["cases"]}
HARNESS = {h["name"]: h for h in MANIFEST["harness"]}
RUNS = [(name, fmt) for name, c in CASES.items() for fmt in c["models"]]


@pytest.fixture(scope="module", autouse=True)
def _remove_work_dir():
    yield
    _WORK_DIR.cleanup()


def run_litert(jobs, tag):
    """Runs the jobs in one litert_run.mjs process; returns its results by job id."""
    return ou.run_litert(jobs, WORK, tag=tag, timeout=600)[0]


@pytest.fixture(scope="module")
def litert():
    """Runs every model once in one LiteRT process: {(case, format): (result, inputs, outputs)}."""
    rng = np.random.default_rng(3)
    jobs, data = [], {}
    for name, fmt in RUNS:
        case = CASES[name]
        inputs = {}
        job_inputs = []
        for k, spec in enumerate(case["inputs"]):
            # Wide enough to reach every bound of ReLU6, hard-swish and the clips.
            x = (rng.standard_normal(spec["dims"]) * 3).astype("<f4")
            f = WORK / f"{name}.{fmt}.in{k}.bin"
            x.tofile(f)
            inputs[spec["name"]] = x
            job_inputs.append({"file": str(f), "dims": spec["dims"], "dtype": "float32", "name": spec["name"]})
        outputs = [str(WORK / f"{name}.{fmt}.out{k}.bin") for k in range(len(case["outputs"]))]
        jobs.append({"id": f"{name}/{fmt}", "model": str(WORK / case["models"][fmt]), "inputs": job_inputs,
                     "outputs": outputs, "signature": "serving_default"})
        data[(name, fmt)] = (inputs, outputs)
    results = run_litert(jobs, "ops")
    return {key: (results[f"{key[0]}/{key[1]}"], *data[key]) for key in data}


@pytest.mark.parametrize("name,fmt", RUNS, ids=[f"{n}-{f}" for n, f in RUNS])
def test_matches_reference(litert, name, fmt):
    result, inputs, outputs = litert[(name, fmt)]
    assert result["ok"], f"LiteRT failed: {result['error']}\n" + "\n".join(result["log"])
    case = CASES[name]
    assert [i["signature_dims"][1:] for i in result["inputs"]] == [i["dims"][1:] for i in case["inputs"]]
    want = evaluate(case, inputs, WORK)
    for k, (spec, ref) in enumerate(zip(case["outputs"], want)):
        got_meta = result["outputs"][k]
        assert got_meta["name"] == "logits" and got_meta["dtype"] == "float32"
        assert got_meta["dims"] == spec["dims"] == list(ref.shape)
        got = np.fromfile(outputs[k], dtype="<f4").reshape(spec["dims"])
        assert np.isfinite(got).all(), "non-finite values in LiteRT's output"
        diff = float(np.abs(got - ref).max())
        bound = TOLERANCE[fmt] * float(np.abs(ref).max()) + ABS_TOL
        print(f"{name}/{fmt}: max|diff| {diff:.3g} (bound {bound:.3g})")
        assert diff <= bound, f"max|diff| {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name,fmt", RUNS, ids=[f"{n}-{f}" for n, f in RUNS])
def test_ops_and_versions(litert, name, fmt):
    result = litert[(name, fmt)][0]
    assert result["ok"], result["error"]
    counts = result["op_counts"]
    for op, count in CASES[name]["expect_ops"].items():
        assert counts.get(op, 0) == count, f"{op}: {counts.get(op, 0)} in the file, expected {count}: {counts}"
    if name not in ("nchw_input", "matmul"):
        assert "TRANSPOSE" not in counts
    for op in result["ops"]:
        assert op["version"] == EXPECTED_VERSIONS.get((name, op["op"]), 3 if op["op"] == "DEQUANTIZE" else 1), op
    weights = len(CASES[name]["constants"])
    if fmt == "float16":
        # One DEQUANTIZE per float weight, plus the zero biases the writer adds.
        assert counts.get("DEQUANTIZE", 0) >= weights
    else:
        assert "DEQUANTIZE" not in counts


def test_harness_int8_io_and_failures():
    rng = np.random.default_rng(5)
    x = (rng.uniform(-80, 80, size=(1, 8))).astype("<f4")  # beyond int8's range at scale 0.5
    q = rng.integers(-128, 128, size=(1, 8)).astype(np.int8)
    x_file, q_file = WORK / "harness.x.bin", WORK / "harness.q.bin"
    x.tofile(x_file)
    q.tofile(q_file)
    out = {k: str(WORK / f"harness.{k}.bin") for k in ("logits", "quantized", "int8_logits", "custom")}
    jobs = [
        {"id": "quantize", "model": str(WORK / HARNESS["harness_quantize"]["model"]),
         "inputs": [{"file": str(x_file), "dims": [1, 8], "dtype": "float32", "name": "image"}],
         "outputs": [out["logits"], out["quantized"]]},
        {"id": "int8_input", "model": str(WORK / HARNESS["harness_int8_input"]["model"]),
         "input": str(q_file), "dims": [1, 8], "dtype": "int8", "output": out["int8_logits"]},
        {"id": "custom_op", "model": str(WORK / HARNESS["harness_custom_op"]["model"]),
         "input": str(x_file), "dims": [1, 8], "dtype": "float32", "output": out["custom"]},
        {"id": "missing", "model": str(WORK / "no_such_model.tflite"),
         "input": str(x_file), "dims": [1, 8], "dtype": "float32"},
        {"id": "wrong_dtype", "model": str(WORK / HARNESS["harness_int8_input"]["model"]),
         "input": str(x_file), "dims": [1, 8], "dtype": "float32"},
    ]
    r = run_litert(jobs, "harness")

    assert r["quantize"]["ok"], r["quantize"]
    assert [(o["name"], o["dtype"], o["dims"]) for o in r["quantize"]["outputs"]] == [
        ("logits", "float32", [1, 8]), ("quantized", "int8", [1, 8])]
    want_q = np.clip(np.round(x.astype(np.float64) / 0.5) - 3, -128, 127)
    got_q = np.fromfile(out["quantized"], dtype=np.int8).reshape(1, 8)
    assert np.array_equal(got_q, want_q.astype(np.int8)), (got_q, want_q)
    assert np.array_equal(np.fromfile(out["logits"], dtype="<f4").reshape(1, 8), ((want_q + 3) * 0.5).astype("<f4"))
    assert r["quantize"]["ops"] == [{"op": "QUANTIZE", "version": 1}, {"op": "DEQUANTIZE", "version": 2}]

    assert r["int8_input"]["ok"], r["int8_input"]
    assert r["int8_input"]["inputs"] == [{"name": "image", "dtype": "int8", "dims": [1, 8], "signature_dims": [1, 8]}]
    got = np.fromfile(out["int8_logits"], dtype="<f4").reshape(1, 8)
    assert np.array_equal(got, ((q.astype(np.float64) - 5) * 0.25).astype("<f4"))

    # Failures are reported per job, with LiteRT's own words, and do not stop the others.
    assert not r["custom_op"]["ok"] and "ModexNoSuchOp" in r["custom_op"]["error"] + " ".join(r["custom_op"]["log"])
    assert not r["missing"]["ok"] and "no_such_model" in r["missing"]["error"]
    assert not r["wrong_dtype"]["ok"] and "int8" in r["wrong_dtype"]["error"]
