#!/usr/bin/env python3
"""Head training: MedTransfer's heads (the `medtransfer train` CLI, native `flex`) against
scikit-learn's LogisticRegression, on the same cached EfficientNet-Lite0 embeddings of the chest
X-ray training folder, scored on the official test split (624 images).

scikit-learn reads the embeddings straight from MedTransfer's on-disk cache (the CLI fills it;
see crates/core/src/embeddings.rs and crates/cli/src/dataset.rs): key
`{BACKBONE_ID}|{PREPROCESSING_ID}|{DECODER_ID}|{sha256 of the file}|original`, stored as
little-endian f32 in `<cache>/<h[:2]>/<h>.f32` with `h` = sha256 hex of the key. So both sides
see bit-identical inputs. Times are training only (embeddings already cached, not counting loading them):
`train_seconds` from `medtransfer train --json`, `fit()` for scikit-learn.

  heads.py --medtransfer PATH/medtransfer --data ../shared/data/chest-xray-pneumonia \
           --weights-dir weights --out target/bench/heads.json
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def rust_constant(relative_path, name):
    """A `pub const NAME: &str = "...";` read from the core's source, so the cache keys built
    here follow the CLI's (crates/core/src/embeddings.rs `cache_key`) whenever a revision is
    bumped there."""
    with open(os.path.join(REPO, relative_path)) as f:
        found = re.search(rf'pub const {name}: &str = "([^"]*)";', f.read())
    if not found:
        sys.exit(f"heads.py: constant {name} not found in {relative_path}")
    return found.group(1)


BACKBONE_ID = rust_constant("crates/core/src/embeddings.rs", "BACKBONE_ID")
PREPROCESSING_ID = rust_constant("crates/core/src/embeddings.rs", "PREPROCESSING_ID")
DECODER_ID = rust_constant("crates/core/src/formats/mod.rs", "DECODER_ID")
GROUP_PATTERN = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"


def cache_dir():
    if os.environ.get("MEDTRANSFER_CACHE"):
        return os.environ["MEDTRANSFER_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "medtransfer", "embeddings")


def folder_dataset(root):
    """(paths, labels, classes) as the CLI's FolderDataset lists them."""
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    paths, labels = [], []
    for label, c in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, c)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
        found.sort()
        paths += found
        labels += [label] * len(found)
    return paths, np.array(labels), classes


def cached_embeddings(paths, cache):
    out = np.empty((len(paths), 1280), dtype=np.float32)
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            content = hashlib.sha256(f.read()).hexdigest()
        key = f"{BACKBONE_ID}|{PREPROCESSING_ID}|{DECODER_ID}|{content}|original"
        name = hashlib.sha256(key.encode()).hexdigest()
        entry = os.path.join(cache, name[:2], name + ".f32")
        try:
            out[i] = np.fromfile(entry, dtype="<f4")
        except (OSError, ValueError) as e:
            sys.exit(f"heads.py: no cached embedding for {path} ({entry}): {e}; run "
                     "`medtransfer train` or `eval` on the folder first")
    return out


def shown(args, data):
    """The command line as the reader would type it (data folder as ../shared/data/...)."""
    import shlex
    return " ".join(shlex.quote(a).replace(data, "$CHEST") for a in args)


def medtransfer_run(bin_, weights_dir, train_args, test_dir, label, data):
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "head.mtmodel")
        cmd = [bin_, "train", "--json", "--backend", "cpu", "--weights", weights_dir,
               "--out", model, *train_args]
        trained = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        ev = json.loads(subprocess.run(
            [bin_, "eval", "--json", "--backend", "cpu", "--weights", weights_dir, "--model",
             model, "--data", test_dir], check=True, capture_output=True, text=True).stdout)
    print(f"heads: {label}: train {trained['train_seconds']:.2f} s, test acc "
          f"{ev['accuracy']:.3f}, AUC {ev['auc']:.3f}", file=sys.stderr)
    return {"engine": "medtransfer", "head": label, "train_images": trained["train_images"],
            "validation_images": trained["validation_images"],
            "epochs_run": len(trained["history"]), "kept_epoch": trained["kept_epoch"],
            "train_seconds": trained["train_seconds"], "accuracy": ev["accuracy"],
            "balanced_accuracy": ev["balanced_accuracy"], "auc": ev["auc"],
            "command": "medtransfer train " + shown(train_args, data)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--medtransfer", required=True)
    ap.add_argument("--data", required=True, help="chest-xray-pneumonia folder (train/, test/)")
    ap.add_argument("--weights-dir", default="weights")
    ap.add_argument("--reps", type=int, default=3, help="timed fits per head (median reported)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    a.data = os.path.normpath(a.data)
    train_dir, test_dir = os.path.join(a.data, "train"), os.path.join(a.data, "test")
    rows = []
    # Ours first: training also fills the embedding cache if an entry is missing.
    runs = {
        "linear": ["--data", train_dir, "--val-split", "0", "--head", "linear", "--lr", "1e-3",
                   "--epochs", "30"],
        "mlp-1024 (default recipe)": ["--data", train_dir, "--group-pattern", GROUP_PATTERN],
    }
    for label, args in runs.items():
        reps = [medtransfer_run(a.medtransfer, a.weights_dir, args, test_dir, label,
                                os.path.normpath(a.data))
                for _ in range(a.reps if label == "linear" else 1)]
        row = dict(reps[0])
        row["train_seconds_runs"] = [r["train_seconds"] for r in reps]
        row["train_seconds"] = float(np.median(row["train_seconds_runs"]))
        rows.append(row)

    cache = cache_dir()
    train_paths, y_train, classes = folder_dataset(train_dir)
    test_paths, y_test, test_classes = folder_dataset(test_dir)
    assert classes == test_classes, (classes, test_classes)
    x_train, x_test = cached_embeddings(train_paths, cache), cached_embeddings(test_paths, cache)
    times, clf = [], None
    for _ in range(a.reps):
        clf = LogisticRegression(class_weight="balanced", max_iter=5000)
        started = time.perf_counter()
        clf.fit(x_train, y_train)
        times.append(time.perf_counter() - started)
    p = clf.predict_proba(x_test)[:, 1]
    pred = (p >= 0.5).astype(int)
    row = {"engine": "scikit-learn", "head": "LogisticRegression (lbfgs, C=1, balanced)",
           "train_images": len(train_paths), "validation_images": 0,
           "epochs_run": int(clf.n_iter_[0]), "kept_epoch": None,
           "train_seconds": float(np.median(times)), "train_seconds_runs": times,
           "accuracy": float(accuracy_score(y_test, pred)),
           "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
           "auc": float(roc_auc_score(y_test, p)),
           "command": "LogisticRegression(class_weight='balanced', max_iter=5000).fit"}
    print(f"heads: scikit-learn LR: fit {row['train_seconds']:.2f} s ({row['epochs_run']} lbfgs "
          f"iterations), test acc {row['accuracy']:.3f}, AUC {row['auc']:.3f}", file=sys.stderr)
    rows.append(row)
    result = {"data": "Chest X-rays ($CHEST = ../shared/data/chest-xray-pneumonia): train/ "
                      "(5,216 images) to the official test/ split (624)",
              "classes": classes, "sklearn_version": sklearn.__version__,
              "test_images": len(test_paths), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
