#!/usr/bin/env bash
# CPU benchmark: prefill and decode throughput of a mid-size DeepSeek-V3-style
# model (bench/cpu/mid.json: hidden 1024, 8 layers, 32 experts top-4 + 1
# shared, MLA with q LoRA; random weights) and the GFLOP/s they achieve
# against the machine's OpenBLAS SGEMM rate measured in the same run.
#   bench/cpu/run.sh [PROMPT_TOKENS (512)] [NEW_TOKENS (64)] [THREADS (nproc)]
#   DS_COMPILE_FLAGS="--no-fuse" / "--quant=fp8" pass extra ds-compile flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
prompt=${1:-512}
new=${2:-64}
threads=${3:-$(nproc)}
build=${BUILD_DIR:-build}
py=/usr/bin/python3

if [ ! -x "$build/bin/ds-compile" ] || [ ! -f "$build/lib/libdsrt.a" ]; then
  echo "bench: build ds first (scripts/test.sh or scripts/demo.sh)" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

c++ -O2 -std=c++17 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/cpu/sgemm.cpp -lopenblas -o "$out/sgemm"
# shellcheck disable=SC2086
"$build/bin/ds-compile" bench/cpu/mid.json -o "$out/mid" --target=cpu --max-seq-len=$((prompt + new)) ${DS_COMPILE_FLAGS:-}
echo "model: bench/cpu/mid.json ${DS_COMPILE_FLAGS:-(default flags)}"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "machine: $cpu, $(nproc) cores, threads $threads"
yard=$("$out/sgemm" 1024 1024 1024 "$threads")
echo "$yard"
rate=$(echo "$yard" | sed -n 's/^sgemm.*: \([0-9.]*\) GFLOP.*/\1/p')
bw=$(echo "$yard" | sed -n 's/^copy: \([0-9.]*\) GB.*/\1/p')

ids=$($py -c "print(','.join(str((i * 7919) % 32000) for i in range($prompt)))")
"$out/mid" --prompt-ids "$ids" --max-new-tokens "$new" --threads "$threads" --seed 1 > "$out/run.txt"
timing=$(grep '^timing:' "$out/run.txt")
echo "$timing"
read -r pf df db < <($py bench/cpu/flops.py bench/cpu/mid.json "$prompt" "$new" | awk '{print $2}' | paste -sd' ')
$py - "$timing" "$pf" "$df" "$db" "$rate" "$bw" <<'PY'
import re, sys
timing = sys.argv[1]
pf, df, db, rate, bw = map(float, sys.argv[2:])
m = re.match(r"timing: prefill (\d+) tokens in ([\d.]+) ms \(([\d.]+) tok/s\), decode (\d+) tokens in ([\d.]+) ms \(([\d.]+) tok/s\)", timing)
pn, pms, ptok, dn, dms, dtok = m.groups()
pg = pf / (float(pms) / 1e3) / 1e9
dg = df / (float(dms) / 1e3) / 1e9 if float(dms) > 0 else 0.0
print(f"prefill: {pn} tokens, {float(ptok):.1f} tok/s, {pg:.1f} GFLOP/s ({100 * pg / rate:.0f}% of sgemm)")
dbw = db / (float(dms) / 1e3) / 1e9 if float(dms) > 0 else 0.0
print(f"decode:  {dn} tokens, {float(dtok):.1f} tok/s, {dg:.1f} GFLOP/s ({100 * dg / rate:.0f}% of sgemm), "
      f"{db / max(int(dn), 1) / 1e6:.0f} MB read per token, {dbw:.1f} GB/s ({100 * dbw / bw:.0f}% of copy bandwidth)")
PY
