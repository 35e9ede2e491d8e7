#!/usr/bin/env bash
# Copy a trained default-model checkpoint into the package (src/livecue/assets/default_model), keeping only what
# inference needs: config, tokenizer, LoRA adapter and connector (fp16 tensors, a few MB).
#   bash scripts/package_default_model.sh [RUN_DIR/final]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-runs/default_model/final}"
DST=src/livecue/assets/default_model
rm -rf "$DST" && mkdir -p "$DST"
cp "$SRC"/livecue_config.json "$SRC"/adapter_config.json "$DST"/
cp "$SRC"/tokenizer.json "$SRC"/tokenizer_config.json "$DST"/
[ -f "$SRC"/special_tokens_map.json ] && cp "$SRC"/special_tokens_map.json "$DST"/
.venv/bin/python - "$SRC" "$DST" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1], sys.argv[2]
for name in ("adapter_model.safetensors", "livecue_model.safetensors"):
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(f"{src}/{name}").items()}
    save_file(tensors, f"{dst}/{name}", metadata={"format": "pt"})
PY
.venv/bin/python scripts/default_model_card.py "$DST"  # the model card (README.md), from the files just written
du -sh "$DST"
