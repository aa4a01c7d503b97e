#!/usr/bin/env bash
# make demo: a real trained checkpoint -> ONNX + TFLite float32 / float16 / int8, verified against
# PyTorch in ONNX Runtime and LiteRT, then used with predict and compare.
set -euo pipefail
modex="$(realpath "$1")"
cache="$2"
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/out/demo"
ckpt="$cache/demo-v2/fashion_mnist_resnet18.pth"  # v2: the config says how images were resized
m="$out/fashion_mnist_resnet18"

if [ ! -f "$ckpt" ]; then
  echo "== training the demo classifier (resnet18 on Fashion-MNIST, about a minute; cached in $cache/demo-v2)"
  /usr/bin/python3 "$here/scripts/train_demo.py" "$ckpt"
fi

echo
echo "== Fashion-MNIST as class-folder datasets: $out/calib/<class>/ (training images, for int8 calibration)"
echo "   and $out/images/val/<class>/ (the last 1,000 test images, for checking)"
/usr/bin/python3 - "$out" <<'PY'
import gzip, sys
from pathlib import Path
import numpy as np
from PIL import Image
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
root = Path(sys.argv[1])
data = Path("/usr/share/datasets/fashion-mnist")
def split(prefix):
    images = np.frombuffer(gzip.open(data / f"{prefix}-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(data / f"{prefix}-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    return images, labels
def write(folder, images, labels, indices):
    for i in indices:
        d = folder / names[labels[i]].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(d / f"{i}.png")
train_x, train_y = split("train")
write(root / "calib", train_x, train_y, range(len(train_x) - 500, len(train_x)))
test_x, test_y = split("t10k")
write(root / "images" / "val", test_x, test_y, range(len(test_x) - 1000, len(test_x)))  # what verify_demo.py uses
PY

echo
echo "== modex export --checkpoint $ckpt --format both --quantize none,float16,int8 --dataset-dir $out/calib --output-dir $out"
"$modex" export --checkpoint "$ckpt" --format both --quantize none,float16,int8 \
  --dataset-dir "$out/calib" --num-calib-samples 100 --output-dir "$out"

echo
echo "== modex inspect $m.onnx"
"$modex" inspect "$m.onnx"

echo
echo "== modex inspect ${m}_int8.tflite"
"$modex" inspect "${m}_int8.tflite"

echo
echo "== verification: PyTorch (the checkpoint) against ONNX Runtime and LiteRT (the exported files)"
/usr/bin/python3 "$here/scripts/verify_demo.py" --modex "$modex" --checkpoint "$ckpt" --onnx "$m.onnx" \
  --tflite "$m.tflite" --tflite "${m}_float16.tflite" --tflite "${m}_int8.tflite"

echo
first="$(ls "$out/images/val/Sandal" | head -n 1)"
echo "== modex predict ${m}_int8.tflite $out/images/val/Sandal/$first"
"$modex" predict "${m}_int8.tflite" "$out/images/val/Sandal/$first" --top 3

echo
echo "== modex compare (checkpoint, ONNX, TFLite fp32, fp16, int8) on the 1,000 images, in modex's engine"
"$modex" compare "$ckpt" "$m.onnx" "$m.tflite" "${m}_float16.tflite" "${m}_int8.tflite" --data-dir "$out/images"
