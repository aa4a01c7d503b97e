#!/usr/bin/python3
"""Prints the verification table of `make demo`: the checkpoint run in PyTorch against the file
modex exported, run in ONNX Runtime, on Fashion-MNIST test images.

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

    y = labels.numpy()
    max_logit = np.abs(torch_logits).max()
    diff = np.abs(ort_logits - torch_logits).max()
    tol = 1e-4 * max_logit + 1e-5
    rows = [
        ("PyTorch float32", os.path.basename(args.checkpoint), os.path.getsize(args.checkpoint),
         (torch_logits.argmax(1) == y).mean(), None, None),
        ("ONNX (modex) in ONNX Runtime", os.path.basename(args.onnx), os.path.getsize(args.onnx),
         (ort_logits.argmax(1) == y).mean(), (ort_logits.argmax(1) == torch_logits.argmax(1)).mean(), diff),
    ]
    print(f"{len(y)} Fashion-MNIST test images, {cfg['architecture']} at {cfg['input_size']}x{cfg['input_size']}")
    print(f"{'format':<30} {'file':<30} {'size':>9} {'top-1 acc':>10} {'agrees':>8} {'max|Δlogit|':>12}")
    for name, file, size, acc, agree, d in rows:
        print(f"{name:<30} {file:<30} {size / 1e6:>7.1f}MB {100 * acc:>9.1f}% "
              f"{'—' if agree is None else f'{100 * agree:.1f}%':>8} {'—' if d is None else f'{d:.1e}':>12}")
    ok = diff <= tol
    print(f"tolerance max|Δ| <= 1e-4·max|logit| + 1e-5 = {tol:.1e}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
