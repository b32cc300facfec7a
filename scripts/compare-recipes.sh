#!/usr/bin/env bash
# Regenerates the recipe comparison in docs/RESULTS.md ("Automatic recipe vs old default vs
# scikit-learn"): builds the CLI (the dev profile scripts/test.sh builds) and the BreastMNIST folder example, installs
# NumPy, scikit-learn and Pillow from PyPI into $MEDTRANSFER_COMPARE_VENV (default
# ~/.cache/medtransfer/compare-venv), then runs scripts/compare_recipes.py, which writes
# docs/compare-recipes.json and prints the Markdown table. Needs ../shared/data and the weights
# (scripts/test.sh or scripts/run.sh fetch them). Extra arguments go to the Python script
# (e.g. --sets BUSI). Takes about an hour on 2 cores when no embedding is cached yet.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medtransfer/target}"
export MEDTRANSFER_WEIGHTS_DIR="${MEDTRANSFER_WEIGHTS_DIR:-$PWD/weights}"
venv="${MEDTRANSFER_COMPARE_VENV:-$HOME/.cache/medtransfer/compare-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import numpy, sklearn, PIL" 2>/dev/null \
  || "$venv/bin/pip" install -q numpy scikit-learn pillow
cargo build -q --locked -p medtransfer-cli --bin medtransfer --example medmnist_folders
"$venv/bin/python" scripts/compare_recipes.py --target "$CARGO_TARGET_DIR/debug" "$@"
