#!/usr/bin/env bash
# Reproduce livecue's default model (issues 7, 22): built-in world data -> feature caches -> nine LIVE training stages.
#   bash scripts/train_default_model.sh [DATA_DIR] [RUN_DIR]
# CPU only, offline; needs the [models] extra (scripts/setup.sh). About 8.5 h on 2 cores (stages 1-5 ~3.5 h, the
# colour-segment encode ~60 min, stages 6-9 ~3.5 h, θ calibration ~10 min). Then scripts/package_default_model.sh
# RUN_DIR/stage9/final copies the result into src/livecue/assets/default_model.
# STEPS=N caps every stage at N update steps (a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"
RUN="${2:-runs/default_model}"
LIVECUE="${LIVECUE:-.venv/bin/livecue}"
STEPS="${STEPS:-}"

W="$DATA/world"
[ -f "$W/train.jsonl" ] || "$LIVECUE" world --out "$W" --n 300 --seed 0 --split train --duration 16
[ -f "$W/val.jsonl" ] || "$LIVECUE" world --out "$W" --n 40 --seed 0 --split val --duration 16
[ -f "$W/test.jsonl" ] || "$LIVECUE" world --out "$W" --n 40 --seed 0 --split test --duration 16
if [ ! -f "$W/train_more.jsonl" ]; then  # 600 more train streams (seed 1: disjoint from every seed-0 split)
  "$LIVECUE" world --out "$DATA/world_more" --n 600 --seed 1 --split train --duration 16
  mv "$DATA"/world_more/videos/* "$W/videos/" && mv "$DATA/world_more/train.jsonl" "$W/train_more.jsonl"
fi
head -n 232 "$W/train.jsonl" > "$W/train232.jsonl"                  # stages 1-2 saw the first 232 streams
cat "$W/train.jsonl" "$W/train_more.jsonl" > "$W/train900.jsonl"    # stage 4 sees all 900
# the frozen EfficientNet-Lite0 tokens, without (stages 1-3) and with (stage 4) each token's colour histogram
"$LIVECUE" encode "$W" --out "$DATA/world_cache" --model configs/default_model.yaml --dtype float16
"$LIVECUE" encode "$W" --out "$DATA/world_cache_h3" --model configs/default_model.yaml --dtype float16 \
    --vision.frame_colour_bins=3

stage() {  # stage NAME CACHE TRAIN_DATA [overrides...]
  local name="$1" cache="$2" data="$3"
  shift 3
  "$LIVECUE" train configs/default_model.yaml --train.train_data="$data" --train.eval_data="$W/val.jsonl" \
      --train.feature_cache="$cache" --train.output_dir="$RUN/$name" ${STEPS:+--train.max_steps=$STEPS} \
      --name=livecue-default "$@"
}
# 1: LoRA + connector from scratch, lr 1e-3, 1.5 epochs; 2: 2 more epochs at 5e-4; 3: all 300 streams, 2 epochs at
# 3e-4; 4: every frame token also carries its region's colour histogram (vision.frame_colour_bins=3; the
# connector's new input columns start at zero, so stage 4 starts from stage 3's outputs), 900 streams, 1.5 epochs,
# connector lr 1e-3; 5: one more epoch of stage 4's recipe.
stage stage1 "$DATA/world_cache" "$W/train232.jsonl"
stage stage2 "$DATA/world_cache" "$W/train232.jsonl" --train.init_from="$RUN/stage1/final" \
    --train.epochs=2 --train.learning_rate=5e-4
stage stage3 "$DATA/world_cache" "$W/train.jsonl" --train.init_from="$RUN/stage2/final" \
    --train.epochs=2 --train.learning_rate=3e-4
stage stage4 "$DATA/world_cache_h3" "$W/train900.jsonl" --train.init_from="$RUN/stage3/final" \
    --vision.frame_colour_bins=3 --train.epochs=1.5 --train.learning_rate=3e-4 --train.connector_learning_rate=1e-3
stage stage5 "$DATA/world_cache_h3" "$W/train900.jsonl" --train.init_from="$RUN/stage4/final" \
    --vision.frame_colour_bins=3 --train.epochs=1 --train.learning_rate=3e-4 --train.connector_learning_rate=1e-3

# 6-7 (issue 22): three more tokens per frame, one per large colour of the frame (vision.frame_colour_segments=3: the
# tower under that colour's pixels, its colour cell, an 8x8 silhouette, the centroid; the connector's new columns
# start at zero), whole 16-s streams (stream.max_num_frames=32), fresh streams: seed 2 (300) + the first 60 seed-0
# train streams for stage 6 (1.5 epochs at 2e-4), + seed 3 (300) for stage 7 (1 epoch at 3e-4); stages 8 and 9: 600
# more fresh streams each (seeds 4 and 5, then 6 and 7), 1 epoch at 3e-4. Stages 6-9 run without a validation pass;
# θ is then calibrated on the 40 validation streams and written into the last stage's config.
S="$DATA/world_seg"
if [ ! -f "$S/train9.jsonl" ]; then
  for seed in 2 3 4 5 6 7; do
    "$LIVECUE" world --out "$DATA/world_seed$seed" --n 300 --seed "$seed" --split train --duration 16
  done
  for split in val test; do "$LIVECUE" world --out "$S" --n 40 --seed 0 --split "$split" --duration 16; done
  "$LIVECUE" world --out "$S" --n 60 --seed 0 --split train --duration 16  # = the first 60 of $W/train.jsonl
  for seed in 2 3 4 5 6 7; do mv "$DATA/world_seed$seed"/videos/* "$S/videos/"; done
  cat "$DATA/world_seed2/train.jsonl" "$S/train.jsonl" > "$S/train6.jsonl"
  cat "$S/train6.jsonl" "$DATA/world_seed3/train.jsonl" > "$S/train7.jsonl"
  cat "$DATA/world_seed4/train.jsonl" "$DATA/world_seed5/train.jsonl" > "$S/train8.jsonl"
  cat "$DATA/world_seed6/train.jsonl" "$DATA/world_seed7/train.jsonl" > "$S/train9.jsonl"
fi
SEG=(--vision.frame_colour_bins=3 --vision.frame_colour_segments=3 --stream.max_num_frames=32)
"$LIVECUE" encode "$S" --out "$DATA/world_seg_cache" --model configs/default_model.yaml --dtype float16 "${SEG[@]}"
segments() {  # segments NAME TRAIN_DATA INIT [overrides...]: the stage() recipe on the colour-segment cache
  local name="$1" data="$2" init="$3"
  shift 3
  "$LIVECUE" train configs/default_model.yaml --train.train_data="$data" --train.eval_data= \
      --train.feature_cache="$DATA/world_seg_cache" --train.output_dir="$RUN/$name" ${STEPS:+--train.max_steps=$STEPS} \
      --name=livecue-default --train.init_from="$init" "${SEG[@]}" --train.connector_learning_rate=1e-3 \
      --train.save_total_limit=10 "$@"
}
segments stage6 "$S/train6.jsonl" "$RUN/stage5/final" --train.epochs=1.5 --train.learning_rate=2e-4 --train.save_steps=135
segments stage7 "$S/train7.jsonl" "$RUN/stage6/final" --train.epochs=1 --train.learning_rate=3e-4 --train.save_steps=165
segments stage8 "$S/train8.jsonl" "$RUN/stage7/final" --train.epochs=1 --train.learning_rate=3e-4 --train.save_steps=150
segments stage9 "$S/train9.jsonl" "$RUN/stage8/final" --train.epochs=1 --train.learning_rate=3e-4 --train.save_steps=150
[ -n "$STEPS" ] || "$LIVECUE" eval --model "$RUN/stage9/final" --data "$S/val.jsonl" --task narration \
    --feature-cache "$DATA/world_seg_cache" --calibrate --grid 0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8 \
    --free-samples 4 --save-threshold --out "$RUN/stage9/calibration"
echo "trained: $RUN/stage9/final"
