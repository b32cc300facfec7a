#!/usr/bin/env bash
# The out-of-distribution warning's false alarms by training-set size (docs/RESULTS.md): for
# N = 5, 10, 25, 100 chest X-rays a class (three disjoint draws each: the sorted file list's
# first, second and third N), train the default model, predict the 624 test X-rays and BUSI's
# 780 ultrasound images, and print the share of each flagged as out of distribution.
# Needs ../shared/data and a built CLI (`cargo build -p medtransfer-cli`); embeddings come
# from the CLI's cache, so a warm run takes about a minute on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${MEDTRANSFER_DATA:-$root/../shared/data}
cli=${MEDTRANSFER_CLI:-${CARGO_TARGET_DIR:-$HOME/.cache/medtransfer/target}/debug/medtransfer}
export MEDTRANSFER_WEIGHTS_DIR=${MEDTRANSFER_WEIGHTS_DIR:-$root/weights}
chest=$data/chest-xray-pneumonia
[[ -d $chest && -d $data/busi ]] || { echo "SKIP: no $chest or $data/busi" >&2; exit 0; }
flagged() {
    "$cli" predict --model "$1" --json "$2" 2>/dev/null | python3 -c \
        'import json, sys; p = json.load(sys.stdin); print("%.3f" % (sum(x["out_of_distribution"] for x in p) / len(p)))'
}
for n in 5 10 25 100; do
    for draw in 0 1 2; do
        tmp=$(mktemp -d)
        for class in NORMAL PNEUMONIA; do
            mkdir -p "$tmp/$class"
            mapfile -t files < <(ls "$chest/train/$class" | sort)
            for f in "${files[@]:$((draw * n)):$n}"; do
                ln -s "$chest/train/$class/$f" "$tmp/$class/$f"
            done
        done
        "$cli" train --data "$tmp" --out "$tmp/m.mtmodel" --json > /dev/null 2>&1
        echo "per_class=$n draw=$draw chest_test_flagged=$(flagged "$tmp/m.mtmodel" "$chest/test") busi_flagged=$(flagged "$tmp/m.mtmodel" "$data/busi")"
        rm -rf "$tmp"
    done
done
