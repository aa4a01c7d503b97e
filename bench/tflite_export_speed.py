#!/usr/bin/python3
"""TFLite export speed and memory: `modex export` to TFLite float32 + float16 (from `.pth` and from
`.onnx`), next to `torch.onnx.export` in the same run (issue 3).

For efficientnet_b0 and resnet50 (torchvision, 1000 classes, seeded random weights; the same cached
checkpoints as bench/export_speed.py), medians of >= 5 fresh modex processes (after a warm-up) and
>= 3 fresh torch children, wall time and peak RSS from wait4(2):
  pth->onnx+tflite   modex export --checkpoint X.pth --format both --quantize none,float16
                     (one .onnx, one float32 .tflite, one float16 .tflite: the target row)
  pth->tflite        modex export --checkpoint X.pth --format tflite --quantize none,float16
  onnx->tflite       modex export --onnx X.onnx --format tflite --quantize none,float16
                     (X.onnx written once by torch.onnx.export, opset 11, dynamic batch; cached)
  torch.onnx.export  the export call alone, and its whole process (import, load, export)
Target: efficientnet_b0 .pth -> ONNX + TFLite fp32 + fp16 in under 0.5 s on this machine.
Today's alternative (onnx2tf / onnx-tf + TFLiteConverter) is not installable here (no PyPI), so
the reference is the first step of that path, torch.onnx.export, alone.

    /usr/bin/python3 bench/tflite_export_speed.py [--modex build/modex] [--json] [--archs a,b]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_speed as es  # noqa: E402  (measurement helpers, checkpoint cache, torch child)

DEFAULT_ARCHS = ["efficientnet_b0", "resnet50"]
TARGET_SECONDS = 0.5
TARGET_ARCH = "efficientnet_b0"
MODES = {
    "pth->onnx+tflite": lambda ckpt, onnx: ["--checkpoint", ckpt, "--format", "both"],
    "pth->tflite": lambda ckpt, onnx: ["--checkpoint", ckpt, "--format", "tflite"],
    "onnx->tflite": lambda ckpt, onnx: ["--onnx", onnx, "--format", "tflite"],
}


def ensure_onnx(arch, checkpoint):
    path = checkpoint.with_suffix(".op11.onnx")
    if not path.is_file():
        print(f"making {path.name} with torch.onnx.export ...", file=sys.stderr, flush=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        subprocess.run([es.PYTHON, es.__file__, "--child-torch-export", arch, str(checkpoint), str(tmp)],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


def bench_mode(modex, args, runs, out_dir):
    samples = []
    for i in range(runs + 1):  # run 0 warms the page cache
        out_dir.mkdir(exist_ok=True)
        cmd = [modex, "export", *args, "--quantize", "none,float16", "--output-dir", str(out_dir), "--json"]
        wall, rss, out, err, rc, cpu = es.measure(cmd)
        if rc != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed (exit {rc}):\n{err}")
        report = json.loads(out)
        if i:
            samples.append({"wall": wall, "cpu": cpu, "peak_rss": rss,
                            "files": {f"{o['format']}-{o['precision']}": o["bytes"] for o in report["outputs"]}})
        for f in out_dir.iterdir():
            f.unlink()
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modex", default=os.environ.get("MODEX_BIN") or str(es.REPO / "build" / "modex"))
    ap.add_argument("--archs", default=",".join(DEFAULT_ARCHS))
    ap.add_argument("--modex-runs", type=int, default=5)
    ap.add_argument("--torch-runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.modex_runs < 5 or args.torch_runs < 3:
        ap.error("medians need --modex-runs >= 5 and --torch-runs >= 3")
    if not (os.path.isfile(args.modex) and os.access(args.modex, os.X_OK)):
        raise SystemExit(f"error: modex binary not found: {args.modex}")

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="modex-bench-") as tmp:
        work = Path(tmp)
        for arch in args.archs.split(","):
            ckpt = es.ensure_checkpoint(arch)
            onnx = ensure_onnx(arch, ckpt)
            row = {"arch": arch, "checkpoint_bytes": ckpt.stat().st_size, "modes": {}}
            for mode, make in MODES.items():
                print(f"{arch}: modex {mode} x{args.modex_runs} ...", file=sys.stderr, flush=True)
                s = bench_mode(args.modex, make(str(ckpt), str(onnx)), args.modex_runs, work / "out")
                row["modes"][mode] = {"seconds": es.median(s, "wall"), "cpu_seconds": es.median(s, "cpu"),
                                      "peak_rss": es.median(s, "peak_rss"), "files": s[0]["files"], "runs": s}
            print(f"{arch}: torch.onnx.export x{args.torch_runs} ...", file=sys.stderr, flush=True)
            t = es.bench_torch(arch, ckpt, args.torch_runs, work)
            row["torch"] = {"export_seconds": es.median(t, "export_seconds"), "process_seconds": es.median(t, "wall"),
                            "export_peak_rss": es.median(t, "peak_rss_during_export"),
                            "process_peak_rss": es.median(t, "peak_rss"), "runs": t}
            for mode, m in row["modes"].items():
                m["speedup_vs_torch_export_call"] = row["torch"]["export_seconds"] / m["seconds"]
            files = row["modes"]["pth->onnx+tflite"]["files"]
            row["float16_size_ratio"] = files["tflite-float16"] / files["tflite-float32"]
            if arch == TARGET_ARCH:
                row["target_seconds"] = TARGET_SECONDS
                row["meets_target"] = row["modes"]["pth->onnx+tflite"]["seconds"] < TARGET_SECONDS
            rows.append(row)
    load_after = os.getloadavg()[0]
    result = {"modex": args.modex, "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                                                "loadavg_after": load_after}, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    mb = 1e6
    print(f"modex export to TFLite float32 + float16 vs torch.onnx.export; medians of {args.modex_runs} modex / "
          f"{args.torch_runs} torch runs; {os.cpu_count()} CPUs; load {load_before:.1f} before, {load_after:.1f} after")
    head = f"{'model':16s} {'what':18s} {'wall s':>8s} {'CPU s':>7s} {'peak MB':>8s} {'vs torch call':>13s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        for mode, m in r["modes"].items():
            print(f"{r['arch']:16s} {mode:18s} {m['seconds']:8.3f} {m['cpu_seconds']:7.3f} {m['peak_rss'] / mb:8.1f} "
                  f"{m['speedup_vs_torch_export_call']:12.1f}x")
        t = r["torch"]
        print(f"{r['arch']:16s} {'torch export call':18s} {t['export_seconds']:8.3f} {'':>7s} "
              f"{(t['export_peak_rss'] or 0) / mb:8.1f}")
        print(f"{r['arch']:16s} {'torch process':18s} {t['process_seconds']:8.3f} {'':>7s} {t['process_peak_rss'] / mb:8.1f}")
    print()
    for r in rows:
        f = r["modes"]["pth->onnx+tflite"]["files"]
        print(f"{r['arch']:16s} sizes: onnx {f['onnx-float32'] / mb:.1f} MB, tflite fp32 {f['tflite-float32'] / mb:.1f} MB, "
              f"fp16 {f['tflite-float16'] / mb:.1f} MB ({r['float16_size_ratio']:.3f}x of fp32)")
        if "target_seconds" in r:
            s = r["modes"]["pth->onnx+tflite"]["seconds"]
            print(f"{r['arch']:16s} target .pth -> ONNX + TFLite fp32 + fp16 < {TARGET_SECONDS} s: {s:.3f} s "
                  + ("ok" if r["meets_target"] else "MISSED"))


if __name__ == "__main__":
    main()
