#!/usr/bin/env bash
# Create .venv (or $KVAE_VENV) and install kvae with all three backends, the
# notebook tools and the test tools. Safe to run again: it only adds what is missing.
#
# PyTorch is installed first, as $KVAE_TORCH_SPEC (default torch==2.13.0): a bare
# "torch" would fetch the newest release, on Linux with several GB of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KVAE_VENV:-.venv}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${KVAE_TORCH_SPEC:-torch==2.13.0}"
"$venv/bin/python" -m pip install --quiet -e ".[dev]"
echo "kvae installed in $venv ($("$venv/bin/python" --version))"
