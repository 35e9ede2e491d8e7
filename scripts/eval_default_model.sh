#!/usr/bin/env bash
# Evaluate the default model (and, for comparison, the untrained model) on the 40 held-out world test streams.
#   bash scripts/eval_default_model.sh [DATA_DIR] [MODEL] [OUT]
# Frame features come from DATA_DIR/world_seg_cache (scripts/train_default_model.sh writes it) when present, else the
# videos are encoded on the fly. The untrained floor runs on fewer streams (it speaks on every frame: a free-running
# stream costs a reply per frame), its replies capped at 8 tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"
MODEL="${2:-src/livecue/assets/default_model}"
OUT="${3:-benchmarks/results/default_model}"
LIVECUE="${LIVECUE:-.venv/bin/livecue}"
TEST="$DATA/world_seg/test.jsonl"
CACHE=()
[ -f "$DATA/world_seg_cache/index.json" ] && CACHE=(--feature-cache "$DATA/world_seg_cache")
"$LIVECUE" eval --model "$MODEL" --data "$TEST" --task narration "${CACHE[@]}" --out "$OUT/trained"
"$LIVECUE" eval --model "$MODEL" --data "$TEST" --task free "${CACHE[@]}" --out "$OUT/trained"
UNTRAINED=(configs/default_model.yaml --vision.frame_colour_bins=3 --vision.frame_colour_segments=3
           --stream.max_num_frames=32)
"$LIVECUE" eval --model "${UNTRAINED[@]}" --data "$TEST" --task narration "${CACHE[@]}" --out "$OUT/untrained" \
    --max-samples 20
"$LIVECUE" eval --model "${UNTRAINED[@]}" --stream.max_reply_tokens=8 --data "$TEST" --task free "${CACHE[@]}" \
    --out "$OUT/untrained" --max-samples 4
for name in trained untrained; do  # the reports the model card reads: OUT/{trained,untrained}-{narration,free}.json
  for task in narration free; do mv "$OUT/$name/eval-$task.json" "$OUT/$name-$task.json"; done
done
mv "$OUT"/trained/*.png "$OUT"/ && rm -rf "$OUT/trained" "$OUT/untrained"
