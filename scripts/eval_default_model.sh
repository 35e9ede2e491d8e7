#!/usr/bin/env bash
# Evaluate the default model (and, for comparison, the untrained model) on held-out world streams.
#   bash scripts/eval_default_model.sh [DATA_DIR] [MODEL] [OUT]
# Frame features come from DATA_DIR/world_cache_h3 (scripts/train_default_model.sh writes it) when present, else
# the videos are encoded on the fly.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"
MODEL="${2:-src/livecue/assets/default_model}"
OUT="${3:-benchmarks/results/default_model}"
LIVECUE="${LIVECUE:-.venv/bin/livecue}"
CACHE=()
[ -f "$DATA/world_cache_h3/index.json" ] && CACHE=(--feature-cache "$DATA/world_cache_h3")
for name in trained untrained; do
  model=("$MODEL"); [ "$name" = untrained ] && model=(configs/default_model.yaml --vision.frame_colour_bins=3)
  "$LIVECUE" eval --model "${model[@]}" --data "$DATA/world/test.jsonl" --task narration "${CACHE[@]}" \
      --out "$OUT/$name" --calibrate
  "$LIVECUE" eval --model "${model[@]}" --data "$DATA/world/test.jsonl" --task free "${CACHE[@]}" --out "$OUT/$name"
done
