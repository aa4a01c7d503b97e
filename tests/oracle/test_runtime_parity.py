"""The engine against the runtimes users compare it with (issue 4, "Zoo models: modex's output equals
ONNX Runtime's (float32, 1e-4 relative) and LiteRT's").

For every zoo architecture, the ONNX file torch.onnx.export wrote (opset 13, dynamic batch;
zoo_onnx_fixtures.py) runs in ONNX Runtime and in modex's engine (tests/runtime/run_model_main.cc,
fast kernels) on the same inputs at batch 1 and 4; the .tflite modex exports from it runs in
LiteRT and in modex's engine at batch 1 (NHWC input). Required for each:
    max|modex - runtime| <= 1e-4 * max|runtime| + 1e-5
Two small models also run on the reference kernels, which must agree with the fast ones to the
same bound.

    MODEX_BIN=build/modex MODEX_RUN_MODEL=build/tests/run_model /usr/bin/python3 -m pytest -q tests/oracle/test_runtime_parity.py
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402
import zoo_onnx_fixtures as zof  # noqa: E402

ARCHS = zf.zoo_archs()
OPSET = 13
REFERENCE_ARCHS = ["resnet18", "mobilenet_v3_small"]


def run_model_bin():
    return ou.test_tool("MODEX_RUN_MODEL", "run_model")


def run_modex_engine(model, jobs, work, *flags):
    """jobs: [(input.bin, dims, output.bin)]; one process per model."""
    jobs_file = work / (Path(model).name + "".join(flags) + ".jobs")
    jobs_file.write_text("".join(f"{i} {','.join(map(str, d))} {o}\n" for i, d, o in jobs))
    proc = subprocess.run([run_model_bin(), str(model), str(jobs_file), *flags], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"run_model {model}: {proc.stderr[-2000:]}"


def bound_ok(got, want):
    diff = float(np.abs(got.astype(np.float64) - want).max())
    bound = 1e-4 * float(np.abs(want).max()) + 1e-5
    return diff, bound


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    oroot, zroot = zof.ensure(ARCHS)
    work = tmp_path_factory.mktemp("parity")
    ort_jobs, litert_jobs, expected = [], [], {}
    for arch in ARCHS:
        onnx = zof.onnx_path(arch, OPSET, oroot)
        zdir = zf.case_dir(zof.zoo_case(arch), zroot)
        meta = zf.load_meta(zof.zoo_case(arch), zroot)
        engine_jobs = []
        for run in ("b1", "b4"):
            dims = meta["runs"][run]["dims"] if "dims" in meta["runs"][run] else meta["runs"][run]
            x = zdir / f"{run}.input.bin"
            engine_jobs.append((x, dims, work / f"{arch}-{run}.modex.bin"))
            ort_jobs.append({"id": f"{arch}-{run}", "model": str(onnx), "input": str(x), "dims": dims,
                             "output": str(work / f"{arch}-{run}.ort.bin"), "threads": 2})
            expected[f"{arch}-{run}"] = (work / f"{arch}-{run}.modex.bin", work / f"{arch}-{run}.ort.bin", "onnx")
        run_modex_engine(onnx, engine_jobs, work)
        if arch in REFERENCE_ARCHS:
            ref_jobs = [(x, d, Path(str(o).replace(".modex.", ".modexref."))) for x, d, o in engine_jobs[:1]]
            run_modex_engine(onnx, ref_jobs, work, "--reference")
            expected[f"{arch}-b1-reference"] = (ref_jobs[0][2], engine_jobs[0][2], "reference")
        # TFLite: exported by modex from the same ONNX; NHWC input.
        proc = ou.run_modex(["export", "--onnx", onnx, "--format", "tflite", "--output-dir", work, "--name", arch])
        assert proc.returncode == 0, proc.stderr
        tfl = work / f"{arch}.tflite"
        dims = meta["runs"]["b1"]["dims"] if "dims" in meta["runs"]["b1"] else meta["runs"]["b1"]
        x = np.fromfile(zdir / "b1.input.bin", dtype="<f4").reshape(dims).transpose(0, 2, 3, 1)
        xh = work / f"{arch}-nhwc.bin"
        np.ascontiguousarray(x).tofile(xh)
        nhwc = [dims[0], dims[2], dims[3], dims[1]]
        run_modex_engine(tfl, [(xh, nhwc, work / f"{arch}-tfl.modex.bin")], work)
        litert_jobs.append({"id": f"{arch}-tfl", "model": str(tfl), "input": str(xh), "dims": nhwc,
                            "output": str(work / f"{arch}-tfl.litert.bin")})
        expected[f"{arch}-tflite"] = (work / f"{arch}-tfl.modex.bin", work / f"{arch}-tfl.litert.bin", "tflite")
    ort, err = ou.run_ort(ort_jobs, work)
    bad = {k: v for k, v in ort.items() if not v.get("ok")}
    assert not bad, f"ORT failed: {bad} {err[-2000:]}"
    jobs_path, res_path = work / "litert_jobs.json", work / "litert_results.json"
    jobs_path.write_text(json.dumps({"jobs": litert_jobs}))
    proc = subprocess.run([ou.node_bin(), str(ou.HERE / "litert_run.mjs"), str(jobs_path), str(res_path)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"litert_run failed: {proc.stderr[-3000:]}"
    table = {}
    for key, (mine, theirs, kind) in expected.items():
        got = np.fromfile(mine, dtype="<f4")
        want = np.fromfile(theirs, dtype="<f4").astype(np.float64)
        assert got.shape == want.shape, (key, got.shape, want.shape)
        table[key] = (kind,) + bound_ok(got, want)
    print("\n".join(f"{k:40s} {kind:9s} diff {d:.2e} bound {b:.2e} ({d / b:.3f})" for k, (kind, d, b) in table.items()))
    return table


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_onnx_runtime(results, arch):
    for run in ("b1", "b4"):
        kind, diff, bound = results[f"{arch}-{run}"]
        assert diff <= bound, f"{arch} {run}: modex engine vs ONNX Runtime max|diff| {diff:.3e} > {bound:.3e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_litert(results, arch):
    kind, diff, bound = results[f"{arch}-tflite"]
    assert diff <= bound, f"{arch}: modex engine vs LiteRT on modex's .tflite max|diff| {diff:.3e} > {bound:.3e}"


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
def test_fast_kernels_equal_reference_kernels(results, arch):
    kind, diff, bound = results[f"{arch}-b1-reference"]
    assert diff <= bound, f"{arch}: fast vs reference kernels max|diff| {diff:.3e} > {bound:.3e}"
