"""Int8 inference parity: modex's engine against LiteRT on int8 .tflite files.

tflite_testgen writes the hand-built int8 IR graphs of tests/runtime/int8_test_graphs.h (per-channel
and per-tensor convolutions, depthwise, fully connected, add, mul, pools, mean, hard-swish,
logistic, softmax, pad/concat/reshape, a small classifier, float32 and uint8 model I/O) as .tflite
files with modex's writer. Each runs on the same random integer inputs in LiteRT.js 2.5.3 (TFLite's
interpreter with XNNPACK) and in modex (tests/runtime/run_model_main.cc with --raw, both backends).
modex's default (auto) backend must give LiteRT's integers: at most one quantization step apart,
on at most 1% of values. The reference backend implements TFLite's reference kernels (Q31
fixed-point requantization, rounded twice in MEAN), which LiteRT's XNNPACK replaces by fp32
requantization: single-op models must meet the same bound; in chains a one-step difference is
amplified by the next layer's scale ratio, so there they may be two steps apart on at most 15% of
values (the rates are printed). Requantization is a chain in that sense: XNNPACK's 8-bit ratio
(LiteRT, and modex's auto backend) against TFLite's Q31 multiplier.

    MODEX_TFLITE_TESTGEN=build/tests/tflite_testgen MODEX_RUN_MODEL=build/tests/run_model \\
        /usr/bin/python3 -m pytest -q tests/oracle/test_runtime_int8.py
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402

_WORK_DIR = ou.WorkDir("modex_int8_")
WORK = _WORK_DIR.path
BATCHES = 16  # random inputs per model


MANIFEST = ou.tflite_testgen_manifest(WORK)
CASES = {c["name"]: c for c in MANIFEST["int8"]}
NP_DTYPE = {"int8": np.int8, "uint8": np.uint8, "float32": "<f4"}


@pytest.fixture(scope="module", autouse=True)
def _remove_work_dir():
    yield
    _WORK_DIR.cleanup()


def _input(spec, rng):
    dims = spec["dims"]
    if spec["dtype"] == "float32":
        return (rng.standard_normal(dims) * 1.5).astype("<f4")
    info = np.iinfo(NP_DTYPE[spec["dtype"]])
    return rng.integers(info.min, info.max + 1, size=dims).astype(NP_DTYPE[spec["dtype"]])


@pytest.fixture(scope="module")
def runs():
    """Every case and input in LiteRT (one process) and modex (reference and auto backends)."""
    rng = np.random.default_rng(11)
    jobs, inputs = [], {}
    for name, case in CASES.items():
        for b in range(BATCHES):
            x = _input(case["input"], rng)
            f = WORK / f"{name}.{b}.in.bin"
            x.tofile(f)
            inputs[(name, b)] = (x, f)
            jobs.append({"id": f"{name}/{b}", "model": str(WORK / case["model"]),
                         "inputs": [{"file": str(f), "dims": case["input"]["dims"], "dtype": case["input"]["dtype"]}],
                         "outputs": [str(WORK / f"{name}.{b}.litert.bin")], "signature": "serving_default"})
    litert = ou.run_litert(jobs, WORK, tag="int8", timeout=900)[0]
    modex = {}
    for backend in ("auto", "reference"):
        for name, case in CASES.items():
            lines = [f"{inputs[(name, b)][1]} {','.join(map(str, case['input']['dims']))} "
                     f"{WORK / f'{name}.{b}.{backend}.bin'} {case['input']['dtype']}" for b in range(BATCHES)]
            jobs_file = WORK / f"{name}.{backend}.jobs.txt"
            jobs_file.write_text("\n".join(lines) + "\n")
            flags = ["--raw", "--threads", "2"] + (["--reference"] if backend == "reference" else [])
            proc = subprocess.run([ou.test_tool("MODEX_RUN_MODEL", "run_model"), str(WORK / case["model"]), str(jobs_file), *flags],
                                  capture_output=True, text=True, timeout=300)
            modex[(name, backend)] = proc
    return litert, modex


def _read(path, spec):
    return np.fromfile(path, dtype=NP_DTYPE[spec["dtype"]]).reshape(spec["dims"])


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_outputs_match_litert(runs, name, backend):
    litert, modex = runs
    case = CASES[name]
    proc = modex[(name, backend)]
    assert proc.returncode == 0, f"run_model failed: {proc.stderr[-2000:]}"
    total, off, max_diff, seen = 0, 0, 0, []
    for b in range(BATCHES):
        r = litert[f"{name}/{b}"]
        assert r["ok"], f"LiteRT failed: {r.get('error')}\n" + "\n".join(r["log"])
        assert r["outputs"][0]["dtype"] == case["output"]["dtype"], r["outputs"]
        want = _read(WORK / f"{name}.{b}.litert.bin", case["output"])
        got = _read(WORK / f"{name}.{b}.{backend}.bin", case["output"])
        if case["output"]["dtype"] == "float32":
            # A Dequantize output: multiples of the int8 step before it (the smallest gap between
            # LiteRT's distinct values), at most one step apart.
            step = float(np.diff(np.unique(want)).min())
            diff = np.rint(np.abs(got.astype(np.float64) - want) / step)
            assert np.allclose(np.abs(got.astype(np.float64) - want), diff * step, atol=1e-5)
        else:
            diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        max_diff = max(max_diff, int(diff.max()))
        total += diff.size
        off += int((diff != 0).sum())
        seen.append(want.ravel())
    # The outputs are not degenerate (saturated or constant everywhere).
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) > min(8, seen.size // 4), f"degenerate outputs: {np.unique(seen)}"
    print(f"{name}/{backend}: {off} of {total} integers off ({100 * off / total:.2f}%), max {max_diff}")
    strict = backend == "auto" or (case["nodes"] == 1 and name != "requantize")
    steps, rate = (1, 0.01) if strict else (2, 0.15)
    assert max_diff <= steps, f"max integer difference {max_diff} > {steps}"
    assert off <= rate * total, f"{off} of {total} values off (> {100 * rate:.0f}%)"


# Whole networks exported by modex: the fast int8 kernels' families (dense, Winograd and
# depthwise convolutions, hard-swish and SE blocks, the fused SiLU table) all on real graphs.
EXPORT_ARCHS = ["mobilenet_v3_small", "resnet18", "mobilenet_v2", "efficientnet_b0"]


@pytest.fixture(scope="module")
def exported():
    """torchvision classifiers (seeded random weights, BatchNorm statistics off the identity)
    exported by torch.onnx.export, then by `modex export --quantize int8` calibrated on 16
    synthetic images: {arch: path of the int8 .tflite}."""
    import torch
    import torchvision
    from PIL import Image
    torch.manual_seed(0)
    out = WORK / "exported"
    calib = WORK / "calib"
    calib.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    for i in range(16):
        img = np.stack([np.sin(xx * rng.uniform(1, 6) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(1, 6))
                        for _ in range(3)], -1)
        img = ((img * 0.5 + 0.5) * 255 + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(calib / f"img{i:02d}.png")
    models = {}
    for arch in EXPORT_ARCHS:
        m = getattr(torchvision.models, arch)(num_classes=10).eval()
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
        onnx_path = WORK / f"{arch}.onnx"
        torch.onnx.export(m, torch.randn(1, 3, 96, 96), str(onnx_path), opset_version=13,
                          input_names=["image"], output_names=["logits"])
        proc = ou.run_modex(["export", "--onnx", onnx_path, "--format", "tflite", "--quantize", "int8",
                             "--calibration-dir", calib, "--num-calib-samples", "16", "--output-dir", out,
                             "--no-progress"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        models[arch] = out / f"{arch}_int8.tflite"
        assert models[arch].is_file(), ou.listing(out)
    return models


@pytest.mark.parametrize("arch", EXPORT_ARCHS)
def test_exported_int8_models_match_litert(exported, arch):
    """Whole int8 networks written by `modex export --quantize int8`: the auto backend gives
    LiteRT's logits (at most one step apart on at most 1% of values); the reference backend
    (TFLite's fixed-point kernels) is reported, within a few steps."""
    model = exported[arch]
    rng = np.random.default_rng(2)
    jobs, lines = [], {"auto": [], "reference": []}
    for b in range(BATCHES):
        x = rng.integers(-128, 128, size=(1, 96, 96, 3)).astype(np.int8)
        f = WORK / f"{arch}.{b}.in.bin"
        x.tofile(f)
        jobs.append({"id": f"{arch}/{b}", "model": str(model), "outputs": [str(WORK / f"{arch}.{b}.litert.bin")],
                     "inputs": [{"file": str(f), "dims": [1, 96, 96, 3], "dtype": "int8"}]})
        for k in lines:
            lines[k].append(f"{f} 1,96,96,3 {WORK / f'{arch}.{b}.{k}.bin'} int8")
    litert = ou.run_litert(jobs, WORK, tag=arch, timeout=900)[0]
    for backend, job_lines in lines.items():
        jobs_file = WORK / f"{arch}.{backend}.jobs.txt"
        jobs_file.write_text("\n".join(job_lines) + "\n")
        proc = subprocess.run([ou.test_tool("MODEX_RUN_MODEL", "run_model"), str(model), str(jobs_file), "--raw", "--threads", "2",
                               *(["--reference"] if backend == "reference" else [])],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        diffs = []
        for b in range(BATCHES):
            r = litert[f"{arch}/{b}"]
            assert r["ok"], r.get("error")
            want = np.fromfile(WORK / f"{arch}.{b}.litert.bin", np.int8).astype(np.int32)
            got = np.fromfile(WORK / f"{arch}.{b}.{backend}.bin", np.int8).astype(np.int32)
            assert want.size == got.size == 10
            diffs.append(np.abs(want - got))
        d = np.concatenate(diffs)
        print(f"{arch}/{backend}: {(d != 0).sum()} of {d.size} logits differ, max {d.max()} steps")
        if backend == "auto":
            assert d.max() <= 1 and (d != 0).sum() <= 0.01 * d.size
        else:
            assert d.max() <= 8


def test_int8_model_benchmark():
    """modex bench on the int8 classifier: runs, and reports latency (numbers printed)."""
    model = WORK / CASES["small_cnn"]["model"]
    proc = ou.run_modex(["bench", model, "--json"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout[-2000:])
