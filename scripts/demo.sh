#!/usr/bin/env bash
# make demo: a real trained checkpoint -> ONNX, verified against PyTorch in ONNX Runtime.
set -euo pipefail
modex="$(realpath "$1")"
cache="$2"
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/out/demo"
ckpt="$cache/demo-v2/fashion_mnist_resnet18.pth"  # v2: the config says how images were resized

if [ ! -f "$ckpt" ]; then
  echo "== training the demo classifier (resnet18 on Fashion-MNIST, about a minute; cached in $cache/demo-v2)"
  /usr/bin/python3 "$here/scripts/train_demo.py" "$ckpt"
fi

echo
echo "== modex export --checkpoint $ckpt --format both --quantize none,float16 --output-dir $out"
"$modex" export --checkpoint "$ckpt" --format both --quantize none,float16 --output-dir "$out"

echo
echo "== modex inspect $out/fashion_mnist_resnet18.onnx"
"$modex" inspect "$out/fashion_mnist_resnet18.onnx"

echo
echo "== modex inspect $out/fashion_mnist_resnet18_float16.tflite"
"$modex" inspect "$out/fashion_mnist_resnet18_float16.tflite"

echo
echo "== verification: PyTorch (the checkpoint) against ONNX Runtime and LiteRT (the exported files)"
/usr/bin/python3 "$here/scripts/verify_demo.py" --checkpoint "$ckpt" --onnx "$out/fashion_mnist_resnet18.onnx" \
  --tflite "$out/fashion_mnist_resnet18.tflite" --tflite "$out/fashion_mnist_resnet18_float16.tflite"

echo
echo "== Fashion-MNIST test images as a class-folder dataset: $out/images/val/<class>/"
/usr/bin/python3 - "$out/images" <<'PY'
import gzip, sys
from pathlib import Path
import numpy as np
from PIL import Image
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
root = Path(sys.argv[1])
data = Path("/usr/share/datasets/fashion-mnist")
images = np.frombuffer(gzip.open(data / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
labels = np.frombuffer(gzip.open(data / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
for i in range(len(images) - 1000, len(images)):  # the 1,000 images verify_demo.py uses
    folder = root / "val" / names[labels[i]].replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(images[i]).save(folder / f"{i}.png")
PY

echo
first="$(ls "$out/images/val/Sandal" | head -n 1)"
echo "== modex predict $out/fashion_mnist_resnet18_float16.tflite $out/images/val/Sandal/$first"
"$modex" predict "$out/fashion_mnist_resnet18_float16.tflite" "$out/images/val/Sandal/$first" --top 3

echo
echo "== modex compare (checkpoint, ONNX, TFLite fp32, TFLite fp16) on the 1,000 images, in modex's engine"
"$modex" compare "$ckpt" "$out/fashion_mnist_resnet18.onnx" "$out/fashion_mnist_resnet18.tflite" \
  "$out/fashion_mnist_resnet18_float16.tflite" --data-dir "$out/images"
