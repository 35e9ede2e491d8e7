#!/usr/bin/env bash
# The GPU rows of benchmarks/results/gpu_8b.md "Fast path rows" (issue 19), in one prepared run: 8B-v1+-shaped random
# weights in bf16, a 600-frame stream (5 min at 2 fps) with a 15-token reply every 3 s, then 32 concurrent 2-fps
# streams, for eager, the KV pool, compiled, and int8 / int4 / fp8 weights. Each row is its own `livecue bench`
# process under `timeout` (a row that fails or times out is reported and the next one runs).
#   OUT=/tmp/gpu_fast_path bash benchmarks/gpu_fast_path.sh
set -u
M=${M:-configs/bench/llama3_8b_siglip_random.yaml}
OUT=${OUT:-benchmarks/results/gpu_fast_path}
LIMIT=${LIMIT:-240}   # seconds per row
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv > "$OUT/gpu.csv" 2>&1 || true
row() {  # name, flags...
  local name=$1; shift
  echo "== $name: $*"
  timeout "$LIMIT" livecue bench --model "$M" --device cuda --dtype bfloat16 --frames 100,600 --speak-every 3.0 \
    --reply-tokens 15 --memory sink:4096 --overhead-frames 0 --streams 32 --streams-frames 60 \
    --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? ($(tail -n 1 "$OUT/$name.log"))"
}
row eager
row pool_flex --kv-pool --attention flex
row compiled --compile
row int8_compiled --quantize int8 --compile
row int4 --quantize int4
row fp8_compiled --quantize fp8 --compile
