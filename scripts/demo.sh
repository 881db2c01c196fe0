#!/usr/bin/env bash
# The main job: compile the embedded default model (models/tiny.mlir, a tiny
# DeepSeek-V3) for the CPU and generate 16 tokens with its deterministic
# random weights. Also prints DeepSeek-V3's statistics from its config.json.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build}
if [ ! -x "$build/bin/ds-compile" ] || [ ! -f "$build/lib/libdsrt.a" ]; then
  scripts/setup.sh
  echo "demo: building ds (first run only)"
  cmake -G Ninja -B "$build" -S . -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
  ninja -C "$build" ds-opt ds-translate ds-compile dsrt
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "demo: ds-compile models/tiny.mlir --target=cpu"
"$build/bin/ds-compile" models/tiny.mlir -o "$out/tiny" --target=cpu --max-seq-len=256
echo "demo: generating 16 tokens (random weights, seed 0)"
"$out/tiny" --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 16

echo "demo: DeepSeek-V3 (models/configs/deepseek-v3.json) model statistics:"
"$build/bin/ds-translate" --import-hf-config models/configs/deepseek-v3.json -o "$out/deepseek-v3.mlir"
"$build/bin/ds-opt" --ds-model-stats "$out/deepseek-v3.mlir"
