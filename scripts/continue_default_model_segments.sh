#!/usr/bin/env bash
# Issue 22, in progress: continue the packaged default model with 3 colour-segment tokens per frame
# (vision.frame_colour_segments=3) on 300 fresh world streams (seed 2, never used before) + the first 60 seed-0 train
# streams, whole 16-s streams, 1.5 epochs; then the held-out curve on the 40 seed-0 test streams.
#   bash scripts/continue_default_model_segments.sh [DATA_DIR] [RUN_DIR]
# CPU only, offline. About 15 min of encoding + ~50 min of training on 2 cores (benchmarks/results/default_model.md,
# "Colour segments"). STEPS=N caps the training at N update steps (a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"
RUN="${2:-runs/default_model_segments}"
LIVECUE="${LIVECUE:-.venv/bin/livecue}"
STEPS="${STEPS:-}"
SEG=(--vision.frame_colour_bins=3 --vision.frame_colour_segments=3)

W="$DATA/world_seg"
[ -f "$W/train_new.jsonl" ] || {
  "$LIVECUE" world --out "$DATA/world_seed2" --n 300 --seed 2 --split train --duration 16
  "$LIVECUE" world --out "$W" --n 60 --seed 0 --split train --duration 16
  "$LIVECUE" world --out "$W" --n 40 --seed 0 --split test --duration 16
  mv "$DATA"/world_seed2/videos/* "$W/videos/"
  cat "$DATA/world_seed2/train.jsonl" "$W/train.jsonl" > "$W/train_new.jsonl"
}
"$LIVECUE" encode "$W" --out "$DATA/world_seg_cache" --model configs/default_model.yaml --dtype float16 "${SEG[@]}"
"$LIVECUE" train configs/default_model.yaml --report-to none --name=livecue-default \
    --train.init_from=src/livecue/assets/default_model "${SEG[@]}" --stream.max_num_frames=32 \
    --train.train_data="$W/train_new.jsonl" --train.eval_data= --train.feature_cache="$DATA/world_seg_cache" \
    --train.output_dir="$RUN" --train.epochs=1.5 --train.learning_rate=2e-4 --train.connector_learning_rate=1e-3 \
    --train.save_steps=135 --train.save_total_limit=10 ${STEPS:+--train.max_steps=$STEPS}
.venv/bin/python benchmarks/lm_correctness_curve.py "$RUN" --data "$W/test.jsonl" \
    --feature-cache "$DATA/world_seg_cache"
