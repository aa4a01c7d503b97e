#!/usr/bin/python3
"""Prints the verification table of `make demo`: the checkpoint run in PyTorch against the files
modex exported, the .onnx run in ONNX Runtime and each .tflite in LiteRT, on Fashion-MNIST test
images. Tolerances (issues 2, 3 and 5): float32 max|Δlogit| <= 1e-4·max|logit| + 1e-5; float16
weights max|Δlogit| <= 1e-2·max|logit| and the same top-1 class on every image; int8 (full-integer,
calibrated) accuracy within 1.0 point of PyTorch float32. An int8 model's input is quantized with
the scale and zero point `modex inspect --json` reads from the file, its int8 logits dequantized.

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
    ap.add_argument("--modex", default=os.path.join(REPO, "build", "modex"),
                    help="modex binary, to read int8 models' input/output quantization")
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
    out_quant = {}  # int8/uint8 outputs: file -> (dtype, scale, zero point)
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
            x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1), dtype="<f4")
            jobs = {"jobs": []}
            for i, t in enumerate(args.tflite):
                info = json.loads(subprocess.run([args.modex, "inspect", t, "--json"], check=True,
                                                 capture_output=True, text=True).stdout)
                tin, tout = info["inputs"][0], info["outputs"][0]
                xh_path = os.path.join(tmp, f"x{i}.bin")
                if tin["type"] in ("int8", "uint8"):
                    q = tin["quantization"]
                    lo, hi = (-128, 127) if tin["type"] == "int8" else (0, 255)
                    xq = np.clip(np.round(x_nhwc / q["scale"][0]) + q["zero_point"][0], lo, hi)
                    xq.astype(tin["type"]).tofile(xh_path)
                else:
                    x_nhwc.tofile(xh_path)
                if tout["type"] in ("int8", "uint8"):
                    out_quant[t] = (tout["type"], tout["quantization"]["scale"][0], tout["quantization"]["zero_point"][0])
                jobs["jobs"].append({"id": str(i), "model": os.path.abspath(t), "output": os.path.join(tmp, f"t{i}.bin"),
                                     "inputs": [{"file": xh_path, "dims": list(x_nhwc.shape), "dtype": tin["type"]}]})
            with open(os.path.join(tmp, "tjobs.json"), "w") as f:
                json.dump(jobs, f)
            subprocess.run(["node", os.path.join(REPO, "tests", "oracle", "litert_run.mjs"),
                            os.path.join(tmp, "tjobs.json"), os.path.join(tmp, "tresults.json")], check=True)
            for i, t in enumerate(args.tflite):
                path = os.path.join(tmp, f"t{i}.bin")
                if t in out_quant:
                    dtype, scale, zp = out_quant[t]
                    q = np.fromfile(path, dtype=dtype).astype(np.float32)
                    tflite_logits[t] = ((q - zp) * scale).reshape(torch_logits.shape)
                else:
                    tflite_logits[t] = np.fromfile(path, dtype="<f4").reshape(torch_logits.shape)

    y = labels.numpy()
    max_logit = np.abs(torch_logits).max()
    top1 = torch_logits.argmax(1)
    rows = [("PyTorch float32", args.checkpoint, torch_logits, None)]
    rows.append(("ONNX (modex) in ONNX Runtime", args.onnx, ort_logits, 1e-4 * max_logit + 1e-5))
    for t, logits in tflite_logits.items():
        kind = "int8" if t in out_quant or "int8" in os.path.basename(t) else \
            "fp16" if "float16" in os.path.basename(t) else "fp32"
        tol = {"fp32": 1e-4 * max_logit + 1e-5, "fp16": 1e-2 * max_logit, "int8": "acc"}[kind]
        rows.append((f"TFLite {kind} (modex) in LiteRT", t, logits, tol))
    print(f"{len(y)} Fashion-MNIST test images, {cfg['architecture']} at {cfg['input_size']}x{cfg['input_size']}")
    print(f"{'format':<32} {'file':<36} {'size':>9} {'top-1 acc':>10} {'agrees':>8} {'max|Δlogit|':>12} {'tolerance':>10}")
    ok = True
    torch_acc = (top1 == y).mean()
    for name, path, logits, tol in rows:
        acc = (logits.argmax(1) == y).mean()
        if tol is None:
            agree = d = None
            tol_text = "—"
        else:
            agree = (logits.argmax(1) == top1).mean()
            d = np.abs(logits - torch_logits).max()
            if tol == "acc":  # int8: judged by accuracy, not by logits
                ok &= bool(acc >= torch_acc - 0.01)
                tol_text = "acc -1.0pt"
            else:
                ok &= bool(d <= tol)
                tol_text = f"{tol:.1e}"
            if "fp16" in name:
                ok &= bool(agree == 1.0)
        print(f"{name:<32} {os.path.basename(path):<36} {os.path.getsize(path) / 1e6:>7.1f}MB {100 * acc:>9.1f}% "
              f"{'—' if agree is None else f'{100 * agree:.1f}%':>8} {'—' if d is None else f'{d:.1e}':>12} "
              f"{tol_text:>10}")
    print("float32: max|Δ| <= 1e-4·max|logit| + 1e-5; float16: max|Δ| <= 1e-2·max|logit| and the same top-1; "
          "int8: accuracy >= PyTorch's - 1.0 point: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
