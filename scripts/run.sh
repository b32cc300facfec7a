#!/usr/bin/env bash
# Sets up whatever is missing, builds the app in release mode and serves it on
# http://127.0.0.1:8080. Safe to run again: installed tools and downloads are skipped.
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"

ensure_wasm_target
ensure_trunk
ensure_wasm_bindgen
ensure_weights

step "Building and serving MedTransfer (release build; the first one takes a while)"
echo "MedTransfer will be at: http://127.0.0.1:8080  (Ctrl-C stops it)"
exec trunk serve --release --address 127.0.0.1 --port 8080
