#!/usr/bin/python3
"""Third-party ONNX files of the zoo for the TFLite export test: what `torch.onnx.export` writes.

For every zoo architecture (zoo_fixtures.ZOO + OPTIONAL_ZOO), checkpoint A of zoo_fixtures
(`zoo-<arch>-a`: num_classes 10, trained-looking random weights) is loaded into the torchvision
model and exported with the TorchScript exporter (eval mode, constant folding, input "input",
output "output", dynamic batch axis only, so height and width stay 224) at opset 11 and 13.
The reference logits are NOT recomputed: they are zoo-<arch>-a's runs ("b1": 1x3x224x224, "b4"),
read from zoo_fixtures' cache. At generation both are checked once: PyTorch on the reloaded
checkpoint reproduces the stored b1 logits (1e-5 relative), and ONNX Runtime (tests/oracle/
ort_run.js) on each exported file reproduces b1 and b4 within the oracle tolerance; the figures go
into meta.json.

Cached under $MODEX_CACHE_DIR (default ~/.cache/modex)/zoo-onnx-fixtures/<key>/, where <key> hashes
this file's code (syntax tree without doc strings/comments), zoo_fixtures' own key (the checkpoints
it exports) and the torch/torchvision/onnx versions; stale keys are deleted. One folder per
architecture, written under a temporary name and renamed when complete:
    zoo-<arch>-a/meta.json, zoo-<arch>-a/<arch>_a_op11.onnx, zoo-<arch>-a/<arch>_a_op13.onnx
meta.json: {"arch", "num_classes", "input_size", "zoo_case", "onnx": {"11": file, "13": file},
"torch_check", "ort_check": {"11": {run: max|diff| / max|logit|}, ...}, "bytes", "seconds"}.

    /usr/bin/python3 tests/oracle/zoo_onnx_fixtures.py [--jobs 2] [--only ARCH ...] [--list]

Must run under Debian's interpreter (/usr/bin/python3): it needs torch, torchvision and onnx.
"""
import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import oracle_util as ou  # noqa: E402
import zoo_fixtures as zf  # noqa: E402

OPSETS = (11, 13)
INPUT_NAME = "input"
OUTPUT_NAME = "output"
TORCH_CHECK_TOL = 1e-5  # relative to max|logit|: reloading the checkpoint changes nothing


def archs():
    return zf.zoo_archs()


def zoo_case(arch):
    return f"zoo-{arch}-a"


def onnx_name(arch, opset):
    return f"{arch}_a_op{opset}.onnx"


# ---------------------------------------------------------------------------------------------
# Cache location and key.

def fixture_key():
    h = hashlib.sha256()
    h.update(zf._code_fingerprint(Path(__file__).read_text()).encode())
    h.update(f"zoo={zf.fixture_key()};onnx={zf._dist_version('onnx')}".encode())
    h.update(f"torch={zf._dist_version('torch')};"
             f"torchvision={zf._dist_version('torchvision')}".encode())
    return h.hexdigest()[:16]


def fixture_root():
    return zf.cache_base() / "zoo-onnx-fixtures" / fixture_key()


def case_dir(arch, root=None):
    return (root or fixture_root()) / zoo_case(arch)


def load_meta(arch, root=None):
    path = case_dir(arch, root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"zoo ONNX fixture {arch} missing: {path} "
                                "(run tests/oracle/zoo_onnx_fixtures.py)")
    return json.loads(path.read_text())


def onnx_path(arch, opset, root=None):
    return case_dir(arch, root) / onnx_name(arch, opset)


# ---------------------------------------------------------------------------------------------
# Generation.

def _relative_diff(got, want):
    import numpy as np
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max() /
                 np.abs(want).max())


def generate_case(arch, root, zoo_root):
    """Exports one architecture at every opset (atomically). Returns (arch, seconds)."""
    import onnx
    import torch
    import torchvision
    torch.set_num_threads(1)
    t0 = time.time()
    final = case_dir(arch, root)
    if final.is_dir():
        return arch, 0.0
    zmeta = zf.load_meta(zoo_case(arch), zoo_root)
    zdir = zf.case_dir(zoo_case(arch), zoo_root)
    tmp = root / f".{zoo_case(arch)}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    model = getattr(torchvision.models, arch)(num_classes=zmeta["num_classes"])
    state = torch.load(zdir / zmeta["checkpoint"], map_location="cpu")
    model.load_state_dict(state)
    model.eval()

    b1 = zmeta["runs"]["b1"]
    x = torch.from_numpy(ou.read_f32(zdir / b1["input"], b1["dims"]).copy())
    want = ou.read_f32(zdir / b1["logits"], b1["logits_dims"])
    with torch.no_grad():
        got = model(x).numpy()
    torch_check = _relative_diff(got, want)
    if torch_check > TORCH_CHECK_TOL:
        raise RuntimeError(f"{arch}: the reloaded checkpoint's logits differ from the cached b1 "
                           f"logits by {torch_check:.2e} relative (> {TORCH_CHECK_TOL:g})")

    files = {}
    for opset in OPSETS:
        path = tmp / onnx_name(arch, opset)
        with torch.no_grad():
            torch.onnx.export(model, torch.zeros(b1["dims"]), str(path), opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        if dims != ["batch", 3, zf.SIZE_A, zf.SIZE_A]:
            raise RuntimeError(f"{arch} opset {opset}: exported input dims {dims}")
        files[str(opset)] = path.name

    # ONNX Runtime on the exported files must reproduce the cached logits (b1 and b4).
    ort_check = {}
    with tempfile.TemporaryDirectory(prefix="zoo-onnx-ort-") as work:
        jobs = []
        for opset in OPSETS:
            for tag in ("b1", "b4"):
                run = zmeta["runs"][tag]
                jobs.append(dict(id=f"{opset}/{tag}", model=str(tmp / files[str(opset)]),
                                 input=str(zdir / run["input"]), dims=run["dims"],
                                 output=str(Path(work) / f"{opset}.{tag}.bin"), threads=1))
        results, stderr = ou.run_ort(jobs, work)
        for job in jobs:
            res = results.get(job["id"])
            if not res or not res.get("ok"):
                raise RuntimeError(f"{arch}: ONNX Runtime failed on {job['id']}: "
                                   f"{res and res.get('error')}\n{stderr[-2000:]}")
            opset, tag = job["id"].split("/")
            run = zmeta["runs"][tag]
            ref = ou.read_f32(zdir / run["logits"], run["logits_dims"])
            out = ou.read_f32(job["output"], run["logits_dims"])
            ou.compare_logits(out, ref, f"{arch} opset {opset} {tag} (torch.onnx.export in ORT)")
            ort_check.setdefault(opset, {})[tag] = _relative_diff(out, ref)

    meta = dict(arch=arch, num_classes=zmeta["num_classes"], input_size=zf.SIZE_A,
                zoo_case=zoo_case(arch), zoo_checkpoint=zmeta["checkpoint"], onnx=files,
                input_name=INPUT_NAME, output_name=OUTPUT_NAME, torch_check=torch_check,
                ort_check=ort_check, bytes={k: (tmp / f).stat().st_size for k, f in files.items()},
                torch_version=torch.__version__, onnx_version=onnx.__version__,
                seconds=round(time.time() - t0, 2))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    os.replace(tmp, final)
    return arch, time.time() - t0


def ensure(arch_list=None, jobs=2, log=None):
    """Generates whichever requested architectures are missing (and the zoo_fixtures cases they
    export); returns (root, zoo_root)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    wanted = list(arch_list) if arch_list is not None else archs()
    unknown = set(wanted) - set(archs())
    if unknown:
        raise ValueError(f"unknown architectures: {sorted(unknown)}")
    zoo_root = zf.ensure({zoo_case(a) for a in wanted}, jobs=jobs, log=log)
    root = fixture_root()
    with zf._locked(root.parent / ".lock"):
        if root.parent.is_dir():
            for other in root.parent.iterdir():
                if other.is_dir() and other.name != root.name:
                    shutil.rmtree(other, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        todo = [a for a in wanted if not case_dir(a, root).is_dir()]
        if not todo:
            return root, zoo_root
        weight = {"efficientnet_b7": 9, "efficientnet_b6": 7, "resnet152": 7, "efficientnet_b5": 6,
                  "resnet101": 5, "wide_resnet50_2": 5, "efficientnet_b4": 4}
        todo.sort(key=lambda a: -weight.get(a, 1))
        log(f"exporting {len(todo)} zoo architectures with torch.onnx.export (opsets "
            f"{', '.join(map(str, OPSETS))}) into {root} ({jobs} workers)")
        t0 = time.time()
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(generate_case, a, root, zoo_root): a for a in todo}
            for fut in concurrent.futures.as_completed(futures):
                arch, seconds = fut.result()
                log(f"  {arch}: {seconds:.1f} s")
        log(f"exported {len(todo)} zoo architectures in {time.time() - t0:.0f} s")
    return root, zoo_root


def main():
    ap = argparse.ArgumentParser(description="Generate (or list) the cached zoo ONNX fixtures.")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="architectures (default: all)")
    ap.add_argument("--list", action="store_true", help="list cases and whether they are cached")
    ap.add_argument("--force", action="store_true", help="regenerate the requested cases")
    args = ap.parse_args()
    if args.list:
        root = fixture_root()
        print(root)
        for arch in archs():
            d = case_dir(arch, root)
            extra = ""
            if d.is_dir():
                m = load_meta(arch, root)
                ort = ", ".join(f"op{k} {max(v.values()):.1e}" for k, v in m["ort_check"].items())
                extra = (f" torch {m['torch_check']:.1e}, ORT {ort},"
                         f" {sum(m['bytes'].values()) / 1e6:.1f} MB, {m['seconds']} s")
            print(f"  {arch:24s} {'cached' if d.is_dir() else 'missing'}{extra}")
        return
    if args.force:
        for arch in args.only or archs():
            shutil.rmtree(case_dir(arch), ignore_errors=True)
    t0 = time.time()
    root, _ = ensure(args.only, jobs=args.jobs)
    print(f"{root} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
