#!/usr/bin/env bash
# Native figures on a machine with a real GPU, for the separate table of BENCHMARKS.md:
#   1. MedTransfer on wgpu (Vulkan) against onnxruntime's CUDA execution provider when that
#      machine's onnxruntime has it (else only ours), batch 1 and 32, alternating;
#   2. MedTransfer on `flex` against onnxruntime's CPU execution provider on that machine's CPUs;
#   3. the per-op profile of our forward pass on wgpu (batch 8).
# Not part of the test command. Run it from the repository root on the GPU machine with a folder
# holding what it cannot build there (tools/bench/gpu-machine.sh BUNDLE OUT):
#   BUNDLE/efficientnet_bench.xz   the example binary (cargo build -p medtransfer-core --example
#                                  efficientnet_bench), stripped, xz-compressed
#   BUNDLE/efficientnet-lite0.bpk  the converted weights (scripts/setup.sh)
#   BUNDLE/efficientnet-lite0.onnx the graph from tools/bench/build_onnx.py (tools/bench/run-all.sh)
# It needs python3 with numpy and onnxruntime there, and a Vulkan loader and driver (see
# BENCHMARKS.md for how the figures there were made). Results go to OUT (JSON and text).
set -euo pipefail
bundle="$(cd "$1" && pwd)"
out="$2"
mkdir -p "$out"
bench="$(mktemp -d)/efficientnet_bench"
xz -dc "$bundle/efficientnet_bench.xz" > "$bench"
chmod +x "$bench"
weights="$bundle/efficientnet-lite0.bpk"
onnx="$bundle/efficientnet-lite0.onnx"
reps="${BENCH_REPS:-3}"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
    echo "load: $(cat /proc/loadavg)"
} | tee "$out/machine.txt"

echo "== ours on wgpu: device" >&2
"$bench" wgpu "$weights" --batch 1 --runs 3 | tee "$out/wgpu-device.txt"

provider=CPUExecutionProvider
if python3 -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    provider=CUDAExecutionProvider
fi
echo "== GPU: ours (wgpu) against onnxruntime ($provider)" >&2
python3 tools/bench/native.py --onnx "$onnx" --ours "$bench" --weights "$weights" \
    --backend wgpu --provider "$provider" --reps "$reps" --runs1 20 --runs32 5 --out "$out/gpu.json"

echo "== CPU: ours (flex) against onnxruntime (CPU)" >&2
python3 tools/bench/native.py --onnx "$onnx" --ours "$bench" --weights "$weights" \
    --reps "$reps" --out "$out/cpu.json"

echo "== per-op profile on wgpu (batch 8)" >&2
"$bench" wgpu "$weights" profile --batch 1 --runs 1 | tee "$out/profile-wgpu.txt"
