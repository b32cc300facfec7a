#!/usr/bin/env bash
# Hyperparameter grid for the head, chosen on VALIDATION data only (docs/RESULTS.md).
# Usage: tools/experiments/grid.sh TRAIN_DIR [extra train args...]
# Prints one line per setting: head lr wd epochs-kept val_loss val_acc val_bal val_auc.
# Embeddings are cached, so after the first run each setting takes seconds.
set -euo pipefail
train_dir=$1; shift
bin=${MEDTRANSFER_BIN:-medtransfer}
out=$(mktemp -d)
printf '%-7s %-7s %-7s %-5s %-8s %-6s %-6s %-6s\n' head lr wd kept val_loss acc bal auc
for head in linear mlp; do
  for lr in 1e-4 3e-4 1e-3 3e-3; do
    for wd in 1e-4 1e-2 1e-1; do
      "$bin" train --data "$train_dir" --head "$head" --lr "$lr" --weight-decay "$wd" \
        --out "$out/m" --json "$@" > "$out/r.json"
      python3 - "$head" "$lr" "$wd" "$out/r.json" <<'PY'
import json, sys
head, lr, wd, path = sys.argv[1:]
r = json.load(open(path))
best = next(h for h in r["history"] if h["epoch"] == r["kept_epoch"])
v = r["validation"]
print(f"{head:<7} {lr:<7} {wd:<7} {r['kept_epoch']:<5} {best['validation_loss']:<8.4f} "
      f"{v['accuracy']:<6.3f} {v['balanced_accuracy']:<6.3f} {v['auc']:<6.4f}")
PY
    done
  done
done
rm -rf "$out"
