#!/usr/bin/env bash
# The main job, as far as it exists: import DeepSeek-V3's published
# config.json into the ds dialect and print its model statistics.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
if [ ! -x "$build/bin/ds-opt" ] || [ ! -x "$build/bin/ds-translate" ]; then
  scripts/setup.sh
  cmake -G Ninja -B "$build" -S . -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
  ninja -C "$build" ds-opt ds-translate
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "demo: importing models/configs/deepseek-v3.json"
"$build/bin/ds-translate" --import-hf-config models/configs/deepseek-v3.json -o "$out/deepseek-v3.mlir"
echo "demo: $(grep -c 'ds.weight' "$out/deepseek-v3.mlir") checkpoint tensors; model statistics:"
"$build/bin/ds-opt" --ds-model-stats "$out/deepseek-v3.mlir"
