#!/usr/bin/env bash
# CPU throughput of continuous batching and of MTP speculative decoding.
#   bench/cpu/batch.sh [REQUESTS (16)] [PROMPT (64)] [NEW (32)]
# Batching: bench/cpu/mid.json (random weights), REQUESTS requests of PROMPT
# tokens generating NEW tokens each, at --max-batch 1, 2, 4, 8 (tokens/s
# over the whole run). MTP: bench/cpu/mid.json with one MTP module, plain
# greedy vs --speculative=mtp on one prompt (acceptance and tokens/s).
# Random weights draft at chance level, so the MTP numbers measure the
# machinery's cost, not a trained model's speed-up.
set -euo pipefail
cd "$(dirname "$0")/../.."
reqs=${1:-16}
prompt=${2:-64}
new=${3:-32}
build=${BUILD_DIR:-build}
py=/usr/bin/python3
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$build/bin/ds-compile" bench/cpu/mid.json -o "$out/mid" --target=cpu --max-seq-len=$((prompt + new)) --max-batch=8
$py - "$reqs" "$prompt" "$new" > "$out/requests.jsonl" <<'PY'
import json, sys
r, p, n = map(int, sys.argv[1:])
for i in range(r):
    print(json.dumps({"id": i, "prompt_ids": [(i * 131 + j * 7919) % 32000 for j in range(p)], "max_new_tokens": n}))
PY
echo "machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
echo "batching: $reqs requests x ($prompt prompt + $new new tokens), bench/cpu/mid.json"
for b in 1 2 4 8; do
  "$out/mid" --requests "$out/requests.jsonl" --max-batch "$b" --seed 1 --output "$out/r$b.jsonl" 2> "$out/e$b.txt"
  echo "  max-batch $b: $(grep '^batch:' "$out/e$b.txt")"
done

$py - bench/cpu/mid.json > "$out/mid-mtp.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["num_nextn_predict_layers"] = 1
print(json.dumps(c, indent=2))
PY
"$build/bin/ds-compile" "$out/mid-mtp.json" -o "$out/midmtp" --target=cpu --max-seq-len=$((prompt + 128))
ids=$($py -c "print(','.join(str((j * 7919) % 32000) for j in range($prompt)))")
echo "mtp: one prompt of $prompt tokens, 128 new tokens, bench/cpu/mid.json + 1 MTP module"
"$out/midmtp" --prompt-ids "$ids" --max-new-tokens 128 --seed 1 > "$out/plain.txt"
"$out/midmtp" --prompt-ids "$ids" --max-new-tokens 128 --seed 1 --speculative=mtp > "$out/spec.txt"
echo "  plain:       $(grep '^timing:' "$out/plain.txt")"
echo "  speculative: $(grep '^timing:' "$out/spec.txt")"
echo "  $(grep '^mtp.acceptance:' "$out/spec.txt")"
if diff <(grep '^tokens:' "$out/plain.txt") <(grep '^tokens:' "$out/spec.txt") >/dev/null; then
  echo "  tokens identical"
else
  echo "  TOKENS DIFFER" && exit 1
fi
