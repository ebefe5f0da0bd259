#!/usr/bin/env bash
# The whole test matrix from scratch: set up .venv, lint, then the test suite once
# per backend (TensorFlow, JAX, PyTorch; one process each, since Keras reads
# KERAS_BACKEND once), every chapter notebook under TensorFlow and JAX with nbval, then the
# chapters as readers open them: the book built and read offline, and JupyterLab in headless
# Chromium (system packages: chromium, chromium-driver, fonts-nanum; .ci/run installs them).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh || exit 1
venv=${KVAE_VENV:-.venv}
export PYTHONWARNINGS=ignore::DeprecationWarning  # no MPLBACKEND: notebooks need the inline backend
status=0
run() { echo; echo "=== $*"; "$@" || status=1; }

run "$venv/bin/ruff" check .
run "$venv/bin/ruff" format --check kvae tests tools benchmarks browser_tests book
for backend in tensorflow jax torch; do
  run env KERAS_BACKEND=$backend "$venv/bin/pytest" -p no:cacheprovider tests
done
for backend in tensorflow jax; do
  run env KERAS_BACKEND=$backend "$venv/bin/pytest" -p no:cacheprovider --nbval \
    --nbval-current-env --nbval-sanitize-with chapters/nbval_sanitize.cfg \
    -n 2 --dist loadfile chapters
done
run "$venv/bin/python" tools/build_book.py
run env KVAE_BOOK_DIR=build/book "$venv/bin/pytest" -p no:cacheprovider browser_tests/test_book.py
run env KERAS_BACKEND=jax "$venv/bin/pytest" -p no:cacheprovider browser_tests/test_jupyterlab.py
echo
[ $status -eq 0 ] && echo "test matrix: all passed" || echo "test matrix: FAILED (see above)"
exit $status
