#!/usr/bin/env bash
# Installs everything modex needs to build and test on Debian 12: the build dependencies, the
# test oracles (PyTorch, ONNX, ONNX Runtime, LiteRT) and the datasets. Idempotent: packages
# already present are not reinstalled, so repeated runs take a second.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

packages=(
  # build
  cmake g++ make pkg-config
  libonnx-dev libprotobuf-dev protobuf-compiler
  libxnnpack-dev libpthreadpool-dev
  flatbuffers-compiler libflatbuffers-dev
  libzip-dev libjpeg62-turbo-dev libpng-dev
  libcpp-httplib-dev nlohmann-json3-dev libcli11-dev libfmt-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # fuzzing (make fuzz)
  clang libclang-rt-14-dev
  # test oracles and data
  python3-torch python3-torchvision python3-onnx python3-numpy python3-pytest python3-pil
  libonnx-testdata dataset-fashion-mnist
  # load test of modex serve (make bench, tests/oracle/test_serve.py)
  wrk curl
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Oracles from npm (ONNX Runtime's install script only fetches GPU extras: skip it).
oracles="$here/tools/oracles"
if [ ! -f "$oracles/node_modules/.modex-installed" ] || [ "$oracles/package-lock.json" -nt "$oracles/node_modules/.modex-installed" ]; then
  echo "install-deps: npm ci (onnxruntime-node, @litertjs/core)"
  (cd "$oracles" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  touch "$oracles/node_modules/.modex-installed"
fi
echo "install-deps: ok"
