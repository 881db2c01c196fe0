#!/usr/bin/env bash
# Installs the Debian packages ds needs that are missing. Idempotent: silent when
# everything is present, otherwise names what it installs. See ../shared/TOOLCHAIN.md.
set -euo pipefail

pkgs=(
  # MLIR/LLVM 22 (from bookworm-security) and the small -dev libraries LLVM's CMake demands.
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  zlib1g-dev libzstd-dev libedit-dev libcurl4-openssl-dev
  # Build tools.
  cmake ninja-build g++
  # Runtime: BLAS for the CPU backend, MPI for multi-rank runs, GoogleTest for unit tests.
  libopenblas-dev libopenmpi-dev openmpi-bin libgtest-dev
  # Independent numpy reference used by the end-to-end tests (under /usr/bin/python3).
  python3-numpy
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
