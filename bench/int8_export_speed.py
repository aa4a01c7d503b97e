#!/usr/bin/python3
"""int8 TFLite export speed: `modex export --quantize int8` of efficientnet_b0 (torchvision, 1000
classes, seeded random weights: the same cached checkpoint as bench/export_speed.py) calibrated on
100 images at 224x224 (the synthetic JPEGs of bench/batch_speed.py, as a flat --calibration-dir),
next to the float32 TFLite export of the same checkpoint.

Median of >= 3 fresh modex processes after a warm-up: wall time, peak RSS, and the stage timings
modex reports (calibration = decoding + running the float model + observing every tensor). Prints
the file sizes and the int8 / float32 size ratio.
Target: efficientnet_b0 int8 export with 100 calibration images in under 5 s on this machine.

    /usr/bin/python3 bench/int8_export_speed.py [--modex build/modex] [--runs 3] [--calibration percentile] [--json]
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batch_speed as bs  # noqa: E402  (the cached synthetic JPEGs)
import export_speed as es  # noqa: E402  (measurement helpers, checkpoint cache)

ARCH = "efficientnet_b0"
CALIB_IMAGES = 100
INPUT_SIZE = 224
TARGET_SECONDS = 5.0


def run(modex, args, runs, out_dir):
    samples = []
    for i in range(runs + 1):  # run 0 warms the page cache
        cmd = [modex, "export", *args, "--output-dir", str(out_dir), "--json", "--no-progress"]
        wall, rss, out, err, rc, cpu = es.measure(cmd)
        if rc != 0:
            raise SystemExit(f"error: {' '.join(map(str, cmd))} failed (exit {rc}):\n{err}")
        if i:
            samples.append({"wall": wall, "rss": rss, "cpu": cpu, "summary": json.loads(out)})
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modex", default=str(es.REPO / "build" / "modex"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--calibration", default=None, help="minmax | percentile | entropy | image-percentile (default: modex's)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    checkpoint = es.ensure_checkpoint(ARCH)
    images = bs.ensure_images(1000)
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for p in sorted(images.glob("*.jpg"))[:CALIB_IMAGES]:
            (calib / p.name).symlink_to(p)
        common = ["--checkpoint", checkpoint, "--format", "tflite", "--input-size", INPUT_SIZE]
        int8_args = common + ["--quantize", "int8", "--calibration-dir", calib, "--num-calib-samples", CALIB_IMAGES]
        if a.calibration:
            int8_args += ["--calibration", a.calibration]
        int8 = run(a.modex, [str(x) for x in int8_args], a.runs, Path(tmp) / "int8")
        f32 = run(a.modex, [str(x) for x in common + ["--quantize", "none"]], a.runs, Path(tmp) / "f32")
        size = {o["precision"]: o["bytes"] for s in (int8[0], f32[0]) for o in s["summary"]["outputs"]}

    def med(samples, f):
        return statistics.median(f(s) for s in samples)

    r = {
        "arch": ARCH, "input_size": INPUT_SIZE, "calibration_images": CALIB_IMAGES,
        "calibration": int8[0]["summary"]["quantization"]["calibration"]["method"],
        "int8_seconds": med(int8, lambda s: s["wall"]),
        "int8_calibration_seconds": med(int8, lambda s: s["summary"]["timings"]["calibration"]),
        "int8_peak_rss_mb": med(int8, lambda s: s["rss"]) / 2**20,
        "float32_seconds": med(f32, lambda s: s["wall"]),
        "int8_bytes": size["int8"], "float32_bytes": size["float32"],
        "size_ratio": size["int8"] / size["float32"],
        "target_seconds": TARGET_SECONDS,
    }
    r["meets_target"] = r["int8_seconds"] < TARGET_SECONDS
    if a.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{ARCH} at {INPUT_SIZE}x{INPUT_SIZE}, {CALIB_IMAGES} calibration images ({r['calibration']}), "
          f"median of {a.runs} runs")
    print(f"int8 export     {r['int8_seconds']:.2f} s  (calibration {r['int8_calibration_seconds']:.2f} s, "
          f"peak RSS {r['int8_peak_rss_mb']:.0f} MB)")
    print(f"float32 export  {r['float32_seconds']:.2f} s")
    print(f"size            int8 {r['int8_bytes'] / 1e6:.2f} MB, float32 {r['float32_bytes'] / 1e6:.2f} MB, "
          f"ratio {r['size_ratio']:.3f}")
    print(f"target          < {TARGET_SECONDS:.0f} s: {'PASS' if r['meets_target'] else 'FAIL'}")


if __name__ == "__main__":
    main()
