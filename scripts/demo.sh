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
