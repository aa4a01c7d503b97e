"""Shared helpers for the oracle tests: finding the modex binary, running it, running ONNX Runtime
through Node, and the logits comparison."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ORT_RUN = HERE / "ort_run.js"

# The acceptance bound of issue 2: max |diff| <= REL * max|logit| + ABS.
REL_TOL = 1e-4
ABS_TOL = 1e-5


def modex_bin():
    """The binary under test: $MODEX_BIN, else <repo>/build/modex. Missing is a failure, not a skip."""
    path = Path(os.environ.get("MODEX_BIN") or REPO / "build" / "modex")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise AssertionError(f"modex binary not found or not executable: {path} "
                             "(build it, or set MODEX_BIN)")
    return str(path)


def test_tool(env, name):
    """A test helper binary built with modex: $ENV, else <repo>/build/tests/NAME. Missing is a
    failure, not a skip."""
    path = Path(os.environ.get(env) or REPO / "build" / "tests" / name)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise AssertionError(f"{name} not found or not executable: {path} (build the {name} target, or set {env})")
    return str(path)


def tflite_testgen_manifest(work_dir):
    """Runs tflite_testgen (hand-built NHWC graphs written as .tflite files) into WORK_DIR and
    returns its manifest."""
    work_dir = Path(work_dir)
    proc = subprocess.run([test_tool("MODEX_TFLITE_TESTGEN", "tflite_testgen"), str(work_dir)], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"tflite_testgen failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads((work_dir / "manifest.json").read_text())


def node_bin():
    node = os.environ.get("MODEX_NODE") or shutil.which("node")
    if not node:
        raise AssertionError("node not found on PATH (needed to run ONNX Runtime); set MODEX_NODE")
    return node


def run_modex(args, timeout=300, cwd=None):
    """Runs modex; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run([modex_bin(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def run_ort(jobs, work_dir):
    """Runs every job in one Node process (see ort_run.js). Returns (results, stderr): results maps
    job id to ORT's answer; a job ORT could not run has {"ok": false, "error": ...}."""
    work_dir = Path(work_dir)
    jobs_path = work_dir / "ort_jobs.json"
    results_path = work_dir / "ort_results.json"
    jobs_path.write_text(json.dumps({"jobs": jobs}, indent=1))
    proc = subprocess.run([node_bin(), str(ORT_RUN), str(jobs_path), str(results_path)],
                          capture_output=True, text=True, timeout=3600)
    if not results_path.is_file():
        raise AssertionError(f"ort_run.js failed (exit {proc.returncode}) without results:\n"
                             f"{proc.stderr[-4000:]}")
    return json.loads(results_path.read_text())["results"], proc.stderr


LITERT_RUN = HERE / "litert_run.mjs"


def run_litert(jobs, work_dir, tag="litert", timeout=3600):
    """Runs every job in one litert_run.mjs process (LiteRT 2.5.3). Returns (results, stderr):
    results maps job id to LiteRT's answer ({"ok": false, "error": ...} when it could not run).
    The job and result files are WORK_DIR/TAG.jobs.json and TAG.results.json."""
    work_dir = Path(work_dir)
    jobs_path, results_path = work_dir / f"{tag}.jobs.json", work_dir / f"{tag}.results.json"
    jobs_path.write_text(json.dumps({"jobs": jobs}, indent=1))
    proc = subprocess.run([node_bin(), str(LITERT_RUN), str(jobs_path), str(results_path)],
                          capture_output=True, text=True, timeout=timeout)
    if not results_path.is_file():
        raise AssertionError(f"litert_run.mjs failed (exit {proc.returncode}) without results:\n"
                             f"{proc.stderr[-4000:]}")
    results = json.loads(results_path.read_text())
    assert results["litert_version"] == "2.5.3", results["litert_version"]
    failed = sorted(k for k, r in results["results"].items() if not r["ok"])
    assert (proc.returncode != 0) == bool(failed), (proc.returncode, failed, proc.stderr[-2000:])
    return results["results"], proc.stderr


def read_f32(path, dims):
    data = np.fromfile(path, dtype="<f4")
    count = int(np.prod(dims))
    if data.size != count:
        raise AssertionError(f"{path}: {data.size} floats, expected {count} for {dims}")
    return data.reshape(dims)


def compare_logits(got, want, what=""):
    """Asserts the tolerance of issue 2; the message says by how much it failed."""
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {list(got.shape)} != torch's {list(want.shape)}")
    if not np.isfinite(got).all():
        raise AssertionError(f"{what}: non-finite values in ONNX Runtime's output")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = float(np.abs(want).max())
    bound = REL_TOL * scale + ABS_TOL
    worst = float(diff.max())
    if worst > bound:
        idx = np.unravel_index(int(diff.argmax()), diff.shape)
        agree = float((got.argmax(-1) == want.argmax(-1)).mean())
        raise AssertionError(
            f"{what}: max|diff| {worst:.3g} > bound {bound:.3g} (= {REL_TOL:g}*{scale:.4g} + "
            f"{ABS_TOL:g}); worst at {list(map(int, idx))}: onnx {got[idx]:.6g} torch "
            f"{want[idx]:.6g}; argmax agreement {agree:.0%}")
    return worst, bound


class WorkDir:
    """A scratch folder removed at the end unless MODEX_KEEP_TMP is set (exports are big:
    several GB for the whole zoo, so pytest's kept tmp_path folders would fill the disk)."""

    def __init__(self, prefix):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def cleanup(self):
        if os.environ.get("MODEX_KEEP_TMP"):
            print(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def listing(path):
    """Every entry under path (files, hidden files, folders), relative, sorted."""
    path = Path(path)
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))
