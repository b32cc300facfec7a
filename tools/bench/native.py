#!/usr/bin/env python3
"""Native CPU embeddings/s, MedTransfer (`flex`) against onnxruntime (CPU execution provider),
at batch 1 and 32, with each process's peak resident memory.

Each measurement is a fresh process (so its peak memory is its own): ours is
`efficientnet_bench flex --batch N --runs R --json` (the core's `run_batch`, the path the app and
CLI use), the peer is this script with `--worker` (an onnxruntime session on the ONNX graph from
build_onnx.py, default options: all graph optimisations, one intra-op thread per core). Both
time whole batches after one warm-up on the same constant input, both compute embeddings and
logits. The two engines run alternately (ours, peer, ours, peer, ...) `--reps` times, so that
load from other processes on the machine falls on both alike; the reported figure is the
median over every timed run of every repetition.

  native.py --onnx target/bench/efficientnet-lite0.onnx --ours PATH/efficientnet_bench \
            --weights weights/efficientnet-lite0.bpk --out target/bench/native.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def worker(onnx_path, batch, runs, provider):
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=[provider])
    if sess.get_providers()[0] != provider:
        sys.exit(f"native.py: onnxruntime fell back from {provider} to {sess.get_providers()[0]}")
    x = np.full((batch, 3, 224, 224), 0.25, dtype=np.float32)
    sess.run(None, {"input": x})  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(json.dumps({"engine": "onnxruntime", "backend": provider, "batch": batch, "runs_s": times,
                      "median_s": median, "per_s": batch / median,
                      "peak_rss_bytes": peak_rss_bytes()}))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--ours", help="the efficientnet_bench example binary")
    ap.add_argument("--weights", help="efficientnet-lite0.bpk for ours")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions per batch size")
    ap.add_argument("--runs1", type=int, default=10, help="timed runs per process at batch 1")
    ap.add_argument("--runs32", type=int, default=2, help="timed runs per process at batch 32")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--backend", default="flex", help="ours: flex (CPU) or wgpu (GPU)")
    ap.add_argument("--provider", default="CPUExecutionProvider",
                    help="the peer's onnxruntime execution provider, e.g. CUDAExecutionProvider")
    ap.add_argument("--out")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.onnx, a.batch, a.runs, a.provider)
    if not (a.ours and a.weights and a.out):
        sys.exit("native.py: --ours, --weights and --out are needed")

    import onnxruntime as ort
    results = {"onnxruntime_version": ort.__version__, "cpu_threads": os.cpu_count(),
               "reps": a.reps, "order": "alternating, ours first", "ours_backend": a.backend,
               "peer_provider": a.provider, "batches": {}}
    for batch in [int(b) for b in a.batches.split(",")]:
        runs = a.runs1 if batch == 1 else a.runs32
        ours_cmd = [a.ours, a.backend, a.weights, "--batch", str(batch), "--runs", str(runs), "--json"]
        peer_cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--onnx", a.onnx,
                    "--batch", str(batch), "--runs", str(runs), "--provider", a.provider]
        per_engine = {"medtransfer": [], "onnxruntime": []}
        for rep in range(a.reps):
            for name, cmd in (("medtransfer", ours_cmd), ("onnxruntime", peer_cmd)):
                r = run_json(cmd)
                per_engine[name].append(r)
                print(f"native batch {batch} rep {rep + 1}/{a.reps} {name:<11} "
                      f"{r['per_s']:7.1f} embeddings/s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB",
                      file=sys.stderr)
        summary = {}
        for name, reps in per_engine.items():
            times = [t for r in reps for t in r["runs_s"]]
            median = statistics.median(times)
            summary[name] = {"median_s": median, "per_s": batch / median, "runs": len(times),
                             "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in reps),
                             "raw": reps}
        summary["ratio"] = summary["medtransfer"]["per_s"] / summary["onnxruntime"]["per_s"]
        results["batches"][str(batch)] = summary
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
