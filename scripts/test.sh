#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs every test (lit and
# GoogleTest). Exits non-zero on any failure.
#   BUILD_DIR=build-asan DS_CMAKE_ARGS=-DDS_SANITIZE=address,undefined scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Sanitizer builds: Debian's libMLIR is not instrumented, but LLVM's inline
# BumpPtrAllocator code compiled into our instrumented objects poisons slabs
# that libMLIR then allocates from, which ASan reports as use-after-poison.
# Ignore manual poisoning (heap overflow/use-after-free checks stay on).
export ASAN_OPTIONS="allow_user_poisoning=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
mkdir -p "$build"
# shellcheck disable=SC2086
cmake -G Ninja -B "$build" -S . \
  -DCMAKE_BUILD_TYPE=Release \
  -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
  -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit \
  ${DS_CMAKE_ARGS:-} >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
echo "test: building in $build (-j$jobs)"
ninja -C "$build" -j "$jobs" all

# The committed reference must match ODS.
ninja -C "$build" ds-docs >/dev/null
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- docs/reference; then
  echo "test: docs/reference is out of date with ODS: commit the regenerated files" >&2
  git --no-pager diff --stat -- docs/reference >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
echo "test: lit"
/usr/lib/llvm-22/bin/lit -sv "$build/test" 2>&1 | tee "$log" || status=1
lit_passed=$(sed -n 's/^ *Passed *: *\([0-9]*\).*/\1/p' "$log" | tail -1)
lit_failed=$(grep -Ec '^ *(FAIL|XPASS|UNRESOLVED|TIMEOUT):' "$log" || true)

echo "test: unit tests"
(cd "$build" && ctest --output-on-failure -L unit) 2>&1 | tee "$log" || status=1
unit_passed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2 \1/p' "$log" | awk '{print $1-$2}')
unit_failed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of.*/\1/p' "$log")

passed=$(( ${lit_passed:-0} + ${unit_passed:-0} ))
failed=$(( ${lit_failed:-0} + ${unit_failed:-0} ))
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "tests: $passed passed, $failed failed"
exit $status
