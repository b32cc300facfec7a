#!/usr/bin/env bash
# Sets up whatever is missing, builds the app and serves it on http://127.0.0.1:8080.
# Safe to run again: installed tools and downloads are skipped. It builds with the same
# profile as the tests (opt-level 1, no debug info), so after `scripts/test.sh` it starts at
# once; `trunk serve --release` instead gives a faster CPU fallback after a much longer build.
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"

ensure_wasm_target
ensure_crates
ensure_trunk
ensure_wasm_bindgen
ensure_weights

step "Building and serving MedTransfer (the first build takes several minutes)"
echo "MedTransfer will be at: http://127.0.0.1:8080  (Ctrl-C stops it)"
exec trunk serve --locked --address 127.0.0.1 --port 8080
