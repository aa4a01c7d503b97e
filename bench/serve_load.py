#!/usr/bin/env python3
"""Load test of `modex serve` with wrk on loopback (issue 7), against `modex bench` in the same run.

mobilenet_v2 (torchvision key names, seeded random weights; the checkpoint cached by
bench/export_speed.py) is exported with `modex export`; a 224x224 JPEG is made once. Then:
  1. `modex bench MODEL --threads T --image IMG --json`: the engine's throughput, no HTTP (run
     before and after step 2; the mean is the reference);
  2. `modex serve MODEL --threads T [serve flags]` and wrk for --duration (60 s) at --connections
     (64) POSTing the JPEG (bench/serve_wrk.lua); the server's resident memory is sampled every
     second from /proc.
Reported: requests, failed requests (socket errors and non-2xx), req/s, p50/p90/p99 latency, the
ratio of server throughput to bench throughput, and RSS growth after warm-up (the sample at
--warmup seconds against the largest later one). Exits 1 when a bound fails: any failed request,
RSS growth above 5%, server throughput below 85% of bench's.

    /usr/bin/python3 bench/serve_load.py [--modex build/modex] [--threads 2] [--duration 60]
        [--connections 64] [--serve-args "--max-batch 4"] [--json]
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_speed as es  # noqa: E402  (checkpoint cache)

HERE = Path(__file__).resolve().parent
LUA = HERE / "serve_wrk.lua"


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return None


def make_jpeg(path, size=224):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1)
    noise = rng.normal(0, 40, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def start_server(modex, model, threads, extra, log):
    cmd = [modex, "serve", f"model={model}", "--threads", str(threads), "--host", "127.0.0.1", "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"error: modex serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modex", default=os.environ.get("MODEX_BIN") or str(es.REPO / "build" / "modex"))
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=60, help="seconds of wrk load")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10, help="seconds before the RSS baseline sample")
    ap.add_argument("--bench-iterations", type=int, default=300)
    ap.add_argument("--serve-args", default="", help="extra `modex serve` flags, e.g. \"--max-batch 4\"")
    ap.add_argument("--max-rss-growth", type=float, default=0.05)
    ap.add_argument("--min-ratio", type=float, default=0.85, help="server / bench throughput")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (os.path.isfile(args.modex) and os.access(args.modex, os.X_OK)):
        raise SystemExit(f"error: modex binary not found: {args.modex} (build it or pass --modex)")
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("error: wrk not found (apt-get install wrk; scripts/install-deps.sh does it)")
    if args.duration <= args.warmup + 5:
        ap.error("--duration must exceed --warmup by more than 5 s")

    work = Path(tempfile.mkdtemp(prefix="modex-serve-load-"))
    try:
        ckpt = es.ensure_checkpoint(args.arch)
        proc = subprocess.run([args.modex, "export", "--checkpoint", str(ckpt), "--output-dir", str(work),
                               "--name", args.arch], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: modex export failed: {proc.stderr}")
        model = work / f"{args.arch}.onnx"
        image = work / "upload.jpg"
        make_jpeg(image)

        def run_bench():
            print(f"modex bench {args.arch} --threads {args.threads} ...", file=sys.stderr, flush=True)
            proc = subprocess.run([args.modex, "bench", str(model), "--threads", str(args.threads), "--iterations",
                                   str(args.bench_iterations), "--warmup", "10", "--image", str(image), "--json"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: modex bench failed: {proc.stderr}")
            return json.loads(proc.stdout)

        # Bench before and after the server run: on a shared machine the load drifts, and the
        # mean of the two is the fairer reference.
        bench = run_bench()

        log = open(work / "serve.log", "w")
        extra = shlex.split(args.serve_args)
        server, url = start_server(args.modex, model, args.threads, extra, log)
        samples = []
        stop = threading.Event()

        def sample():
            t0 = time.monotonic()
            while not stop.is_set():
                r = rss_bytes(server.pid)
                if r is not None:
                    samples.append((time.monotonic() - t0, r))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample)
        load_before = os.getloadavg()[0]
        sampler.start()
        env = dict(os.environ, MODEX_WRK_IMAGE=str(image), MODEX_WRK_TYPE="image/jpeg")
        print(f"wrk {args.duration} s at {args.connections} connections on {url} ...", file=sys.stderr, flush=True)
        wproc = subprocess.run([wrk, "-t", str(args.wrk_threads), "-c", str(args.connections), "-d",
                                f"{args.duration}s", "--timeout", "30s", "-s", str(LUA),
                                f"{url}/v1/models/model/predict"], capture_output=True, text=True, env=env,
                               timeout=args.duration + 120)
        stop.set()
        sampler.join()
        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=60)
        log.close()
        bench_after = run_bench()
        bench_ips = (bench["throughput_ips"] + bench_after["throughput_ips"]) / 2
        if wproc.returncode != 0:
            raise SystemExit(f"error: wrk failed: {wproc.stderr}")
        line = next((l for l in wproc.stdout.splitlines() if l.startswith("MODEX_WRK_JSON ")), None)
        if not line:
            raise SystemExit(f"error: no summary from wrk:\n{wproc.stdout}\n{wproc.stderr}")
        rep = json.loads(line.split(" ", 1)[1])

        rps = rep["requests"] / (rep["duration_us"] / 1e6)
        failed = rep["non2xx"] + sum(rep["errors"].values())
        base = next((r for t, r in samples if t >= args.warmup), None)
        later = [r for t, r in samples if t > args.warmup]
        growth = (max(later) / base - 1) if base and later else float("nan")
        result = {
            "model": args.arch, "threads": args.threads, "connections": args.connections,
            "duration_s": rep["duration_us"] / 1e6, "serve_args": extra,
            "requests": rep["requests"], "failed": failed, "errors": rep["errors"], "non2xx": rep["non2xx"],
            "requests_per_s": rps,
            "latency_ms": {k: v / 1000 for k, v in rep["latency_us"].items()},
            "bench_throughput_ips": bench_ips, "bench_median_ms": bench["latency_ms"]["median"],
            "bench_throughput_before_after": [bench["throughput_ips"], bench_after["throughput_ips"]],
            "ratio_to_bench": rps / bench_ips,
            "rss_mb": {"after_warmup": base / 2**20 if base else None,
                       "max_after_warmup": max(later) / 2**20 if later else None,
                       "first": samples[0][1] / 2**20 if samples else None},
            "rss_growth_after_warmup": growth,
            "server_exit_code": rc, "load_before": load_before, "load_after": os.getloadavg()[0],
        }
        checks = {
            "zero failed requests": failed == 0,
            f"RSS growth after warm-up <= {args.max_rss_growth:.0%}": growth <= args.max_rss_growth,
            f"server throughput >= {args.min_ratio:.0%} of modex bench": rps / bench_ips >= args.min_ratio,
            "server exited 0 on SIGTERM": rc == 0,
        }
        result["checks"] = checks
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            lat = result["latency_ms"]
            print(f"modex serve {args.arch} 224 JPEG uploads, threads={args.threads}, wrk {args.connections} connections "
                  f"x {result['duration_s']:.0f} s {' '.join(extra)}")
            print(f"  requests {rep['requests']}, failed {failed} (non-2xx {rep['non2xx']}, socket {rep['errors']})")
            print(f"  throughput {rps:.1f} req/s; modex bench {bench_ips:.1f} images/s (before "
                  f"{bench['throughput_ips']:.1f}, after {bench_after['throughput_ips']:.1f}): ratio {rps / bench_ips:.3f}")
            print(f"  latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                  f"max {lat['max']:.1f} ms")
            print(f"  RSS {result['rss_mb']['first']:.1f} MB at start, {result['rss_mb']['after_warmup']:.1f} MB "
                  f"after {args.warmup} s, max {result['rss_mb']['max_after_warmup']:.1f} MB later: "
                  f"growth {growth:+.2%}")
            print(f"  load average {load_before:.2f} -> {result['load_after']:.2f}")
            for name, ok in checks.items():
                print(f"  {'PASS' if ok else 'FAIL'}  {name}")
        return 0 if all(checks.values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
