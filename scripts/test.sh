#!/usr/bin/env bash
# Sets up whatever the tests need, then runs every check: formatting, clippy (native and
# wasm32), native tests, the wasm build, and the browser tests in headless Chromium.
# Safe to run again: installed tools and downloads are skipped.
set -euo pipefail
# shellcheck source=scripts/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$REPO_ROOT"

ensure_wasm_target
ensure_crates
ensure_trunk
ensure_wasm_bindgen
ensure_chromium
ensure_browser_test_packages
ensure_weights
ensure_dicom_samples
MEDTRANSFER_DICOM_SAMPLES="$(dicom_samples_dir)"
export MEDTRANSFER_DICOM_SAMPLES

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy (wasm32)"
cargo clippy --workspace --exclude medtransfer-cli --all-targets --locked \
  --target wasm32-unknown-unknown -- -D warnings

step "cargo test (native)"
cargo test --workspace --locked

step "trunk build (the wasm app, dev profile, with the browser tests' hooks)"
trunk build --locked --features test-hooks

step "Browser tests (headless Chromium, WebGPU and CPU fallback)"
(cd tests/browser && node --test --test-concurrency=1)
