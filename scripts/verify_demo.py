#!/usr/bin/python3
"""Prints the verification table of `make demo`: the checkpoint run in PyTorch against the files
modex exported, the .onnx run in ONNX Runtime and each .tflite in LiteRT, on Fashion-MNIST test
images. Tolerances (issue 2 and 3): float32 max|Δlogit| <= 1e-4·max|logit| + 1e-5; float16
weights max|Δlogit| <= 1e-2·max|logit| and the same top-1 class on every image.

Must run under Debian's interpreter (/usr/bin/python3), which has torch and torchvision.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_demo  # noqa: E402  (shares the data loading and preprocessing)

REPO = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--tflite", action="append", default=[], help="a .tflite to run in LiteRT (repeatable)")
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()

    ckpt = torch.load(args.checkpoint, map_location="cpu")
    cfg = ckpt["config"]
    model = getattr(torchvision.models, cfg["architecture"])(num_classes=cfg["num_classes"])
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()

    images, labels = train_demo.load_split(train_demo.FASHION_DIR, "test")
    # The last images of the test split: the training script evaluates on the first ones, and
    # trains on the train split only.
    images, labels = images[-args.images:], labels[-args.images:]
    x = train_demo.preprocess(images, cfg["input_size"])
    with torch.no_grad():
        torch_logits = model(x).numpy()

    tflite_logits = {}
    with tempfile.TemporaryDirectory() as tmp:
        x_path = os.path.join(tmp, "x.bin")
        y_path = os.path.join(tmp, "y.bin")
        x.numpy().astype("<f4").tofile(x_path)
        jobs = {"jobs": [{"id": "demo", "model": os.path.abspath(args.onnx), "input": x_path,
                          "dims": list(x.shape), "output": y_path, "threads": 2}]}
        with open(os.path.join(tmp, "jobs.json"), "w") as f:
            json.dump(jobs, f)
        subprocess.run(["node", os.path.join(REPO, "tests", "oracle", "ort_run.js"),
                        os.path.join(tmp, "jobs.json"), os.path.join(tmp, "results.json")], check=True)
        ort_logits = np.fromfile(y_path, dtype="<f4").reshape(torch_logits.shape)
        if args.tflite:
            # TFLite's input is NHWC; LiteRT runs a dynamic batch one image at a time.
            xh_path = os.path.join(tmp, "x_nhwc.bin")
            x_nhwc = x.numpy().transpose(0, 2, 3, 1)
            np.ascontiguousarray(x_nhwc, dtype="<f4").tofile(xh_path)
            jobs = {"jobs": [{"id": str(i), "model": os.path.abspath(t), "input": xh_path, "dims": list(x_nhwc.shape),
                              "output": os.path.join(tmp, f"t{i}.bin")} for i, t in enumerate(args.tflite)]}
            with open(os.path.join(tmp, "tjobs.json"), "w") as f:
                json.dump(jobs, f)
            subprocess.run(["node", os.path.join(REPO, "tests", "oracle", "litert_run.mjs"),
                            os.path.join(tmp, "tjobs.json"), os.path.join(tmp, "tresults.json")], check=True)
            for i, t in enumerate(args.tflite):
                tflite_logits[t] = np.fromfile(os.path.join(tmp, f"t{i}.bin"), dtype="<f4").reshape(torch_logits.shape)

    y = labels.numpy()
    max_logit = np.abs(torch_logits).max()
    top1 = torch_logits.argmax(1)
    rows = [("PyTorch float32", args.checkpoint, torch_logits, None)]
    rows.append(("ONNX (modex) in ONNX Runtime", args.onnx, ort_logits, 1e-4 * max_logit + 1e-5))
    for t, logits in tflite_logits.items():
        half = "float16" in os.path.basename(t)
        rows.append((f"TFLite {'fp16' if half else 'fp32'} (modex) in LiteRT", t, logits,
                     1e-2 * max_logit if half else 1e-4 * max_logit + 1e-5))
    print(f"{len(y)} Fashion-MNIST test images, {cfg['architecture']} at {cfg['input_size']}x{cfg['input_size']}")
    print(f"{'format':<32} {'file':<36} {'size':>9} {'top-1 acc':>10} {'agrees':>8} {'max|Δlogit|':>12} {'tolerance':>10}")
    ok = True
    for name, path, logits, tol in rows:
        acc = (logits.argmax(1) == y).mean()
        if tol is None:
            agree = d = None
        else:
            agree = (logits.argmax(1) == top1).mean()
            d = np.abs(logits - torch_logits).max()
            ok &= bool(d <= tol)
            if "fp16" in name:
                ok &= bool(agree == 1.0)
        print(f"{name:<32} {os.path.basename(path):<36} {os.path.getsize(path) / 1e6:>7.1f}MB {100 * acc:>9.1f}% "
              f"{'—' if agree is None else f'{100 * agree:.1f}%':>8} {'—' if d is None else f'{d:.1e}':>12} "
              f"{'—' if tol is None else f'{tol:.1e}':>10}")
    print("float32: max|Δ| <= 1e-4·max|logit| + 1e-5; float16: max|Δ| <= 1e-2·max|logit| and the same top-1: "
          + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
