#!/usr/bin/env bash
# Reproduce livecue's default model (issue 7): built-in world data -> feature cache -> LIVE training -> evaluation.
#   bash scripts/train_default_model.sh [DATA_DIR] [RUN_DIR]
# CPU only, offline; needs the [models] extra (scripts/setup.sh). Then copy RUN_DIR/final into
# src/livecue/assets/default_model (scripts/package_default_model.sh does it).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"
RUN="${2:-runs/default_model}"
LIVECUE="${LIVECUE:-.venv/bin/livecue}"
STEPS="${STEPS:-}"

[ -f "$DATA/world/train.jsonl" ] || "$LIVECUE" world --out "$DATA/world" --n 300 --seed 0 --split train --duration 16
[ -f "$DATA/world/val.jsonl" ] || "$LIVECUE" world --out "$DATA/world" --n 40 --seed 0 --split val --duration 16
[ -f "$DATA/world/test.jsonl" ] || "$LIVECUE" world --out "$DATA/world" --n 40 --seed 0 --split test --duration 16
"$LIVECUE" encode "$DATA/world" --out "$DATA/world_cache" --model configs/default_model.yaml --dtype float16
"$LIVECUE" train configs/default_model.yaml --train.train_data="$DATA/world/train.jsonl" \
    --train.eval_data="$DATA/world/val.jsonl" --train.feature_cache="$DATA/world_cache" \
    --train.output_dir="$RUN" ${STEPS:+--train.max_steps=$STEPS}
echo "trained: $RUN/final"
