"""`modex export --format tflite` against the real references (the issue's TFLite acceptance test).

Sources: every zoo architecture's checkpoint A (tests/oracle/zoo_fixtures.py: real torch.save
files, num_classes 10) and the ONNX files `torch.onnx.export` writes for it at opset 11 and 13
(tests/oracle/zoo_onnx_fixtures.py: dynamic batch, static 224x224). Each is exported with
`--format tflite --quantize none,float16` by the binary in $MODEX_BIN; every .tflite then runs in
LiteRT.js 2.5.3 (tests/oracle/litert_run.mjs, one Node process for the whole file) at batch 1
(zoo_fixtures' b1 input, NCHW -> NHWC; float16 files also on rows 1-3 of its b4 input) and must
match PyTorch's logits:
    float32  max|diff| <= 1e-4 * max|logit| + 1e-5
    float16  max|diff| <= 1e-2 * max|logit|, and the same top-1 class on every image.
The operator list LiteRT's side reads from the flatbuffer (litert_run.mjs, not modex) must hold no
TRANSPOSE; the float16 file must be at most 0.52x the float32 one. A minimal flatbuffer reader here
(independent of modex) checks the input/output tensors (shape [1,S,S,3], shape_signature
[-1,S,S,3]), the `serving_default` signature (image -> logits) and the `modex_metadata` entry.
Also: `--nchw-input` (one TRANSPOSE, input [1,3,S,S]), checkpoint variants (class names and
preprocessing from a training config reach the metadata), `--format both` (the ONNX still runs in
ONNX Runtime), the --json report and sidecar, and bad ONNX input (exit 1, `error:`, nothing left).

    MODEX_BIN=build/modex /usr/bin/python3 -m pytest -q tests/oracle/test_tflite_export.py
"""
import concurrent.futures
import functools
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402
import zoo_onnx_fixtures as zof  # noqa: E402

import onnx  # noqa: E402  (Debian's python3-onnx; missing is an error, never a skip)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SPECS = {s["name"]: s for s in zf.all_specs()}
ARCHS = zf.zoo_archs()
OPSETS = zof.OPSETS
# The bounds: float32 as for ONNX; float16 relative only, plus an identical top-1.
FP32_REL, FP32_ABS = ou.REL_TOL, ou.ABS_TOL
FP16_REL = 1e-2
FP16_SIZE_RATIO = 0.52
# Images per model: b1's image, then rows 1..3 of b4 (LiteRT runs batch 1 only). LiteRT.js is
# single-threaded (~7 GMAC/s): float32 runs b1 only, float16 (where top-1 must hold on every
# image) all four.
IMAGES = {"float32": 1, "float16": 4}
N_IMAGES = max(IMAGES.values())
NCHW = [("ckpt", "resnet18", None), ("ckpt", "mobilenet_v3_small", None),
        ("onnx", "mobilenet_v3_small", 13)]
VARIANTS = ["train_dict_config", "wrapper_effnet_features", "safetensors_f16"]
SUFFIX = {"float32": "", "float16": "_float16"}


def _export_plan():
    """Every export: id -> {source kind, arch, opset, fixture (references), args, precisions,
    formats, nchw, size, num_classes, stem, expect}."""
    plan = {}

    def add(eid, kind, fixture, arch, opset=None, args=(), precisions=("float32", "float16"),
            fmt="tflite", nchw=False, stem=None):
        spec = SPECS[fixture]
        if stem is None:
            stem = (Path(spec["checkpoint"]).stem if kind == "ckpt"
                    else Path(zof.onnx_name(arch, opset)).stem)
        quantize = ",".join("none" if p == "float32" else p for p in precisions)
        plan[eid] = dict(id=eid, kind=kind, fixture=fixture, arch=arch, opset=opset,
                         args=["--format", fmt, "--quantize", quantize, *map(str, args)]
                         + (["--nchw-input"] if nchw else []),
                         precisions=list(precisions), fmt=fmt, nchw=nchw,
                         size=spec["expect"].get("metadata_input_size", spec["input_size"]),
                         num_classes=spec["num_classes"], stem=stem, expect=spec["expect"])

    for arch in ARCHS:
        add(f"ckpt-{arch}", "ckpt", f"zoo-{arch}-a", arch, args=["--input-size", zf.SIZE_A])
        for opset in OPSETS:
            add(f"onnx{opset}-{arch}", "onnx", f"zoo-{arch}-a", arch, opset)
    for kind, arch, opset in NCHW:
        eid = f"nchw-{'ckpt' if kind == 'ckpt' else f'onnx{opset}'}-{arch}"
        add(eid, kind, f"zoo-{arch}-a", arch, opset, nchw=True)
    for v in VARIANTS:
        spec = SPECS[f"variant-{v}"]
        add(f"variant-{v}", "ckpt", f"variant-{v}", spec["arch"])
    add("both-ckpt-resnet18", "ckpt", "zoo-resnet18-a", "resnet18", fmt="both")
    add("both-onnx11-mobilenet_v2", "onnx", "zoo-mobilenet_v2-a", "mobilenet_v2", 11,
        precisions=("float32",), fmt="both")
    return plan


PLAN = _export_plan()
MODELS = [(eid, prec) for eid, p in PLAN.items() for prec in p["precisions"]]
MODEL_IDS = [f"{eid}-{prec}" for eid, prec in MODELS]
BOTH = [eid for eid, p in PLAN.items() if p["fmt"] == "both"]


# ---------------------------------------------------------------------------------------------
# A minimal TFLite flatbuffer reader (schema field ids in shared/FORMATS.md), independent of modex.

TENSOR_TYPES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 6: "BOOL",
                7: "INT16", 9: "INT8"}


class _Table:
    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, fid):
        slot = 4 + 2 * fid
        if slot >= self.vtable_len:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else 0

    def _deref(self, p):
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def scalar(self, fid, fmt, default=0):
        p = self._field(fid)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p else default

    def _vector(self, fid):
        p = self._field(fid)
        if not p:
            return None, 0
        v = self._deref(p)
        return v + 4, struct.unpack_from("<I", self.buf, v)[0]

    def ints(self, fid, fmt="i"):
        start, n = self._vector(fid)
        return None if start is None else list(struct.unpack_from(f"<{n}{fmt}", self.buf, start))

    def raw(self, fid):
        start, n = self._vector(fid)
        return None if start is None else bytes(self.buf[start:start + n])

    def string(self, fid):
        b = self.raw(fid)
        return None if b is None else b.decode("utf-8")

    def tables(self, fid):
        start, n = self._vector(fid)
        if start is None:
            return []
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(n)]


@functools.lru_cache(maxsize=None)
def read_tflite(path):
    """What the tests need from a .tflite: identifier, subgraph 0's inputs/outputs (name, type,
    shape, shape_signature), tensor type counts, signature defs, metadata entries."""
    buf = Path(path).read_bytes()
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    buffers = model.tables(4)

    def buffer_bytes(index):
        b = buffers[index]
        data = b.raw(0)
        if data is None and b.scalar(1, "Q"):
            off, size = b.scalar(1, "Q"), b.scalar(2, "Q")
            data = buf[off:off + size]
        return data or b""

    subgraphs = model.tables(2)
    sg = subgraphs[0]
    tensors = sg.tables(0)

    def tensor(i):
        t = tensors[i]
        return dict(index=i, name=t.string(3), type=TENSOR_TYPES.get(t.scalar(1, "b"), t.scalar(1, "b")),
                    shape=t.ints(0), shape_signature=t.ints(7))

    type_counts = {}
    for t in tensors:
        name = TENSOR_TYPES.get(t.scalar(1, "b"), t.scalar(1, "b"))
        type_counts[name] = type_counts.get(name, 0) + 1
    signatures = []
    for s in model.tables(7):
        signatures.append(dict(
            key=s.string(2), subgraph=s.scalar(4, "I"),
            inputs={m.string(0): m.scalar(1, "I") for m in s.tables(0)},
            outputs={m.string(0): m.scalar(1, "I") for m in s.tables(1)}))
    metadata = {m.string(0): buffer_bytes(m.scalar(1, "I")) for m in model.tables(6)}
    return dict(identifier=buf[4:8], version=model.scalar(0, "I"), subgraphs=len(subgraphs),
                inputs=[tensor(i) for i in sg.ints(1) or []],
                outputs=[tensor(i) for i in sg.ints(2) or []],
                type_counts=type_counts, signatures=signatures, metadata=metadata,
                description=model.string(3))


# ---------------------------------------------------------------------------------------------
# References: image k is b1's input for k = 0 (zoo_fixtures' b1 run, reused as is), row k of b4's
# input otherwise; the logits are the matching rows.

def _reference_images(fixture, root):
    meta = zf.load_meta(fixture, root)
    d = zf.case_dir(fixture, root)
    b1, b4 = meta["runs"]["b1"], meta["runs"]["b4"]
    x1, y1 = ou.read_f32(d / b1["input"], b1["dims"]), ou.read_f32(d / b1["logits"], b1["logits_dims"])
    x4, y4 = ou.read_f32(d / b4["input"], b4["dims"]), ou.read_f32(d / b4["logits"], b4["logits_dims"])
    xs = [x1] + [x4[k:k + 1] for k in range(1, N_IMAGES)]
    ys = [y1] + [y4[k:k + 1] for k in range(1, N_IMAGES)]
    return xs, ys


def _check_logits(got_list, want_list, precision, what):
    """The issue's bound for `precision` on every image; returns the worst diff/bound ratio and a
    list of failure lines naming the image and the numbers."""
    failures, worst_ratio = [], 0.0
    for k, (got, want) in enumerate(zip(got_list, want_list)):
        if got.shape != want.shape:
            failures.append(f"{what} image {k}: shape {list(got.shape)} != torch's {list(want.shape)}")
            continue
        if not np.isfinite(got).all():
            failures.append(f"{what} image {k}: non-finite values in LiteRT's output")
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        scale = float(np.abs(want).max())
        rel, abs_ = (FP32_REL, FP32_ABS) if precision == "float32" else (FP16_REL, 0.0)
        bound = rel * scale + abs_
        worst = float(diff.max())
        worst_ratio = max(worst_ratio, worst / bound)
        if worst > bound:
            idx = np.unravel_index(int(diff.argmax()), diff.shape)
            failures.append(
                f"{what} image {k}: max|diff| {worst:.3g} > bound {bound:.3g} (= {rel:g}*{scale:.4g}"
                f" + {abs_:g}), {worst / scale:.2e} relative; worst at {list(map(int, idx))}: "
                f"litert {got[idx]:.6g} torch {want[idx]:.6g}")
        if precision == "float16":
            g1, w1 = int(got.argmax()), int(want.argmax())
            if g1 != w1:
                top = np.sort(want.ravel())[::-1]
                failures.append(
                    f"{what} image {k}: top-1 {g1} != torch's {w1} (torch margin top1-top2 "
                    f"{top[0] - top[1]:.3g}; litert logits there {got.ravel()[g1]:.5g} vs "
                    f"{got.ravel()[w1]:.5g})")
    return worst_ratio, failures


# ---------------------------------------------------------------------------------------------

def run_litert(jobs, work):
    """Runs the jobs in one litert_run.mjs process; returns (results by job id, stderr)."""
    return ou.run_litert(jobs, work)


def _source(p, roots):
    root, onnx_root = roots
    if p["kind"] == "ckpt":
        return "--checkpoint", zf.case_dir(p["fixture"], root) / SPECS[p["fixture"]]["checkpoint"]
    return "--onnx", zof.onnx_path(p["arch"], p["opset"], onnx_root)


def _tflite_path(rec, prec):
    return rec["out_dir"] / f"{rec['stem']}{SUFFIX[prec]}.tflite"


@pytest.fixture(scope="module")
def exported():
    """Generates missing fixtures, runs every export (2 at a time), then every LiteRT job in one
    Node process and the ONNX Runtime jobs of --format both in another."""
    t0 = time.time()
    onnx_root, _ = zof.ensure()
    root = zf.ensure({p["fixture"] for p in PLAN.values()})
    t_fixtures = time.time() - t0
    ou.modex_bin()  # fail early and clearly when the binary is missing
    work = ou.WorkDir("modex-oracle-tflite-")
    roots = (root, onnx_root)

    def export(p):
        out_dir = work.path / "out" / p["id"]
        out_dir.mkdir(parents=True)
        flag, src = _source(p, roots)
        args = ["export", flag, src, "--output-dir", out_dir, "--json", *p["args"]]
        t = time.time()
        try:
            proc = ou.run_modex(args, timeout=900)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except Exception as e:  # timeout: recorded, reported by the tests
            rc, out, err = None, "", f"{type(e).__name__}: {e}"
        return p["id"], dict(rc=rc, stdout=out, stderr=err, seconds=time.time() - t, source=src,
                             out_dir=out_dir, stem=p["stem"], args=[str(a) for a in args])

    # Big models first so that the two workers finish together.
    big = {"efficientnet_b7": 9, "efficientnet_b6": 7, "resnet152": 7, "wide_resnet50_2": 6,
           "efficientnet_b5": 6, "resnet101": 5, "efficientnet_b4": 4, "resnext50_32x4d": 4,
           "resnet50": 3, "efficientnet_b3": 3}
    order = sorted(PLAN.values(), key=lambda p: -big.get(p["arch"], 1))
    t1 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        exports = dict(pool.map(export, order))
    t_export = time.time() - t1

    # LiteRT: every .tflite on every image.
    (work.path / "in").mkdir()
    (work.path / "litert").mkdir()
    refs, inputs = {}, {}
    jobs = []
    for eid, p in PLAN.items():
        if p["fixture"] not in refs:
            xs, ys = _reference_images(p["fixture"], root)
            refs[p["fixture"]] = ys
            for layout in ("nhwc", "nchw"):
                for k, x in enumerate(xs):
                    f = work.path / "in" / f"{p['fixture']}.{k}.{layout}.bin"
                    (x.transpose(0, 2, 3, 1) if layout == "nhwc" else x).astype("<f4").tofile(f)
                    inputs[(p["fixture"], k, layout)] = (f, list(x.shape) if layout == "nchw" else
                                                         [x.shape[0], x.shape[2], x.shape[3], x.shape[1]])
        rec = exports[eid]
        for prec in p["precisions"]:
            model = _tflite_path(rec, prec)
            if rec["rc"] != 0 or not model.is_file():
                continue
            for k in range(IMAGES[prec]):
                f, dims = inputs[(p["fixture"], k, "nchw" if p["nchw"] else "nhwc")]
                jobs.append(dict(id=f"{eid}/{prec}/{k}", model=str(model),
                                 inputs=[dict(file=str(f), dims=dims, dtype="float32", name="image")],
                                 outputs=[str(work.path / "litert" / f"{eid}.{prec}.{k}.bin")],
                                 signature="serving_default", threads=2))
    t2 = time.time()
    litert, litert_stderr = run_litert(jobs, work.path) if jobs else ({}, "")
    t_litert = time.time() - t2

    # ONNX Runtime on the .onnx files of --format both (batch 1 and, from a checkpoint, 4).
    ort_jobs = []
    for eid in BOTH:
        p, rec = PLAN[eid], exports[eid]
        model = rec["out_dir"] / f"{rec['stem']}.onnx"
        if rec["rc"] != 0 or not model.is_file():
            continue
        meta = zf.load_meta(p["fixture"], root)
        for tag in ("b1", "b4"):
            run = meta["runs"][tag]
            ort_jobs.append(dict(id=f"{eid}/{tag}", model=str(model),
                                 input=str(zf.case_dir(p["fixture"], root) / run["input"]),
                                 dims=run["dims"], output=str(work.path / f"{eid}.{tag}.ort.bin"),
                                 threads=2))
    t3 = time.time()
    ort, ort_stderr = ou.run_ort(ort_jobs, work.path) if ort_jobs else ({}, "")
    t_ort = time.time() - t3

    def ms(key):
        return sum(r.get(key, 0) for r in litert.values()) / 1e3

    summary = {}
    for eid, prec in MODELS:
        got = []
        for k in range(IMAGES[prec]):
            res = litert.get(f"{eid}/{prec}/{k}")
            if not res or not res.get("ok"):
                break
            got.append(np.fromfile(res["outputs"][0]["file"], dtype="<f4").reshape(1, -1))
        if len(got) == IMAGES[prec]:
            want = refs[PLAN[eid]["fixture"]][:IMAGES[prec]]
            if all(g.shape == w.shape for g, w in zip(got, want)):
                ratio, fails = _check_logits(got, want, prec, f"{eid} {prec}")
                summary[(eid, prec)] = (ratio, len(fails))
    print(f"\noracle timings: fixtures {t_fixtures:.1f} s, {len(exports)} exports {t_export:.1f} s "
          f"(sum of export wall times {sum(r['seconds'] for r in exports.values()):.1f} s), "
          f"{len(jobs)} LiteRT runs {t_litert:.1f} s (load {ms('load_ms'):.1f} s, run {ms('run_ms'):.1f} s), "
          f"{len(ort_jobs)} ORT runs {t_ort:.1f} s")
    if summary:
        print("max|diff| / bound per model (over the images), worst first:")
        for (eid, prec), (ratio, nfail) in sorted(summary.items(), key=lambda kv: -kv[1][0]):
            print(f"  {eid:40s} {prec:8s} {ratio:8.3f}{'  FAIL' if nfail else ''}")
    yield dict(root=root, onnx_root=onnx_root, work=work.path, exports=exports, litert=litert,
               litert_stderr=litert_stderr, refs=refs, ort=ort, ort_stderr=ort_stderr)
    work.cleanup()


def _export_ok(exported, eid, precisions=None):
    rec = exported["exports"][eid]
    if rec["rc"] != 0:
        pytest.fail(f"{eid}: modex {' '.join(rec['args'][:3])} ... exited {rec['rc']}:\n"
                    f"{rec['stderr'][-3000:]}")
    for prec in precisions or PLAN[eid]["precisions"]:
        if not _tflite_path(rec, prec).is_file():
            pytest.fail(f"{eid}: modex exited 0 but wrote no {_tflite_path(rec, prec).name}; "
                        f"dir has {ou.listing(rec['out_dir'])}")
    return rec


def _litert_results(exported, eid, prec):
    _export_ok(exported, eid, [prec])
    out = []
    for k in range(IMAGES[prec]):
        res = exported["litert"].get(f"{eid}/{prec}/{k}")
        assert res is not None, f"{eid} {prec}: no LiteRT result:\n{exported['litert_stderr'][-2000:]}"
        assert res["ok"], f"{eid} {prec} image {k}: LiteRT could not run the file: {res['error']}\n" + \
            "\n".join(res.get("log", [])[-20:])
        out.append(res)
    return out


def _what(eid, prec):
    p = PLAN[eid]
    src = "checkpoint" if p["kind"] == "ckpt" else f"ONNX opset {p['opset']}"
    return f"{eid} ({p['arch']}, from {src}, {prec}{', --nchw-input' if p['nchw'] else ''})"


def _input_dims(p, batch):
    s = p["size"]
    return [batch, 3, s, s] if p["nchw"] else [batch, s, s, 3]


@pytest.mark.parametrize("eid,prec", MODELS, ids=MODEL_IDS)
def test_logits_match_torch(exported, eid, prec):
    """LiteRT on modex's file reproduces PyTorch's logits on every image (float16: also top-1)."""
    p = PLAN[eid]
    results = _litert_results(exported, eid, prec)
    got = []
    for k, res in enumerate(results):
        assert res["signature"] == "serving_default", res["signature"]
        assert [(i["name"], i["dtype"], i["dims"]) for i in res["inputs"]] == \
            [("image", "float32", _input_dims(p, 1))], f"{_what(eid, prec)}: inputs {res['inputs']}"
        assert [(o["name"], o["dtype"], o["dims"]) for o in res["outputs"]] == \
            [("logits", "float32", [1, p["num_classes"]])], f"{_what(eid, prec)}: outputs {res['outputs']}"
        got.append(np.fromfile(res["outputs"][0]["file"], dtype="<f4").reshape(1, p["num_classes"]))
    _, failures = _check_logits(got, exported["refs"][p["fixture"]][:IMAGES[prec]], prec, _what(eid, prec))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("eid,prec", MODELS, ids=MODEL_IDS)
def test_transpose_count(exported, eid, prec):
    """No TRANSPOSE in an NHWC model; exactly one (the input's) with --nchw-input. The operator
    list is LiteRT's side's reading of the flatbuffer (litert_run.mjs)."""
    res = _litert_results(exported, eid, prec)[0]
    counts = res["op_counts"]
    want = 1 if PLAN[eid]["nchw"] else 0
    assert counts.get("TRANSPOSE", 0) == want, \
        f"{_what(eid, prec)}: {counts.get('TRANSPOSE', 0)} TRANSPOSE ops, expected {want}; ops {counts}"
    if prec == "float16":
        assert counts.get("DEQUANTIZE", 0) > 0, f"{_what(eid, prec)}: no DEQUANTIZE: {counts}"
    else:
        assert "DEQUANTIZE" not in counts, f"{_what(eid, prec)}: {counts}"


@pytest.mark.parametrize("eid", [e for e, p in PLAN.items() if "float16" in p["precisions"]])
def test_float16_size(exported, eid):
    rec = _export_ok(exported, eid)
    f32 = _tflite_path(rec, "float32").stat().st_size
    f16 = _tflite_path(rec, "float16").stat().st_size
    assert f16 <= FP16_SIZE_RATIO * f32, \
        f"{eid}: float16 file {f16} bytes is {f16 / f32:.4f}x the float32 file ({f32} bytes), " \
        f"limit {FP16_SIZE_RATIO}"


@pytest.mark.parametrize("eid,prec", MODELS, ids=MODEL_IDS)
def test_tflite_tensors_and_signature(exported, eid, prec):
    """Read independently of modex: TFL3, one subgraph; input shape [1,S,S,3] (or [1,3,S,S]) with
    shape_signature -1 in the batch only; output [1,C] / [-1,C]; float32 in and out; the
    serving_default signature maps image -> input and logits -> output; float16 weights."""
    p = PLAN[eid]
    rec = _export_ok(exported, eid, [prec])
    fb = read_tflite(_tflite_path(rec, prec))
    what = _what(eid, prec)
    assert fb["identifier"] == b"TFL3" and fb["version"] == 3, (fb["identifier"], fb["version"])
    assert fb["subgraphs"] == 1, f"{what}: {fb['subgraphs']} subgraphs"
    assert len(fb["inputs"]) == 1 and len(fb["outputs"]) == 1, (fb["inputs"], fb["outputs"])
    x, y = fb["inputs"][0], fb["outputs"][0]
    want_x = _input_dims(p, 1)
    assert x["type"] == "FLOAT32" and x["shape"] == want_x, f"{what}: input tensor {x}"
    assert x["shape_signature"] == [-1, *want_x[1:]], \
        f"{what}: input shape_signature {x['shape_signature']}, expected {[-1, *want_x[1:]]}"
    assert y["type"] == "FLOAT32" and y["shape"] == [1, p["num_classes"]], f"{what}: output tensor {y}"
    assert y["shape_signature"] == [-1, p["num_classes"]], \
        f"{what}: output shape_signature {y['shape_signature']}"
    sigs = {s["key"]: s for s in fb["signatures"]}
    assert "serving_default" in sigs, f"{what}: signatures {list(sigs)}"
    sig = sigs["serving_default"]
    assert sig["subgraph"] == 0 and sig["inputs"] == {"image": x["index"]} and \
        sig["outputs"] == {"logits": y["index"]}, f"{what}: serving_default {sig}"
    # LiteRT's side agrees: it shows the -1 of shape_signature in the signature's input type.
    res = _litert_results(exported, eid, prec)[0]
    assert res["inputs"][0]["signature_dims"] == [-1, *want_x[1:]], res["inputs"]
    if prec == "float16":
        assert fb["type_counts"].get("FLOAT16", 0) > 0, f"{what}: tensor types {fb['type_counts']}"
    else:
        assert "FLOAT16" not in fb["type_counts"], f"{what}: tensor types {fb['type_counts']}"


def _json_value(v):
    """A metadata value given either as JSON text (as in ONNX metadata_props) or as JSON itself."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


@pytest.mark.parametrize("eid,prec", MODELS, ids=MODEL_IDS)
def test_modex_metadata(exported, eid, prec):
    """The `modex_metadata` entry is a JSON object with the class names and preprocessing."""
    p = PLAN[eid]
    rec = _export_ok(exported, eid, [prec])
    fb = read_tflite(_tflite_path(rec, prec))
    what = _what(eid, prec)
    assert "modex_metadata" in fb["metadata"], f"{what}: metadata entries {list(fb['metadata'])}"
    meta = json.loads(fb["metadata"]["modex_metadata"].decode("utf-8"))
    assert isinstance(meta, dict), f"{what}: modex_metadata is {type(meta).__name__}"
    for key in ("class_names", "preprocessing"):
        assert key in meta, f"{what}: modex_metadata lacks {key!r}: {sorted(meta)}"
    names = _json_value(meta["class_names"])
    assert isinstance(names, list) and all(isinstance(n, str) for n in names), f"{what}: {names!r}"
    if "class_names" in p["expect"]:
        assert names == p["expect"]["class_names"], f"{what}: class_names {names}"
    else:
        assert len(names) in (0, p["num_classes"]), f"{what}: {len(names)} class names"
    pre = _json_value(meta["preprocessing"])
    assert isinstance(pre, dict), f"{what}: preprocessing {pre!r}"
    assert pre.get("input_size") == p["size"], f"{what}: preprocessing {pre}, input size {p['size']}"
    for key in ("mean", "std"):
        if p["kind"] == "onnx" and key not in pre:
            continue  # a bare ONNX file does not say how it was normalised
        assert len(pre[key]) == 3 and all(isinstance(v, (int, float)) for v in pre[key]), \
            f"{what}: preprocessing {pre}"
        if key in p["expect"]:
            assert np.allclose(pre[key], p["expect"][key]), f"{what}: {key} {pre[key]}, " \
                f"config has {p['expect'][key]}"
    if isinstance(pre.get("layout"), str):
        want = "NCHW" if p["nchw"] else "NHWC"
        assert want in pre["layout"].upper(), f"{what}: preprocessing layout {pre['layout']!r}, " \
            f"the .tflite input is {want}"
    if "num_classes" in meta:
        assert int(_json_value(meta["num_classes"])) == p["num_classes"], meta["num_classes"]
    if p["kind"] == "ckpt" and "architecture" in meta:
        assert meta["architecture"] == p["arch"], meta["architecture"]


@pytest.mark.parametrize("eid", list(PLAN))
def test_json_report_and_sidecar(exported, eid):
    """--json lists exactly the files written (format, precision, path, bytes); DIR holds them and
    the STEM.json sidecar, nothing else."""
    p = PLAN[eid]
    rec = _export_ok(exported, eid)
    report = json.loads(rec["stdout"])
    want = {("tflite", prec): _tflite_path(rec, prec) for prec in p["precisions"]}
    if p["fmt"] == "both":
        want[("onnx", "float32")] = rec["out_dir"] / f"{rec['stem']}.onnx"
    got = {}
    for o in report["outputs"]:
        key = (o["format"], o["precision"])
        assert key not in got, f"{eid}: {key} listed twice: {report['outputs']}"
        got[key] = o
    assert set(got) == set(want), f"{eid}: --json outputs {sorted(got)}, expected {sorted(want)}"
    for key, path in want.items():
        assert Path(got[key]["path"]).resolve() == path.resolve(), (key, got[key], path)
        assert got[key]["bytes"] == path.stat().st_size, (key, got[key], path.stat().st_size)
    sidecar = rec["out_dir"] / f"{rec['stem']}.json"
    assert sidecar.is_file(), f"{eid}: no sidecar {sidecar.name}; dir has {ou.listing(rec['out_dir'])}"
    assert isinstance(json.loads(sidecar.read_text()), dict)
    left = set(ou.listing(rec["out_dir"]))
    assert left == {path.name for path in want.values()} | {sidecar.name}, \
        f"{eid}: files in DIR: {sorted(left)}"


@pytest.mark.parametrize("eid", BOTH)
def test_both_onnx_matches_torch(exported, eid):
    """--format both: the .onnx written alongside still runs in ONNX Runtime, batch 1 and 4."""
    p = PLAN[eid]
    rec = _export_ok(exported, eid)
    onnx_file = rec["out_dir"] / f"{rec['stem']}.onnx"
    assert onnx_file.is_file(), f"{eid}: no {onnx_file.name}; dir has {ou.listing(rec['out_dir'])}"
    onnx.checker.check_model(onnx.load(str(onnx_file)))
    meta = zf.load_meta(p["fixture"], exported["root"])
    for tag in ("b1", "b4"):
        res = exported["ort"].get(f"{eid}/{tag}")
        assert res is not None, f"no ORT result for {eid}/{tag}:\n{exported['ort_stderr'][-2000:]}"
        assert res["ok"], f"ONNX Runtime could not run {eid}/{tag}: {res['error']}"
        run = meta["runs"][tag]
        want = ou.read_f32(zf.case_dir(p["fixture"], exported["root"]) / run["logits"], run["logits_dims"])
        got = ou.read_f32(res["output"], run["logits_dims"])
        ou.compare_logits(got, want, f"{eid} .onnx {tag} {run['dims']}")


def test_every_zoo_architecture_is_covered():
    required = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + \
        [f"efficientnet_b{i}" for i in range(8)] + \
        ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]
    for arch in required:
        assert f"ckpt-{arch}" in PLAN, arch
        for opset in (11, 13):
            assert f"onnx{opset}-{arch}" in PLAN, (arch, opset)
            assert PLAN[f"onnx{opset}-{arch}"]["precisions"] == ["float32", "float16"]


# ---------------------------------------------------------------------------------------------
# Bad ONNX input: exit 1, an `error:` line naming the file / node / op, nothing written.

def _small_model(opset=13):
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm on [N, 3, 16, 16]: valid as built."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "conv_b"),
             numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], "conv_node", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu_node"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], "pool_node"),
             helper.make_node("Flatten", ["p"], ["f"], "flatten_node", axis=1),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], "fc_node", transB=1)]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 5])
    graph = helper.make_graph(nodes, "small", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _truncated(data):
    """The longest prefix, at most 2/3 of the bytes, that protobuf cannot parse."""
    for cut in range(len(data) * 2 // 3, 0, -1):
        try:
            onnx.load_model_from_string(data[:cut])
        except Exception:
            return data[:cut]
    raise AssertionError("no unparsable prefix")


def _bad_file(kind, tmp):
    """(path, words the error must name (any one of them))."""
    if kind == "truncated-small":
        path = tmp / "small_truncated.onnx"
        path.write_bytes(_truncated(_small_model().SerializeToString()))
        return path, [path.name]
    if kind == "truncated-zoo":
        path = tmp / "resnet18_cut.onnx"
        data = zof.onnx_path("resnet18", 11).read_bytes()
        path.write_bytes(data[:len(data) // 2])
        with pytest.raises(Exception):
            onnx.load_model_from_string(path.read_bytes())
        return path, [path.name]
    if kind == "empty":
        path = tmp / "empty.onnx"
        path.write_bytes(b"")
        return path, [path.name]
    model = _small_model()
    if kind == "dangling":
        model.graph.node[1].input[0] = "ghost_tensor"  # relu_node reads a value nobody makes
        words = ["relu_node", "ghost_tensor"]
    elif kind == "unknown-op":
        model.graph.node[1].op_type = "ModexFrobnicate"
        words = ["ModexFrobnicate"]
    else:
        raise ValueError(kind)
    path = tmp / f"small_{kind}.onnx"
    path.write_bytes(model.SerializeToString())
    return path, words


BAD_KINDS = ["truncated-small", "truncated-zoo", "empty", "dangling", "unknown-op"]


def test_small_model_control(tmp_path):
    """The unbroken small model exports: the bad ones below fail for their defect alone."""
    src = tmp_path / "small.onnx"
    onnx.save(_small_model(), str(src))
    out = tmp_path / "out"
    out.mkdir()
    proc = ou.run_modex(["export", "--onnx", src, "--format", "both", "--quantize", "none,float16",
                         "--output-dir", out])
    assert proc.returncode == 0, proc.stderr
    assert set(ou.listing(out)) == {"small.onnx", "small.tflite", "small_float16.tflite", "small.json"}, \
        ou.listing(out)


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_onnx_fails_clearly(tmp_path, kind):
    if kind == "truncated-zoo":
        zof.ensure(["resnet18"])
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src, words = _bad_file(kind, src_dir)
    before = ou.listing(src_dir)
    out = tmp_path / "out"
    out.mkdir()
    proc = ou.run_modex(["export", "--onnx", src, "--format", "both", "--quantize", "none,float16",
                         "--output-dir", out, "--json"])
    assert proc.returncode == 1, f"{kind}: exit {proc.returncode}, expected 1; stderr:\n{proc.stderr[-2000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines, f"{kind}: no line starting with 'error:' on stderr:\n{proc.stderr[-2000:]}"
    assert any(w in proc.stderr for w in words), \
        f"{kind}: the error does not name any of {words}:\n{proc.stderr[-2000:]}"
    assert ou.listing(out) == [], f"{kind}: files left in the output dir: {ou.listing(out)}"
    assert ou.listing(src_dir) == before, f"{kind}: files written next to the source: {ou.listing(src_dir)}"
