#!/usr/bin/env bash
# GPU check and benchmark of the CUDA backend, in two halves, because the
# machine with the GPU has no MLIR (ds-compile runs here) and the machine
# with MLIR has no GPU:
#
#   bench/gpu/run.sh prepare DIR   # here: compile every end-to-end model for
#                                  # the CPU and for CUDA (f32, bf16), run the
#                                  # CPU backend for the references, compile
#                                  # the benchmark model; pack DIR.tar.gz
#   bench/gpu/run.sh device DIR    # on the GPU machine, after unpacking:
#                                  # correctness vs the CPU backend, the
#                                  # sanitizer, the benchmark, PyTorch
#
# device checks: every model in f32 (rel < 1e-4 to the CPU logits of the
# prefill and of the decode steps, same greedy tokens, batch mode and MTP
# speculation too; a failing case is re-run
# with each of DS_CUDA_PDL=0, DS_CUDA_GEMV_ROWS=0, DS_CUDA_GRAPHS=0,
# DS_CUDA_MOE_SORT=kernel, DS_CUDA_MOE_COMBINE=kernel, DS_CUDA_MLA_COMBINE=kernel,
# DS_CUDA_MOE_GEMV=simt to name the path at fault), bf16 on the tiny models
# (rel < 2e-2, the decode steps' where the tokens agree; v3-long's 120-token prefill takes the grouped-GEMM experts,
# and again as cuBLAS batches: DS_CUDA_MOE_GEMM=batched; bench-mini is the
# benchmark model's architecture at hidden 256, 3 layers, in f32 and bf16),
# compute-sanitizer memcheck on tiny. Benchmark
# (bench/gpu/model.json = ../shared/bench/torch_baseline.py's model, random
# bf16 weights): decode ms/step at batch 1 and 32 with a 1024-token context,
# prefill of 2048 tokens; then torch_baseline.py (phases main, grouped) in
# the same call; then, time permitting, the experts' grouped GEMV form by
# form at 1 to 16 rows per expert (ds-gemv-bench: GB/s against the copy
# rate, and the forms' agreement), decode B=1 without programmatic
# dependent launch (DS_CUDA_PDL=0) and with the dense GEMMs on cuBLASLt
# (DS_CUDA_GEMV_ROWS=0) and with the decode attention on CUDA cores
# (DS_CUDA_MLA_DECODE=simt) and with the experts' sort, the experts' combine
# and the attention's split combine as launches of their own
# (DS_CUDA_MOE_SORT=kernel, DS_CUDA_MOE_COMBINE=kernel,
# DS_CUDA_MLA_COMBINE=kernel), decode B=32 with the experts' GEMVs on CUDA
# cores (DS_CUDA_MOE_GEMV=simt) and with its dense GEMMs on the GEMV
# kernel (DS_CUDA_GEMV_ROWS=32), and prefill with the routed experts on the
# tiled kernel (DS_CUDA_MOE_GEMM=tiled), for comparison. Results under $OUT (or DIR/out): gpu.txt, baseline.json.
#   bench/gpu/run.sh ncu DIR       # on the GPU machine, in a call of its own
#                                  # (device runs it only with time to spare):
#                                  # two decode steps at B=1 and at B=32 under
#                                  # Nsight Compute (DS_CUDA_PROFILE_STEPS opens
#                                  # its window), each kernel alone with L2
#                                  # flushed: time, DRAM bytes and GB/s per
#                                  # kernel (ncu_summary.py), ncu-b*.csv in $OUT.
# DS_GPU_CHECK_ONLY=1: correctness only; DS_GPU_NO_EXTRAS=1: correctness and
# the benchmark's three runs (no profile, PyTorch, A/B or ncu);
# DS_SKIP_TORCH=1: no PyTorch run.
# NCU: the ncu to run (default: on PATH, else /opt/nvidia/nsight-compute).
# DS_GPU_CASES=tiny,v3 (prepare): only these end-to-end cases (the device
# half checks the cases prepared).
# DS_GPU_EMU=1 prepare: the CUDA executables built against the emulated
# backend (test/CudaEmu; no NCCL run; the benchmark half on the embedded
# default at toy lengths), so that `PYTHON=/usr/bin/python3 run.sh device
# DIR` checks this script, and the cases' numerics, without a GPU (about 5
# minutes on 2 cores for every case). PYTHON: the interpreter with numpy
# (default: python3 on the device, /usr/bin/python3 in prepare).
set -euo pipefail
mode=${1:?usage: bench/gpu/run.sh prepare|device|ncu DIR}
dir=${2:?usage: bench/gpu/run.sh prepare|device|ncu DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)

# name | model source | checkpoint config | seed | dtype | prompt | new tokens | ds-compile flags
# (dtype random: no checkpoint; the model's random weights from the seed,
# drawn alike by every executable, so that nothing large is carried)
# (v3-quant: e4m3 activation rounding turns last-bit differences into code
# steps at rounding boundaries; 3,1,4,1 meets one with this checkpoint, see
# test/e2e/cuda-emu.test, so its prompt avoids that. v3-long: with seed 7
# the router's group choice at position 39 is a near-tie (margin 4e-4) that
# bf16 flips, which moves the prefill logits by 6e-2 (0.5 at that row);
# seed 1 with this prompt is cuda-emu.test's, which bf16 passes.
# bench-mini: the benchmark model's architecture (bench/gpu/model.json:
# 16 heads of 128 + 64 / 128, kv LoRA 512, no q LoRA, 64 experts top-6 + 2
# shared, bf16 weights) at hidden 256 and 3 layers: the kernels at the
# attention dims and expert counts the timed runs take, checked. Random
# weights: its checkpoint would be 35 MB of the 64 MiB a device call
# carries.)
cases() {
  all_cases | awk -F'|' -v only="${DS_GPU_CASES:-}" \
    'BEGIN { gsub(/ /, "", only); n = split(only, w, ","); for (i = 1; i <= n; ++i) keep[w[i]] = 1 }
     n == 0 || ($1 in keep)'
}
all_cases() {
  cat <<'EOF'
tiny|models/tiny.mlir|tiny.json|5|bf16|17,300,5,900,42,7|8|
v3|ckpt|v3.json|1|f32|3,1,4,1,5,9,2,6,5,3|8|
v3-nofuse|ckpt|v3.json|1|f32|3,1,4,1,5,9,2,6,5,3|8|--no-fuse
v3-quant|ckpt|v3.json|1|f32|5,6,7,8,9,10|8|--quant=fp8
v2|ckpt|v2.json|2|f32|3,1,4,1,5,9,2,6,5,3|8|
v2-group|ckpt|v2-group.json|3|f32|3,1,4,1,5,9,2,6,5,3|8|
v3-nolora|ckpt|v3-nolora.json|4|f32|3,1,4,1,5,9,2,6,5,3|8|
v3-mtp|ckpt|v3-mtp.json|11|f32|3,1,4,1,5,9,2,6|24|
v3-fp8|ckpt|v3-fp8.json|6|fp8|3,1,4,1,5,9,2,6,5,3|8|
v3-long|ckpt|v3.json|1|f32|11,48,85,122,159,196,233,14,51,88,125,162,199,236,17,54,91,128,165,202,239,20,57,94,131,168,205,242,23,60,97,134,171,208,245,26,63,100,137,174,211,248,29,66,103,140,177,214,251,32,69,106,143,180,217,254,35,72,109,146,183,220,1,38,75,112,149,186,223,4,41,78,115,152,189,226,7,44,81,118,155,192,229,10,47,84,121,158,195,232,13,50,87,124,161,198,235,16,53,90,127,164,201,238,19,56,93,130,167,204,241,22,59,96,133,170,207,244,25,62|8|
bench-mini|test/e2e/Inputs/bench-mini.json|-|1|random|11,48,85,122,159,196,233,270,307,344,381,418,455,492,17,54,91,128,165,202,239,276,313,350,387,424,461,498,23,60,97,134,171,208,245,282,319,356,393,430,467,504,29,66,103,140,177,214,251,288,325,362,399,436,473,510,35,72,109,146,183,220,257,294,331,368,405,442,479,4,41,78,115,152,189,226,263,300,337,374,411,448,485,10,47,84,121,158,195,232,269,306,343,380,417,454,491,16,53,90|8|
EOF
}

# BIN with a case's weights (the args file's first field): a checkpoint, or
# random:SEED for the model's random weights from SEED.
with_weights() { # BIN WEIGHTS ARGS...
  local bin=$1 w=$2
  shift 2
  case "$w" in
    random:*) "$bin" --seed "${w#random:}" "$@" ;;
    *) "$bin" --weights "$w" "$@" ;;
  esac
}

prepare() {
  local build=${BUILD_DIR:-$root/build} py=${PYTHON:-/usr/bin/python3}
  local dsc="$build/bin/ds-compile" emu=${DS_GPU_EMU:-0}
  [ -x "$dsc" ] || { echo "run.sh: build ds first (scripts/test.sh)" >&2; exit 1; }
  if [ "$emu" = 1 ] && [ ! -x "$build/bin/ds-cuda-emu-cxx" ]; then
    echo "run.sh: DS_GPU_EMU=1 needs $build/bin/ds-cuda-emu-cxx (a build with CUDA)" >&2; exit 1
  fi
  # cuda OUT MODEL FLAGS...: a CUDA executable, nvcc-built or emulated.
  cuda() {
    local exe=$1
    shift
    if [ "$emu" = 1 ]; then
      "$dsc" "$@" --target=cuda --emit=source -o "$exe.cu"
      "$build/bin/ds-cuda-emu-cxx" "$exe.cu" "$exe"
      rm -f "$exe.cu"
    else
      "$dsc" "$@" --target=cuda -o "$exe"
    fi
  }
  local known
  known=$(all_cases | cut -d'|' -f1 | tr '\n' ' ')
  if [ -n "${DS_GPU_CASES:-}" ]; then
    local c
    for c in ${DS_GPU_CASES//,/ }; do
      case " $known" in
        *" $c "*) ;;
        *) echo "run.sh: DS_GPU_CASES: no case '$c' (cases: $known)" >&2; exit 2 ;;
      esac
    done
  fi
  rm -rf "$dir" && mkdir -p "$dir/lib" "$dir/e2e" "$dir/bench"
  # The device half skips what an emulated build cannot take (nvidia-smi,
  # the sanitizer) and says so.
  [ "$emu" = 1 ] && echo "emulated (DS_GPU_EMU=1): no GPU, the CUDA backend's kernels on the CPU" > "$dir/emulated"
  cp "$root/test/e2e/compare.py" "$root/test/e2e/batch_check.py" "$root/bench/gpu/ncu_summary.py" "$dir/"
  # The experts' grouped GEMV form by form (bench/gpu/GemvBench.h).
  if [ "$emu" = 1 ]; then cp "$build/bin/ds-gemv-bench-emu" "$dir/gemv-bench"
  else cp "$build/bin/ds-gemv-bench" "$dir/gemv-bench"; fi
  cp "$0" "$dir/run.sh"
  if [ -f "$root/../shared/bench/torch_baseline.py" ]; then
    cp "$root/../shared/bench/torch_baseline.py" "$dir/bench/"
  fi
  if [ "$emu" != 1 ]; then # emulated runs happen here, with these
    # The executables' host libraries that a CUDA image may lack, Open MPI's
    # among them (the NCCL checks run one rank as an MPI singleton; NCCL
    # itself is too big to carry: the device takes PyTorch's libnccl).
    for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libmpi.so.40 \
               libopen-rte.so.40 libopen-pal.so.40 libhwloc.so.15 libevent_core-2.1.so.7 \
               libevent_pthreads-2.1.so.7 libudev.so.1; do
      cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" "$dir/lib/$lib"
    done
    local ompi
    ompi=$(dirname "$(ldconfig -p | awk '$1 == "libmpi.so.40" {print $NF; exit}')")
    ompi=$(readlink -f "$ompi")
    [ -d "$ompi/openmpi/lib/openmpi3" ] && cp -r "$ompi/openmpi/lib/openmpi3" "$dir/ompi-mca"
    [ -x "$build/bin/dsrt-comm-nccl-test" ] && cp "$build/bin/dsrt-comm-nccl-test" "$dir/"
  fi
  local requests='{"id": "a", "prompt_ids": [3,1,4,1,5,9,2,6], "max_new_tokens": 8}
{"id": "b", "prompt_ids": [7], "max_new_tokens": 12}
{"id": "c", "prompt_ids": [10,20,30,40,50,60,70,80,90,100,110,120], "max_new_tokens": 5}
{"id": "d", "prompt_ids": [5,5,5], "max_new_tokens": 16}'
  while IFS='|' read -r name src cfg seed dtype prompt new flags; do
    local d="$dir/e2e/$name"
    mkdir -p "$d"
    echo "prepare: $name"
    local model="$d/ckpt" weights="ckpt"
    if [ "$dtype" = random ]; then
      model="$root/$src"
      weights="random:$seed"
    else
      "$py" "$root/test/e2e/make_checkpoint.py" --config "$root/test/e2e/Inputs/$cfg" \
        --out "$d/ckpt" --seed "$seed" --dtype "$dtype" > /dev/null
      if [ "$src" != ckpt ]; then model="$root/$src"; weights="ckpt/model.safetensors"; fi
    fi
    # v3-long: a 120-token prompt, so the prefill's experts run as grouped
    # GEMMs (tensor cores in bf16, SIMT in f32), not the decode GEMVs.
    local seqlen=64
    [ "$name" = v3-long ] || [ "$name" = bench-mini ] && seqlen=192
    # shellcheck disable=SC2086
    "$dsc" "$model" -o "$d/cpu" --max-seq-len=$seqlen --max-batch=4 $flags
    # shellcheck disable=SC2086
    cuda "$d/f32" "$model" --compute-dtype=f32 --max-seq-len=$seqlen --max-batch=4 $flags
    if [ "$name" = v3 ] && [ "$emu" != 1 ] && [ -x "$build/bin/dsrt-comm-nccl-test" ]; then
      # The multi-rank runtime (MPI main, NCCL communicators) on one rank.
      # shellcheck disable=SC2086
      "$dsc" "$model" -o "$d/nccl" --target=cuda --compute-dtype=f32 --mpi --max-seq-len=64 --max-batch=4 $flags
    fi
    if [ "$name" = tiny ] || [ "$name" = v3 ] || [ "$name" = v3-long ] ||
       [ "$name" = bench-mini ]; then
      # shellcheck disable=SC2086
      cuda "$d/bf16" "$model" --compute-dtype=bf16 --max-seq-len=$seqlen --max-batch=4 $flags
    fi
    echo "$weights|$prompt|$new" > "$d/args"
    (cd "$d" && with_weights ./cpu "$weights" --prompt-ids "$prompt" --max-new-tokens "$new" \
      --dump-logits cpu.npy --dump-decode-logits cpu-d.npy > cpu.txt)
    printf '%s\n' "$requests" > "$d/requests.jsonl"
    (cd "$d" && with_weights ./cpu "$weights" --requests requests.jsonl --max-batch 4 \
      --output cpu-batch.jsonl 2> /dev/null)
    if [ "$name" = v3-mtp ]; then
      (cd "$d" && with_weights ./cpu "$weights" --prompt-ids "$prompt" --max-new-tokens "$new" \
        --speculative=mtp --dump-decode-logits cpu-spec-d.npy > cpu-spec.txt)
    fi
    if [ "$name" = bench-mini ]; then
      # Its first 40 tokens: a prefill of grouped GEMVs (up to 64 tokens) at
      # about 4 rows an expert, which bf16 runs on tensor cores.
      (cd "$d" && with_weights ./cpu "$weights" --prompt-ids "$(echo "$prompt" | cut -d, -f1-40)" \
        --max-new-tokens 2 --dump-logits cpu40.npy > cpu40.txt)
    fi
    rm -f "$d/cpu"
  done < <(cases)
  echo "prepare: benchmark model"
  # bench/params: context, new tokens at B=1 and B=32 (and in their
  # profiles), prefill tokens, vocab; then what the model is.
  if [ "$emu" != 1 ]; then
    "$dsc" "$root/bench/gpu/model.json" -o "$dir/bench/decode" --target=cuda --max-seq-len=1280 --max-batch=32
    "$dsc" "$root/bench/gpu/model.json" -o "$dir/bench/prefill" --target=cuda --max-seq-len=2112
    echo "1024 129 65 17 9 2048 102400 bench/gpu/model.json (16B-A3B, random bf16 weights)" > "$dir/bench/params"
  else
    # The embedded default at toy lengths: the script's logic, no timings.
    cuda "$dir/bench/decode" "$root/models/tiny.mlir" --max-seq-len=32 --max-batch=32
    cuda "$dir/bench/prefill" "$root/models/tiny.mlir" --max-seq-len=32
    echo "8 3 3 3 3 24 1024 models/tiny.mlir (emulated: the script's logic only, not timings)" > "$dir/bench/params"
  fi
  if [ "$emu" != 1 ]; then
    tar -C "$(dirname "$dir")" -czf "$dir.tar.gz" "$(basename "$dir")"
    du -sh "$dir.tar.gz"
    # The device tool carries at most 64 MiB of ignored paths per call.
    local bytes
    bytes=$(stat -c %s "$dir.tar.gz")
    if [ "$bytes" -gt $((64 << 20)) ]; then
      echo "run.sh: $dir.tar.gz is $((bytes >> 20)) MiB, over the 64 MiB a device call carries; leave cases out with DS_GPU_CASES" >&2
      exit 1
    fi
  fi
}

device() {
  local out=${OUT:-$dir/out} py=${PYTHON:-python3}
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local report="$out/gpu.txt" failed=0
  : > "$report"
  say() { echo "$*" | tee -a "$report"; }
  if [ -f "$dir/emulated" ]; then
    say "$(cat "$dir/emulated")"
  else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$report"
  fi
  # The benchmark's inputs: a context of token ids, and 32 requests of it.
  local ctx new1 new32 pnew pnew32 plen vocab what ids
  read -r ctx new1 new32 pnew pnew32 plen vocab what < "$dir/bench/params"
  ids=$("$py" -c "print(','.join(str((i * 7919 + 13) % $vocab) for i in range($ctx)))")
  requests32() { # NEW: 32 requests of the context's length
    "$py" - "$ids" "$vocab" "$1" <<'PY'
import json, sys
ids, vocab, new = [int(t) for t in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
for r in range(32):
    print(json.dumps({"id": r, "prompt_ids": [(t + 31 * r) % vocab for t in ids], "max_new_tokens": new}))
PY
  }
  requests32 "$new32" > "$dir/bench/requests32.jsonl"
  requests32 "$pnew32" > "$dir/bench/requests32s.jsonl"
  # Two decode steps (graph replays) at B=1 and at B=32 under Nsight
  # Compute: its window opened by DS_CUDA_PROFILE_STEPS, every kernel run
  # alone with L2 flushed (ncu's default), so that each kernel's DRAM bytes
  # over its time say how far it is from the copy rate.
  ncu_steps() {
    # NCU: the profiler (default: ncu on PATH, else Nsight Compute's own
    # directory, where CUDA images keep it).
    local ncu=${NCU:-}
    if [ -z "$ncu" ]; then
      ncu=$(command -v ncu || true)
      local c
      for c in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
        [ -z "$ncu" ] && [ -x "$c" ] && ncu=$c
      done
    fi
    if [ -z "$ncu" ] || [ ! -x "$ncu" ]; then
      say "== ncu: skipped (no ncu on PATH, nor in /opt/nvidia/nsight-compute)"
      return 0
    fi
    say "== ncu: decode steps, each kernel alone with L2 flushed (Nsight Compute) (at ${SECONDS} s)"
    local copy="" metrics b steps first count r
    [ -f "$out/baseline.json" ] && copy=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["ceilings"]["copy_GBps"])' "$out/baseline.json" 2> /dev/null || true)
    metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
    metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread
    # The steps' time without ncu (graph replays), from the benchmark's
    # runs, or (ncu alone) from the same runs here.
    if [ ! -f "$dir/bench/decode1.txt" ]; then
      (cd "$dir/bench" && ./decode --prompt-ids "$ids" --max-new-tokens "$new1" --seed 1 > decode1.txt 2> decode1.err) || true
      (cd "$dir/bench" && ./decode --requests requests32.jsonl --max-batch 32 --seed 1 --output /dev/null 2> decode32.err) || true
    fi
    local ms1 ms32 stepms
    ms1=$(sed -n 's/^timing:.* decode \([0-9]*\) tokens in \([0-9.]*\) ms.*/\2 \1/p' "$dir/bench/decode1.txt" 2> /dev/null | awk '$2 > 0 {print $1 / $2}')
    ms32=$(sed -n 's/^batch:.*, \([0-9.]*\) ms each).*/\1/p' "$dir/bench/decode32.err" 2> /dev/null || true)
    for b in 1 32; do
      local run=(./decode --prompt-ids "$ids" --max-new-tokens "$pnew" --seed 1)
      steps=$((pnew - 1)) stepms=$ms1
      if [ "$b" = 32 ]; then
        run=(./decode --requests requests32s.jsonl --max-batch 32 --seed 1 --output /dev/null)
        steps=$((pnew32 - 1)) stepms=$ms32
      fi
      # Steps 1 and 2 run eagerly and capture the graph; 3 on replay it.
      # Two runs of at most 220 s and the timing runs: the ncu half fits a
      # 600 s device call.
      first=3 count=2
      [ "$steps" -ge 4 ] || { first=1; count=$steps; }
      rm -f "$dir/bench/ncu-b$b.ncu-rep"
      if (cd "$dir/bench" && DS_CUDA_PROFILE_STEPS=$first:$count timeout 220 "$ncu" --profile-from-start off \
            --clock-control none --graph-profiling node --metrics "$metrics" \
            --export "ncu-b$b" --force-overwrite "${run[@]}" > "ncu-b$b.log" 2>&1) &&
         { (cd "$dir/bench" && "$ncu" --import "ncu-b$b.ncu-rep" --csv --page raw --print-units base > "$out/ncu-b$b.csv" 2> "ncu-b$b.err") ||
           (cd "$dir/bench" && "$ncu" --import "ncu-b$b.ncu-rep" --csv --page raw > "$out/ncu-b$b.csv" 2>> "ncu-b$b.err"); } &&
         r=$("$py" "$dir/ncu_summary.py" "$out/ncu-b$b.csv" --steps "$count" \
               --label "decode B=$b, steps $first to $((first + count - 1))" ${copy:+--copy-gbps "$copy"} \
               ${stepms:+--step-ms "$stepms"} 2>&1); then
        say "$r"
      else
        say "ncu decode B=$b: no result: ${r:-}$(tail -3 "$dir/bench/ncu-b$b.log" "$dir/bench/ncu-b$b.err" 2> /dev/null)"
      fi
    done
  }
  if [ "$mode" = ncu ]; then
    ncu_steps
    say "== done (at ${SECONDS} s)"
    return 0
  fi
  say "== correctness: CUDA f32 vs the CPU backend (rel < 1e-4), bf16 (rel < 2e-2) (at ${SECONDS} s)"
  # A run's logits (RUN.npy: prefill, RUN-d.npy: decode steps, RUN.txt:
  # tokens) against the CPU backend's (cpu*): prints what was compared,
  # fails past TOL. In f32 the argmaxes and tokens must agree. In bf16
  # near-ties of random weights flip discrete choices: an argmax (counted,
  # not failed), a routed expert (2% of the prefill rows may be outliers,
  # named), a token (the decode steps are compared up to the first that
  # differs, their inputs being the same). Every case generates 2 tokens or
  # more (compare.py refuses an empty decode file).
  against_cpu() { # DIR RUN PREC TOL
    local toks=(--tokens "$1/$2.txt" "$1/cpu.txt") pflags=() dflags=() r rd
    # Rows that a routing near-tie flips in bf16 (named in the report).
    # bench-mini's random weights (64 experts top-6) meet many: emulated,
    # 12 of its 100 prefill rows and 1 of 7 decode steps move by 0.1-0.4,
    # the median row by 1.2e-2. Its bf16 check is for kernels gone wrong at
    # the benchmark's dims, which move every row; cuda-emu-bench-mini.test
    # checks their numerics closely (emulated, on better-conditioned
    # checkpoint weights).
    local frac=0.02 dfrac=()
    if [ "$(basename "$1")" = bench-mini ]; then
      frac=0.25
      dfrac=(--outlier-frac 0.25)
    fi
    if [ "$3" = bf16 ]; then
      pflags=(--no-argmax --outlier-frac "$frac")
      dflags=(--no-argmax --same-inputs "${dfrac[@]}")
    else
      pflags=("${toks[@]}")
    fi
    r=$("$py" "$dir/compare.py" "$1/$2.npy" "$1/cpu.npy" --rtol "$4" "${pflags[@]}" 2>&1) || { echo "prefill: $r"; return 1; }
    rd=$("$py" "$dir/compare.py" "$1/$2-d.npy" "$1/cpu-d.npy" --rtol "$4" "${toks[@]}" "${dflags[@]}" 2>&1) || { echo "prefill: $r; decode: $rd"; return 1; }
    echo "prefill: $r; decode: $rd"
  }
  # After a failure: which of the runtime's switches makes the case pass
  # (programmatic dependent launch, the dense GEMV, decode graphs, the
  # experts' sort in the GEMV's blocks, their combine in the down GEMV's
  # last block, the split combine in W_UV's).
  # At most 3 triaged cases, in the first 240 s: a fault every case shares
  # (one kernel) would otherwise spend the call on re-runs before the
  # benchmark. The first switch that passes is kept for it (safe_env).
  local triaged=0 safe_env=""
  triage() { # DIR PREC WEIGHTS PROMPT NEW TOL
    local env1 r verdict=""
    if [ "$triaged" -ge 3 ] || [ "$SECONDS" -ge 240 ]; then
      say "  triage: skipped ($triaged cases triaged, at $SECONDS s)"
      return 0
    fi
    triaged=$((triaged + 1))
    for env1 in DS_CUDA_PDL=0 DS_CUDA_GEMV_ROWS=0 DS_CUDA_GRAPHS=0 DS_CUDA_MOE_SORT=kernel \
        DS_CUDA_MOE_COMBINE=kernel DS_CUDA_MLA_COMBINE=kernel DS_CUDA_MOE_GEMV=simt; do
      if (cd "$1" && export "${env1?}" && with_weights ./"$2" "$3" --prompt-ids "$4" --max-new-tokens "$5" \
            --dump-logits triage.npy --dump-decode-logits triage-d.npy > triage.txt 2> triage.err) &&
         r=$(against_cpu "$1" triage "$2" "$6"); then
        verdict+=" $env1: pass;"
        [ -n "$safe_env" ] || safe_env=$env1
      else
        verdict+=" $env1: fail;"
      fi
    done
    say "  triage:$verdict"
  }
  while IFS='|' read -r name src cfg seed dtype prompt new flags; do
    local d="$dir/e2e/$name" weights
    [ -f "$d/args" ] || continue # not prepared (DS_GPU_CASES)
    IFS='|' read -r weights prompt new < "$d/args"
    for prec in f32 bf16; do
      [ -x "$d/$prec" ] || continue
      local tol=1e-4
      [ "$prec" = bf16 ] && tol=2e-2
      if (cd "$d" && with_weights ./$prec "$weights" --prompt-ids "$prompt" --max-new-tokens "$new" \
            --dump-logits $prec.npy --dump-decode-logits $prec-d.npy > $prec.txt 2> $prec.err); then
        if r=$(against_cpu "$d" "$prec" "$prec" "$tol"); then
          say "PASS $name $prec: $r ($("$py" "$dir/compare.py" "$d/$prec.npy" "$d/cpu.npy" --report))"
        else
          say "FAIL $name $prec: $r ($("$py" "$dir/compare.py" "$d/$prec.npy" "$d/cpu.npy" --report 2>&1))"
          failed=1
          triage "$d" "$prec" "$weights" "$prompt" "$new" "$tol"
        fi
      else
        say "FAIL $name $prec: exit $? $(tail -3 "$d/$prec.err")"
        failed=1
        triage "$d" "$prec" "$weights" "$prompt" "$new" "$tol"
      fi
    done
    # Batch mode (continuous batching, decode graphs at several batch sizes).
    if (cd "$d" && with_weights ./f32 "$weights" --requests requests.jsonl --max-batch 4 \
          --output f32-batch.jsonl 2> f32-batch.err) &&
       cmp -s <(sort "$d/f32-batch.jsonl" | sed 's/"ttft_ms.*//') \
              <(sort "$d/cpu-batch.jsonl" | sed 's/"ttft_ms.*//'); then
      say "PASS $name f32 batch: tokens equal the CPU backend's"
    else
      say "FAIL $name f32 batch: $(tail -2 "$d/f32-batch.err")"
      failed=1
    fi
    if [ -f "$d/cpu-spec.txt" ]; then
      r=""
      if (cd "$d" && with_weights ./f32 "$weights" --prompt-ids "$prompt" --max-new-tokens "$new" \
            --speculative=mtp --dump-decode-logits f32-spec-d.npy > f32-spec.txt 2>&1) &&
         r=$("$py" "$dir/compare.py" "$d/f32-spec-d.npy" "$d/cpu-spec-d.npy" --rtol 1e-4 \
               --tokens "$d/f32-spec.txt" "$d/cpu-spec.txt" 2>&1); then
        say "PASS $name f32 speculative=mtp: decode $r; $(grep '^mtp' "$d/f32-spec.txt" || true)"
      else
        say "FAIL $name f32 speculative=mtp: ${r:-$(tail -3 "$d/f32-spec.txt")}"
        failed=1
      fi
    fi
  done < <(cases)
  # The prefill's routed experts as cuBLAS batches of tiles, which auto
  # takes at larger batches only: v3-long with DS_CUDA_MOE_GEMM=batched,
  # against the CPU backend, and (report) against the tiled kernels' run.
  if [ -d "$dir/e2e/v3-long" ]; then
    local d="$dir/e2e/v3-long" weights prompt new
    IFS='|' read -r weights prompt new < "$d/args"
    for prec in f32 bf16; do
      [ -x "$d/$prec" ] || continue
      r=""
      local tol=1e-4
      [ "$prec" = bf16 ] && tol=2e-2
      if (cd "$d" && DS_CUDA_MOE_GEMM=batched with_weights ./$prec "$weights" --prompt-ids "$prompt" \
            --max-new-tokens "$new" --dump-logits $prec-batched.npy \
            --dump-decode-logits $prec-batched-d.npy > $prec-batched.txt 2> $prec-batched.err) &&
         ! grep -q refused "$d/$prec-batched.err" &&
         r=$(against_cpu "$d" "$prec-batched" "$prec" "$tol"); then
        say "PASS v3-long $prec, experts batched: $r (vs tiled: $("$py" "$dir/compare.py" "$d/$prec-batched.npy" "$d/$prec.npy" --report 2>&1))"
      else
        say "FAIL v3-long $prec, experts batched: ${r:-} $(tail -3 "$d/$prec-batched.err")"
        failed=1
      fi
    done
  fi
  # The routed experts' grouped GEMV on tensor cores (bf16, two rows per
  # expert or more: bench-mini's 40-token prefill), against the CPU backend
  # (its routing near-ties as in against_cpu), and (report) against the
  # CUDA-core GEMV's run (DS_CUDA_MOE_GEMV=simt).
  if [ -f "$dir/e2e/bench-mini/cpu40.npy" ] && [ -x "$dir/e2e/bench-mini/bf16" ]; then
    local d="$dir/e2e/bench-mini" weights prompt new p40
    IFS='|' read -r weights prompt new < "$d/args"
    p40=$(echo "$prompt" | cut -d, -f1-40)
    r=""
    if (cd "$d" && with_weights ./bf16 "$weights" --prompt-ids "$p40" --max-new-tokens 2 \
          --dump-logits tc40.npy > tc40.txt 2> tc40.err) &&
       r=$("$py" "$dir/compare.py" "$d/tc40.npy" "$d/cpu40.npy" --rtol 2e-2 --no-argmax --outlier-frac 0.25 2>&1); then
      local simt="not run"
      if (cd "$d" && DS_CUDA_MOE_GEMV=simt with_weights ./bf16 "$weights" --prompt-ids "$p40" \
            --max-new-tokens 2 --dump-logits simt40.npy > simt40.txt 2> simt40.err); then
        simt=$("$py" "$dir/compare.py" "$d/tc40.npy" "$d/simt40.npy" --report 2>&1)
      fi
      say "PASS bench-mini bf16, 40-token prefill, experts' GEMV on tensor cores: $r (vs DS_CUDA_MOE_GEMV=simt: $simt)"
    else
      say "FAIL bench-mini bf16, 40-token prefill, experts' GEMV on tensor cores: ${r:-} $(tail -3 "$d/tc40.err")"
      failed=1
    fi
  fi
  if [ -x "$dir/dsrt-comm-nccl-test" ] && [ -d "$dir/e2e/v3" ]; then
    say "== NCCL: collectives on device buffers, a one-rank job end to end (at ${SECONDS} s)"
    # Open MPI as a singleton (no mpirun here), its components from the
    # carried tree; NCCL from PyTorch's wheel.
    local nccl
    nccl=$("$py" -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null || true)
    local mpienv=(env "LD_LIBRARY_PATH=$dir/lib:$nccl:${LD_LIBRARY_PATH:-}"
                  OMPI_MCA_ess_singleton_isolated=1 "OMPI_MCA_mca_base_component_path=$dir/ompi-mca"
                  OMPI_MCA_mca_base_component_show_load_errors=0 OMPI_ALLOW_RUN_AS_ROOT=1
                  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 DS_COMM_TIMEOUT=120)
    if r=$("${mpienv[@]}" "$dir/dsrt-comm-nccl-test" 2>&1); then
      say "PASS NCCL collectives (one rank): $(echo "$r" | tail -1)"
    else
      say "FAIL NCCL collectives: $(echo "$r" | tail -3)"
      failed=1
    fi
    local d="$dir/e2e/v3" weights prompt new
    IFS='|' read -r weights prompt new < "$d/args"
    if (cd "$d" && "${mpienv[@]}" ./nccl --weights "$weights" --prompt-ids "$prompt" \
          --max-new-tokens "$new" --dump-logits nccl.npy --dump-decode-logits nccl-d.npy \
          > nccl.txt 2> nccl.err) &&
       r=$(against_cpu "$d" nccl f32 1e-4); then
      say "PASS v3 f32 on the NCCL runtime (one rank): $r; $(grep -m1 NCCL "$d/nccl.err")"
    else
      say "FAIL v3 f32 on the NCCL runtime: $(tail -3 "$d/nccl.err")"
      failed=1
    fi
  fi
  if command -v compute-sanitizer > /dev/null && [ -d "$dir/e2e/tiny" ] && [ ! -f "$dir/emulated" ]; then
    local d="$dir/e2e/tiny"
    if (cd "$d" && compute-sanitizer --tool memcheck --error-exitcode 3 ./bf16 --weights ckpt/model.safetensors \
          --prompt-ids 17,300,5,900,42,7 --max-new-tokens 8 > "$out/sanitizer.txt" 2>&1); then
      say "PASS compute-sanitizer memcheck tiny: $(grep 'ERROR SUMMARY' "$out/sanitizer.txt")"
    else
      say "FAIL compute-sanitizer memcheck tiny: $(grep -m3 -E 'ERROR|Invalid' "$out/sanitizer.txt")"
      failed=1
    fi
  fi

  if [ "${DS_GPU_CHECK_ONLY:-0}" = 1 ]; then # correctness only
    say "== done (at ${SECONDS} s)"
    return $failed
  fi
  say "== benchmark: $what (at ${SECONDS} s)"
  # A run that fails is run again once with the switch triage found (else
  # every fused path off), so that a fault in one kernel still leaves
  # numbers, named by what they ran with.
  local fallback=${safe_env:-DS_CUDA_PDL=0 DS_CUDA_MOE_SORT=kernel DS_CUDA_MOE_COMBINE=kernel DS_CUDA_MLA_COMBINE=kernel DS_CUDA_MLA_DECODE=simt DS_CUDA_MOE_GEMV=simt}
  bench_run() { # LABEL OUTFILE ERRFILE PATTERN COMMAND...
    local label=$1 o=$2 e=$3 pat=$4 src
    shift 4
    src=$o
    [ "$o" = /dev/null ] && src=$e
    if (cd "$dir/bench" && "$@" > "$o" 2> "$e") && grep -q "$pat" "$dir/bench/$src" 2> /dev/null; then
      say "$label: $(grep "$pat" "$dir/bench/$src")"
      return 0
    fi
    failed=1
    say "$label: FAIL: $(tail -3 "$dir/bench/$e")"
    # shellcheck disable=SC2086 # the fallback is a list of assignments
    if (cd "$dir/bench" && env $fallback "$@" > "$o" 2> "$e") && grep -q "$pat" "$dir/bench/$src" 2> /dev/null; then
      say "$label, again with $fallback: $(grep "$pat" "$dir/bench/$src")"
    else
      say "$label, again with $fallback: FAIL: $(tail -3 "$dir/bench/$e")"
    fi
  }
  bench_run "decode B=1" decode1.txt decode1.err '^timing:' \
    ./decode --prompt-ids "$ids" --max-new-tokens "$new1" --seed 1
  bench_run "decode B=32" /dev/null decode32.err '^batch:' \
    ./decode --requests requests32.jsonl --max-batch 32 --seed 1 --output b32.jsonl
  local pids
  pids=$("$py" -c "print(','.join(str((i * 7919 + 13) % $vocab) for i in range($plen)))")
  bench_run "prefill $plen" prefill.txt prefill.err '^timing:' \
    ./prefill --prompt-ids "$pids" --max-new-tokens 1 --seed 1
  grep -h refused "$dir/bench/prefill.err" | tee -a "$report" || true
  grep -h '^cuda:' "$dir/bench/decode1.err" | head -1 | tee -a "$report" || true
  if [ "${DS_GPU_NO_EXTRAS:-0}" = 1 ]; then
    say "== done (at ${SECONDS} s)"
    return $failed
  fi
  # Where the time goes: every kernel call timed alone (DS_CUDA_PROFILE).
  say "== profile (DS_CUDA_PROFILE=1: synchronized per call, no graphs) (at ${SECONDS} s)"
  (cd "$dir/bench" && DS_CUDA_PROFILE=1 ./decode --prompt-ids "$ids" --max-new-tokens "$pnew" --seed 1 > /dev/null 2> prof1.err) || true
  say "decode B=1 (prefill $ctx + $((pnew - 1)) steps):"; grep -A40 '^cuda profile' "$dir/bench/prof1.err" | tee -a "$report" || true
  (cd "$dir/bench" && DS_CUDA_PROFILE=1 ./decode --requests requests32s.jsonl --max-batch 32 --seed 1 --output /dev/null 2> prof32.err) || true
  say "decode B=32 (32 prefills of $ctx + $((pnew32 - 1)) steps):"; grep -A40 '^cuda profile' "$dir/bench/prof32.err" | tee -a "$report" || true
  if [ -f "$dir/bench/torch_baseline.py" ] && [ "${DS_SKIP_TORCH:-0}" != 1 ]; then
    say "== PyTorch baseline (phases main, grouped) (at ${SECONDS} s)"
    OUT="$out" timeout 400 "$py" "$dir/bench/torch_baseline.py" --only main,grouped > "$out/torch.txt" 2>&1 || true
    sed -n '/^=====/,/^=====/p' "$out/torch.txt" | tee -a "$report"
  fi
  # The experts' grouped GEMV in each form at 1 to 16 rows per expert, on
  # the benchmark's expert shapes: GB/s against the copy rate, and whether
  # the forms agree (the tensor cores' against the CUDA cores').
  if [ -x "$dir/gemv-bench" ] && [ "$SECONDS" -lt 470 ]; then
    say "== experts' grouped GEMV by form (ds-gemv-bench) (at ${SECONDS} s)"
    if r=$(cd "$dir/bench" && timeout 120 "$dir/gemv-bench" 2>&1); then
      say "$r"
    else
      say "$r"
      say "FAIL ds-gemv-bench"
      failed=1
    fi
  fi
  # A/B, while the call has time left: decode B=1 without programmatic
  # dependent launch, with the dense decode GEMMs through cuBLASLt (a bf16
  # copy of the input first) instead of the GEMV kernel, with the decode
  # attention on CUDA cores instead of tensor cores, and with the experts'
  # sort, the experts' combine and the attention's split combine as
  # launches of their own, and with kv_b read in float32 by the absorbed
  # products instead of its exact bf16 copy.
  local ab
  for ab in DS_CUDA_PDL=0 DS_CUDA_GEMV_ROWS=0 DS_CUDA_MLA_DECODE=simt DS_CUDA_MOE_SORT=kernel \
      DS_CUDA_MOE_COMBINE=kernel DS_CUDA_MLA_COMBINE=kernel DS_CUDA_WEIGHT_COPIES=none; do
    if [ "$SECONDS" -lt 480 ]; then
      (cd "$dir/bench" && env "$ab" ./decode --prompt-ids "$ids" --max-new-tokens "$new1" --seed 1 > "ab-$ab.txt" 2> "ab-$ab.err") || true
      say "decode B=1, $ab: $(grep '^timing:' "$dir/bench/ab-$ab.txt" || tail -3 "$dir/bench/ab-$ab.err")"
    else
      say "decode B=1, $ab: skipped ($SECONDS s used)"
    fi
  done
  # Decode B=32 with the routed experts' GEMVs (about 3 rows an expert) on
  # CUDA cores, four columns a warp, instead of tensor cores.
  if [ "$SECONDS" -lt 450 ]; then
    (cd "$dir/bench" && DS_CUDA_MOE_GEMV=simt ./decode --requests requests32.jsonl --max-batch 32 --seed 1 --output /dev/null 2> ab32g.err) || true
    say "decode B=32, DS_CUDA_MOE_GEMV=simt: $(grep '^batch:' "$dir/bench/ab32g.err" || tail -3 "$dir/bench/ab32g.err")"
  else
    say "decode B=32, DS_CUDA_MOE_GEMV=simt: skipped ($SECONDS s used)"
  fi
  # Decode B=32 with its dense GEMMs (32 rows) on the GEMV kernel instead
  # of cuBLASLt: which is faster at 32 rows is a measurement, not a guess.
  if [ "$SECONDS" -lt 450 ]; then
    (cd "$dir/bench" && DS_CUDA_GEMV_ROWS=32 ./decode --requests requests32.jsonl --max-batch 32 --seed 1 --output /dev/null 2> ab32.err) || true
    say "decode B=32, DS_CUDA_GEMV_ROWS=32: $(grep '^batch:' "$dir/bench/ab32.err" || tail -3 "$dir/bench/ab32.err")"
  else
    say "decode B=32, DS_CUDA_GEMV_ROWS=32: skipped ($SECONDS s used)"
  fi
  # Prefill with the routed experts on the tiled tensor-core kernel instead
  # of the cuBLAS batches (auto's choice at 2048 tokens).
  if [ "$SECONDS" -lt 520 ]; then
    (cd "$dir/bench" && DS_CUDA_MOE_GEMM=tiled ./prefill --prompt-ids "$pids" --max-new-tokens 1 --seed 1 > ab-tiled.txt 2> ab-tiled.err) || true
    say "prefill $plen, DS_CUDA_MOE_GEMM=tiled: $(grep '^timing:' "$dir/bench/ab-tiled.txt" || tail -3 "$dir/bench/ab-tiled.err")"
  else
    say "prefill $plen, DS_CUDA_MOE_GEMM=tiled: skipped ($SECONDS s used)"
  fi
  # Prefill with the attention's scores and output through shared memory
  # (WMMA) instead of in registers (mma.sync).
  if [ "$SECONDS" -lt 525 ]; then
    (cd "$dir/bench" && DS_CUDA_MLA_PREFILL=wmma ./prefill --prompt-ids "$pids" --max-new-tokens 1 --seed 1 > ab-wmma.txt 2> ab-wmma.err) || true
    say "prefill $plen, DS_CUDA_MLA_PREFILL=wmma: $(grep '^timing:' "$dir/bench/ab-wmma.txt" || tail -3 "$dir/bench/ab-wmma.err")"
  else
    say "prefill $plen, DS_CUDA_MLA_PREFILL=wmma: skipped ($SECONDS s used)"
  fi
  # Prefill with kv_b's product in float32 (SGEMM) instead of its exact
  # bf16 copy on tensor cores.
  if [ "$SECONDS" -lt 530 ]; then
    (cd "$dir/bench" && DS_CUDA_WEIGHT_COPIES=none ./prefill --prompt-ids "$pids" --max-new-tokens 1 --seed 1 > ab-copies.txt 2> ab-copies.err) || true
    say "prefill $plen, DS_CUDA_WEIGHT_COPIES=none: $(grep '^timing:' "$dir/bench/ab-copies.txt" || tail -3 "$dir/bench/ab-copies.err")"
  else
    say "prefill $plen, DS_CUDA_WEIGHT_COPIES=none: skipped ($SECONDS s used)"
  fi
  if [ "$SECONDS" -lt 300 ]; then
    ncu_steps
  else
    say "== ncu: skipped ($SECONDS s used; run.sh ncu DIR in a call of its own)"
  fi
  say "== done (at ${SECONDS} s)"
  return $failed
}

case "$mode" in
  prepare) prepare ;;
  device | ncu) device ;;
  *) echo "usage: bench/gpu/run.sh prepare|device|ncu DIR" >&2; exit 2 ;;
esac
