#!/usr/bin/python3
"""Inference speed and memory: `modex bench` against ONNX Runtime (onnxruntime-node), same run,
same .onnx files (issue: modex's own inference engine).

For torchvision resnet18, resnet50, efficientnet_b0 and mobilenet_v2 (1000 classes, seeded random
weights, the checkpoints cached by bench/export_speed.py, exported once with torch.onnx.export
opset 11 as bench/tflite_export_speed.py does), batch 1, 224x224, 1 and 2 threads:
  modex  `modex bench MODEL --threads T --iterations N --warmup W --json`, a fresh process each;
  ORT    `node bench/ort_bench.js MODEL --threads T ...` (intraOpNumThreads T, interOpNumThreads 1,
         graphOptimizationLevel 'all'), a fresh process each.
and, for the int8 target, the same models exported by modex to full-integer TFLite (`modex export
--onnx M.onnx --format tflite --quantize int8`, calibrated on 100 of bench/batch_speed.py's 1,000
JPEGs) run by `modex bench M_int8.tflite` in the same alternation.
Each process reports the median of its N timed runs (after W warm-up runs); the two runtimes
alternate (modex, ORT, modex, ORT, ... and the order flips every repetition) so that they share
the machine's noise, and the table shows the median over --repeats repetitions. Peak memory is the
child's peak RSS from wait4(2); for ORT also minus a baseline Node process that only loads
onnxruntime-node (what Node itself costs). Targets: latency ratio modex / ORT <= 1.0 for every
model and thread count; modex's peak RSS <= ORT's on the same model; modex int8 latency <= 0.5x ORT
float32 latency.

    /usr/bin/python3 bench/runtime_speed.py [--modex build/modex] [--json] [--models a,b] [--threads 1,2] [--no-int8]
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_speed as es  # noqa: E402  (measure(), checkpoint cache)
import tflite_export_speed as tes  # noqa: E402  (ensure_onnx: torch.onnx.export once, cached)

DEFAULT_MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenet_v2"]
ORT_SCRIPT = Path(__file__).resolve().parent / "ort_bench.js"
TARGET_RATIO = 1.0
TARGET_INT8_RATIO = 0.5  # modex int8 latency / ORT float32 latency


def cpu_description():
    """The CPU's model name and the instruction sets modex's kernels choose between."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    sets = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX-INT8", "amx_int8")) if flag in flags]
    return model, sets


def run_json(cmd, what):
    wall, rss, out, err, rc, cpu = es.measure(cmd)
    if rc != 0:
        raise SystemExit(f"error: {what} failed (exit {rc}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return json.loads(out), rss, cpu


def bench_modex(modex, onnx, threads, args):
    report, rss, cpu = run_json([modex, "bench", str(onnx), "--threads", str(threads), "--iterations",
                                 str(args.iterations), "--warmup", str(args.warmup), "--input-size",
                                 str(args.input_size), "--json"], "modex bench")
    return {"median_ms": report["latency_ms"]["median"], "mean_ms": report["latency_ms"]["mean"],
            "min_ms": report["latency_ms"]["min"], "load_ms": report["load_total_ms"], "peak_rss": rss, "cpu": cpu}


def ensure_int8(modex, model, onnx):
    """Exports the model to full-integer TFLite with modex (every run: the file depends on modex)."""
    import batch_speed  # the 1,000 cached JPEGs
    images = batch_speed.ensure_images()
    out = es.cache_dir() / "int8"
    run_json([modex, "export", "--onnx", str(onnx), "--format", "tflite", "--quantize", "int8",
              "--calibration-dir", str(images), "--num-calib-samples", "100", "--output-dir", str(out),
              "--name", model, "--json"], f"modex export --quantize int8 ({model})")
    return out / f"{model}_int8.tflite"


def bench_ort(node, onnx, threads, args):
    report, rss, cpu = run_json([node, str(ORT_SCRIPT), str(onnx), "--threads", str(threads), "--iterations",
                                 str(args.iterations), "--warmup", str(args.warmup), "--input-size",
                                 str(args.input_size)], "ort_bench.js")
    return {"median_ms": report["latency_ms"]["median"], "mean_ms": report["latency_ms"]["mean"],
            "min_ms": report["latency_ms"]["min"], "load_ms": report["load_ms"] + report["first_run_ms"],
            "peak_rss": rss, "cpu": cpu, "ort_version": report.get("ort_version")}


def med(samples, key):
    return statistics.median(s[key] for s in samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modex", default=os.environ.get("MODEX_BIN") or str(es.REPO / "build" / "modex"))
    ap.add_argument("--node", default="node")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per runtime, model and thread count")
    ap.add_argument("--iterations", type=int, default=20, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per process before them")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 TFLite models")
    args = ap.parse_args()
    if args.repeats < 1 or args.iterations < 5:
        ap.error("need --repeats >= 1 and --iterations >= 5")
    if not (os.path.isfile(args.modex) and os.access(args.modex, os.X_OK)):
        raise SystemExit(f"error: modex binary not found: {args.modex} (build it or pass --modex)")
    thread_counts = [int(t) for t in args.threads.split(",")]
    models = args.models.split(",")

    onnx = {}
    for m in models:
        onnx[m] = tes.ensure_onnx(m, es.ensure_checkpoint(m))
    int8 = {m: ensure_int8(args.modex, m, onnx[m]) for m in models} if args.int8 else {}
    # What the processes cost before a model is read: Node + onnxruntime-node, and modex itself.
    ort_baseline = statistics.median(run_json([args.node, str(ORT_SCRIPT), "--baseline"], "ort baseline")[1]
                                     for _ in range(3))
    modex_baseline = statistics.median(es.measure([args.modex, "--version"])[1] for _ in range(3))

    load_before = os.getloadavg()
    samples = {(m, t): {"modex": [], "ort": [], "modex_int8": []} for m in models for t in thread_counts}
    for rep in range(args.repeats):
        for m in models:
            for t in thread_counts:
                print(f"[{rep + 1}/{args.repeats}] {m} threads={t} (load {os.getloadavg()[0]:.1f}) ...",
                      file=sys.stderr, flush=True)
                runners = [("modex", lambda: bench_modex(args.modex, onnx[m], t, args)),
                           ("ort", lambda: bench_ort(args.node, onnx[m], t, args))]
                if m in int8:
                    runners.append(("modex_int8", lambda: bench_modex(args.modex, int8[m], t, args)))
                if rep % 2:
                    runners.reverse()
                for name, fn in runners:
                    samples[(m, t)][name].append(fn())
    load_after = os.getloadavg()

    rows = []
    for m in models:
        for t in thread_counts:
            s = samples[(m, t)]
            mx, ort = s["modex"], s["ort"]
            row = {"model": m, "onnx": str(onnx[m]), "threads": t,
                   "modex_median_ms": med(mx, "median_ms"), "ort_median_ms": med(ort, "median_ms"),
                   "modex_min_ms": min(x["min_ms"] for x in mx), "ort_min_ms": min(x["min_ms"] for x in ort),
                   "modex_load_ms": med(mx, "load_ms"), "ort_load_ms": med(ort, "load_ms"),
                   "modex_peak_rss": med(mx, "peak_rss"), "ort_peak_rss": med(ort, "peak_rss"),
                   "runs": s}
            row["ratio"] = row["modex_median_ms"] / row["ort_median_ms"]
            row["ort_peak_rss_above_baseline"] = row["ort_peak_rss"] - ort_baseline
            row["modex_peak_rss_above_baseline"] = row["modex_peak_rss"] - modex_baseline
            row["meets_speed_target"] = row["ratio"] <= TARGET_RATIO
            row["meets_memory_target"] = row["modex_peak_rss"] <= row["ort_peak_rss"]
            if s["modex_int8"]:
                row["int8_tflite"] = str(int8[m])
                row["modex_int8_median_ms"] = med(s["modex_int8"], "median_ms")
                row["modex_int8_peak_rss"] = med(s["modex_int8"], "peak_rss")
                row["int8_ratio_vs_ort_float32"] = row["modex_int8_median_ms"] / row["ort_median_ms"]
                row["meets_int8_target"] = row["int8_ratio_vs_ort_float32"] <= TARGET_INT8_RATIO
            rows.append(row)
    result = {"targets": {"ratio": TARGET_RATIO, "memory": "modex peak RSS <= ORT peak RSS",
                          "int8_ratio_vs_ort_float32": TARGET_INT8_RATIO},
              "modex": args.modex, "ort_version": rows[0]["runs"]["ort"][0].get("ort_version") if rows else None,
              "iterations": args.iterations, "warmup": args.warmup, "repeats": args.repeats,
              "input_size": args.input_size, "ort_baseline_rss": ort_baseline, "modex_baseline_rss": modex_baseline,
              "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_description()[0], "instruction_sets": cpu_description()[1],
                          "loadavg_before": load_before, "loadavg_after": load_after},
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    mb = 1e6
    model_name, sets = cpu_description()
    print(f"CPU: {model_name} ({', '.join(sets) or 'no AVX2'}); modex picks its kernels by these (MODEX_MAX_ISA limits them)")
    print(f"modex bench vs ONNX Runtime {result['ort_version']} (onnxruntime-node), batch 1, "
          f"{args.input_size}x{args.input_size}; median of {args.repeats} fresh processes x median of "
          f"{args.iterations} runs; {os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after" + (" (busy machine: latencies inflated)" if max(load_before[0], load_after[0]) > 1.0 else ""))
    head = (f"{'model':16s} {'thr':>3s} | {'modex ms':>9s} {'ORT ms':>9s} {'ratio':>6s} | "
            f"{'modex MB':>9s} {'ORT MB':>8s} {'ORT-base':>8s} | {'load ms modex':>13s} {'ORT':>6s} | "
            f"{'int8 ms':>8s} {'/ORT':>5s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:16s} {r['threads']:3d} | {r['modex_median_ms']:9.2f} {r['ort_median_ms']:9.2f} "
              f"{r['ratio']:6.2f} | {r['modex_peak_rss'] / mb:9.1f} {r['ort_peak_rss'] / mb:8.1f} "
              f"{r['ort_peak_rss_above_baseline'] / mb:8.1f} | {r['modex_load_ms']:13.0f} {r['ort_load_ms']:6.0f} | "
              + (f"{r['modex_int8_median_ms']:8.2f} {r['int8_ratio_vs_ort_float32']:5.2f}" if "modex_int8_median_ms" in r
                 else f"{'-':>8s} {'-':>5s}"))
    print(f"baselines: node + onnxruntime-node {ort_baseline / mb:.1f} MB, `modex --version` {modex_baseline / mb:.1f} MB")
    speed_ok = all(r["meets_speed_target"] for r in rows)
    mem_ok = all(r["meets_memory_target"] for r in rows)
    print(f"target ratio <= {TARGET_RATIO:.1f} everywhere: " + ("ok" if speed_ok else "MISSED (" + ", ".join(
        f"{r['model']}/{r['threads']}t {r['ratio']:.2f}" for r in rows if not r["meets_speed_target"]) + ")"))
    print("target modex peak RSS <= ORT's: " + ("ok" if mem_ok else "MISSED (" + ", ".join(
        f"{r['model']}/{r['threads']}t" for r in rows if not r["meets_memory_target"]) + ")"))
    int8_rows = [r for r in rows if "meets_int8_target" in r]
    if int8_rows:
        print(f"target modex int8 <= {TARGET_INT8_RATIO}x ORT float32: " + (
            "ok" if all(r["meets_int8_target"] for r in int8_rows) else "MISSED (" + ", ".join(
                f"{r['model']}/{r['threads']}t {r['int8_ratio_vs_ort_float32']:.2f}" for r in int8_rows
                if not r["meets_int8_target"]) + ")"))


if __name__ == "__main__":
    main()
