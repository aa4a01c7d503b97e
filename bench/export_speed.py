#!/usr/bin/python3
"""Export speed and memory: `modex export --format onnx` against `torch.onnx.export`, same run.

For resnet50, efficientnet_b0 and mobilenet_v2 (torchvision, 1000 classes, seeded random weights;
checkpoints cached under ~/.cache/modex/bench/):
  modex  median of >= 5 runs (after one warm-up): whole-process wall time and peak RSS, each run a
         fresh child measured with wait4(2);
  torch  median of >= 3 runs, each a fresh `/usr/bin/python3` child that loads the checkpoint and
         calls torch.onnx.export (opset 11, dynamic batch): the export call alone (wall time, and
         peak RSS during the call via /proc clear_refs + VmHWM) and the whole process.
Speed-up = torch time / modex time: "call" compares with the export call alone (the
conservative figure, torch's interpreter start, imports and checkpoint load not counted);
"process" compares whole processes (what a user waits for). Targets of issue 2: >= 10x faster,
modex peak memory < 2x the checkpoint size.

    /usr/bin/python3 bench/export_speed.py [--modex build/modex] [--json] [--archs a,b,c]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"
DEFAULT_ARCHS = ["resnet50", "efficientnet_b0", "mobilenet_v2"]
TARGET_SPEEDUP = 10.0
TARGET_MEMORY_RATIO = 2.0


def cache_dir():
    base = os.environ.get("MODEX_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = str(Path(xdg) / "modex" if xdg else Path.home() / ".cache" / "modex")
    return Path(base) / "bench"


def measure(cmd, **popen_kw):
    """Runs cmd as a fresh child; returns (wall seconds, peak RSS bytes, stdout, stderr, rc,
    CPU seconds (user + system))."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_kw)
    # Read the pipes in the foreground: a child that fills a pipe must not stall the clock.
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen from waiting again
    return (wall, usage.ru_maxrss * 1024, out.decode(), err.decode(), proc.returncode,
            usage.ru_utime + usage.ru_stime)


# ---------------------------------------------------------------------------------------------
# Children (run in a fresh interpreter so that their memory and imports are their own).

def child_make_checkpoint(arch, path):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=1000)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _vm(field):
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) * 1024 if m else None


def child_torch_export(arch, checkpoint, output):
    t_start = time.perf_counter()
    import torch
    import torchvision
    t_import = time.perf_counter()
    model = getattr(torchvision.models, arch)(num_classes=1000)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    model.eval()
    x = torch.zeros(1, 3, 224, 224)
    t_ready = time.perf_counter()
    rss_before = _vm("VmRSS")
    try:  # reset the peak so that VmHWM afterwards is the export call's own peak
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    c0 = time.process_time()
    torch.onnx.export(model, x, output, opset_version=11, input_names=["image"],
                      output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    t1 = time.perf_counter()
    c1 = time.process_time()
    print(json.dumps({"export_seconds": t1 - t0, "export_cpu_seconds": c1 - c0, "import_seconds": t_import - t_start,
                      "prepare_seconds": t_ready - t_import, "rss_before_export": rss_before,
                      "peak_rss_during_export": _vm("VmHWM") if reset else None,
                      "onnx_bytes": os.path.getsize(output)}))


# ---------------------------------------------------------------------------------------------

def ensure_checkpoint(arch):
    import importlib.metadata as md
    try:
        tv = md.version("torchvision")
    except Exception:
        tv = "unknown"
    path = cache_dir() / f"{arch}-1000-seed0-tv{tv}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {path.name} ...", file=sys.stderr, flush=True)
        subprocess.run([PYTHON, __file__, "--child-make-checkpoint", arch, str(path)], check=True)
    return path


def bench_modex(modex, checkpoint, runs, work):
    out_dir = work / "modex"
    samples = []
    for i in range(runs + 1):  # run 0 warms the page cache and is not counted
        out_dir.mkdir(exist_ok=True)
        cmd = [modex, "export", "--checkpoint", str(checkpoint), "--format", "onnx",
               "--output-dir", str(out_dir), "--json"]
        wall, rss, out, err, rc, cpu = measure(cmd)
        if rc != 0:
            raise SystemExit(f"error: modex export failed (exit {rc}):\n{err}")
        report = json.loads(out)
        if i:
            samples.append({"wall": wall, "cpu": cpu, "peak_rss": rss,
                            "reported_seconds": report.get("seconds"),
                            "onnx_bytes": report["outputs"][0]["bytes"]})
        for f in out_dir.iterdir():
            f.unlink()
    return samples


def bench_torch(arch, checkpoint, runs, work):
    samples = []
    for _ in range(runs):
        out = work / f"torch_{arch}.onnx"
        wall, rss, stdout, err, rc, cpu = measure(
            [PYTHON, __file__, "--child-torch-export", arch, str(checkpoint), str(out)])
        if rc != 0:
            raise SystemExit(f"error: torch.onnx.export child failed (exit {rc}):\n{err[-3000:]}")
        child = json.loads(stdout.strip().splitlines()[-1])
        samples.append(dict(child, wall=wall, cpu=cpu, peak_rss=rss))
        out.unlink(missing_ok=True)
    return samples


def median(samples, key):
    vals = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modex", default=os.environ.get("MODEX_BIN") or str(REPO / "build" / "modex"))
    ap.add_argument("--archs", default=",".join(DEFAULT_ARCHS))
    ap.add_argument("--modex-runs", type=int, default=5)
    ap.add_argument("--torch-runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--child-make-checkpoint", nargs=2, metavar=("ARCH", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--child-torch-export", nargs=3, metavar=("ARCH", "CKPT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_make_checkpoint:
        return child_make_checkpoint(*args.child_make_checkpoint)
    if args.child_torch_export:
        return child_torch_export(*args.child_torch_export)
    if args.modex_runs < 5 or args.torch_runs < 3:
        ap.error("medians need --modex-runs >= 5 and --torch-runs >= 3")
    if not (os.path.isfile(args.modex) and os.access(args.modex, os.X_OK)):
        raise SystemExit(f"error: modex binary not found: {args.modex} (build it or pass --modex)")

    # What the process costs before it reads anything (binary, shared libraries, allocator):
    # printed so that a miss on small models can be told apart from a copy too many.
    baseline = statistics.median(measure([args.modex, "--version"])[1] for _ in range(3))
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="modex-bench-") as tmp:
        work = Path(tmp)
        for arch in args.archs.split(","):
            ckpt = ensure_checkpoint(arch)
            print(f"{arch}: modex x{args.modex_runs} ...", file=sys.stderr, flush=True)
            m = bench_modex(args.modex, ckpt, args.modex_runs, work)
            print(f"{arch}: torch.onnx.export x{args.torch_runs} ...", file=sys.stderr, flush=True)
            t = bench_torch(arch, ckpt, args.torch_runs, work)
            size = ckpt.stat().st_size
            row = {
                "arch": arch, "checkpoint": str(ckpt), "checkpoint_bytes": size,
                "modex_seconds": median(m, "wall"), "modex_peak_rss": median(m, "peak_rss"),
                "modex_reported_seconds": median(m, "reported_seconds"),
                "modex_cpu_seconds": median(m, "cpu"),
                "torch_export_cpu_seconds": median(t, "export_cpu_seconds"),
                "torch_process_cpu_seconds": median(t, "cpu"),
                "torch_export_seconds": median(t, "export_seconds"),
                "torch_process_seconds": median(t, "wall"),
                "torch_export_peak_rss": median(t, "peak_rss_during_export"),
                "torch_process_peak_rss": median(t, "peak_rss"),
                "modex_runs": m, "torch_runs": t,
            }
            row["speedup_vs_export_call"] = row["torch_export_seconds"] / row["modex_seconds"]
            row["speedup_vs_process"] = row["torch_process_seconds"] / row["modex_seconds"]
            row["modex_peak_rss_over_checkpoint"] = row["modex_peak_rss"] / size
            row["cpu_speedup_vs_export_call"] = \
                row["torch_export_cpu_seconds"] / max(row["modex_cpu_seconds"], 1e-6)
            row["modex_peak_rss_above_baseline_over_checkpoint"] = \
                (row["modex_peak_rss"] - baseline) / size
            row["meets_speed_target"] = row["speedup_vs_export_call"] >= TARGET_SPEEDUP
            row["meets_memory_target"] = row["modex_peak_rss_over_checkpoint"] < TARGET_MEMORY_RATIO
            rows.append(row)

    result = {"targets": {"speedup": TARGET_SPEEDUP, "peak_rss_over_checkpoint": TARGET_MEMORY_RATIO},
              "modex": args.modex, "modex_baseline_rss": baseline,
              "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                          "loadavg_at_end": os.getloadavg()},
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    mb = 1e6
    print(f"modex export vs torch.onnx.export (opset 11, dynamic batch); medians of "
          f"{args.modex_runs} modex / {args.torch_runs} torch runs; {os.cpu_count()} CPUs")
    head = (f"{'model':16s} {'ckpt MB':>8s} | {'modex s':>8s} {'peak MB':>8s} {'/ckpt':>6s} | "
            f"{'torch call s':>12s} {'process s':>9s} {'call MB':>8s} {'proc MB':>8s} | "
            f"{'speed-up call':>13s} {'process':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        call_mb = r["torch_export_peak_rss"]
        print(f"{r['arch']:16s} {r['checkpoint_bytes'] / mb:8.1f} | {r['modex_seconds']:8.3f} "
              f"{r['modex_peak_rss'] / mb:8.1f} {r['modex_peak_rss_over_checkpoint']:5.2f}x | "
              f"{r['torch_export_seconds']:12.3f} {r['torch_process_seconds']:9.3f} "
              f"{(call_mb or 0) / mb:8.1f} {r['torch_process_peak_rss'] / mb:8.1f} | "
              f"{r['speedup_vs_export_call']:12.1f}x {r['speedup_vs_process']:7.1f}x")
    print("CPU seconds (user+sys; unlike wall time, barely affected by other load): " + "; ".join(
        f"{r['arch']} modex {r['modex_cpu_seconds']:.3f}, torch call {r['torch_export_cpu_seconds']:.3f}"
        f" ({r['cpu_speedup_vs_export_call']:.1f}x)" for r in rows))
    print(f"modex's baseline RSS (`modex --version`): {baseline / mb:.1f} MB. Load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
          + (": the machine was busy, wall times are inflated" if max(load_before, os.getloadavg()[0]) > 1.5 else ""))
    print()
    for r in rows:
        speed = "ok" if r["meets_speed_target"] else "MISSED"
        mem = "ok" if r["meets_memory_target"] else "MISSED"
        print(f"{r['arch']:16s} target >= {TARGET_SPEEDUP:.0f}x faster than the export call: "
              f"{r['speedup_vs_export_call']:.1f}x {speed}; target peak RSS < "
              f"{TARGET_MEMORY_RATIO:.0f}x checkpoint: {r['modex_peak_rss_over_checkpoint']:.2f}x {mem} "
              f"({r['modex_peak_rss_above_baseline_over_checkpoint']:.2f}x above the baseline)")


if __name__ == "__main__":
    main()
