"""Compares MedTransfer's automatic recipe, its old default (the manual recipe's defaults) and
scikit-learn's LogisticRegressionCV on the same embeddings, training images and test images,
for every labelled set in ../shared/data, at 5, 20 and 60 training images a class and at the
full training split (issue 19's evidence; docs/RESULTS.md reports the output).

Run through scripts/compare-recipes.sh, which builds the CLI and installs NumPy, scikit-learn and
Pillow from PyPI into a virtual environment. Everything MedTransfer computes goes through its CLI
(`split`, `train`, `predict`, `embed --data`); scikit-learn gets the very vectors `train` used
(`embed` reads the same embedding cache).

Protocol (no choice looks at a test image):
- test images: the official test split (chest X-ray, BreastMNIST) or `medtransfer split
  --test-fraction 0.2 --seed 42` (BUSI, lung histology, eye fundus grouped by patient id);
- training images: the official/seeded training part, all of it ("full") or n per class drawn
  without replacement (NumPy default_rng seeded with DRAW_SEED + 1000·n + draw), the same draw
  for all three methods; DRAWS[n] draws per size;
- (a) `medtransfer train` with no setting (automatic recipe, seed 42; with `--augment N`, `train
  --augment N`: the search may also train on N augmented views per image); (b) `train --recipe
  manual` (the old default: MLP-1024, AdamW, lr 1e-4, weight decay 0.1, 30 epochs, 20%
  validation split); (c) StandardScaler + LogisticRegressionCV(max_iter=5000) with its defaults
  (10 C values, 5-fold stratified, accuracy), predicting by argmax;
- (a) and (b) predict with `medtransfer predict` (the model's own decision threshold); for two
  classes (a) is also scored at argmax ("auto_argmax", the threshold 0.5 that (c) uses), which
  separates the head's quality from the operating point its threshold rule picks;
- per size: each figure averaged over the draws; intervals from 2,000 bootstrap resamples of the
  test images (the same resample for every draw and method), percentile 95%; "a − c" is the
  paired difference in accuracy (and in balanced accuracy), averaged over draws. The intervals
  hold the training draws fixed (they cover the test sample, not the draw: each draw's own
  accuracy is in the JSON, `accuracy_per_draw`) and resample images, not patients;
- (c)'s folds are grouped by the same patient pattern as (a)'s (StratifiedGroupKFold);
- eye fundus also gets the size/border-only baseline its README asks for: the same
  LogisticRegressionCV on (width, height, extension, share of near-black pixels).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SIZES = [5, 20, 60, "full"]
DRAWS = {5: 5, 20: 5, 60: 3, "full": 1}
DRAW_SEED = 2026
BOOTSTRAP = 2000
# scikit-learn 1.8 announces default changes; the defaults used here are spelled out below.
warnings.filterwarnings("ignore", category=FutureWarning)
CHEST_GROUPS = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"
EYE_GROUPS = r"^(\d+)_(?:left|right)\."


def run(cmd, ok=(0,)):
    """Runs a command; returns stdout. Exit status 2 (some files skipped) is allowed by callers."""
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode not in ok:
        sys.exit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}\n{result.stderr[-3000:]}")
    return result.stdout


class Cli:
    def __init__(self, binary, example_dir, cache):
        self.binary = str(binary)
        self.example_dir = example_dir
        self.cache = str(cache)

    def __call__(self, *args, ok=(0,)):
        return run([self.binary, *map(str, args)], ok=ok)

    def embed(self, folder):
        """{path: (class, vector)} of every image of a labelled folder."""
        out = self(
            "embed", "--json", "--backend", "cpu", "--cache", self.cache, "--data", folder, ok=(0, 2)
        )
        return {
            e["path"]: (e["class"], np.asarray(e["embedding"], dtype=np.float64))
            for e in json.loads(out)
            if "embedding" in e
        }


def prepare_sets(cli, shared, work, only=None):
    """[(name, train folder, test folder, group pattern)] of the sets present (of `only`)."""
    sets = []
    wanted = lambda name: not only or name in only
    chest = shared / "chest-xray-pneumonia"
    if chest.is_dir() and wanted("chest X-ray"):
        sets.append(("chest X-ray", chest / "train", chest / "test", CHEST_GROUPS))
    npz = shared / "medmnist" / "breastmnist_28.npz"
    if npz.is_file() and wanted("BreastMNIST"):
        out = work / "breastmnist"
        if not (out / "test").is_dir():
            run([str(cli.example_dir / "medmnist_folders"), str(npz), str(out), "malignant", "normal-benign"])
        sets.append(("BreastMNIST", out / "train", out / "test", None))
    for name, folder, pattern in [
        ("BUSI", "busi", None),
        ("lung histology", "lung-colon-histo-lc25000", None),
        ("eye fundus", "eye-fundus-4class", EYE_GROUPS),
    ]:
        src = shared / folder
        if not wanted(name):
            continue
        if not src.is_dir():
            print(f"SKIP {name}: {src} is absent", file=sys.stderr)
            continue
        out = work / folder
        if not (out / "test").is_dir():
            args = ["split", "--data", src, "--test-fraction", "0.2", "--seed", "42", "--out", out]
            if pattern:
                args += ["--group-pattern", pattern]
            cli(*args)
        sets.append((name, out / "train", out / "test", pattern))
    return sets


def draw(train_items, n, r):
    """n per class (or all), the same for every method."""
    if n == "full":
        return list(train_items)
    rng = np.random.default_rng(DRAW_SEED + 1000 * n + r)
    chosen = []
    for c in sorted({c for _, c in train_items}):
        pool = [item for item in train_items if item[1] == c]
        idx = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
        chosen += [pool[i] for i in idx]
    return chosen


def link_folder(items, folder):
    """A fresh folder-per-class tree of links to exactly `items`."""
    shutil.rmtree(folder, ignore_errors=True)
    for path, c in items:
        target = folder / c / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(path), target)
    linked = sum(1 for p in folder.rglob("*") if p.is_symlink())
    if linked != len(items):
        sys.exit(f"{folder}: {linked} links for {len(items)} images (two files share a name?)")


def group_keys(paths, pattern):
    """The key `--group-pattern` gives each file name (first capture group, else the match,
    else the name), as MedTransfer's GroupPattern does; None without a pattern."""
    if not pattern:
        return None
    regex = re.compile(pattern)
    keys = []
    for p in paths:
        name = Path(p).name
        m = regex.search(name)
        if m and m.lastindex and m.group(1):
            keys.append(m.group(1))
        elif m and m.group(0):
            keys.append(m.group(0))
        else:
            keys.append(name)
    return keys


def product_probabilities(cli, folder, test_paths, classes, manual, pattern, model, augment=0):
    args = ["train", "--data", folder, "--backend", "cpu", "--cache", cli.cache, "--out", model, "--json"]
    if manual:
        args += ["--recipe", "manual"]
    if augment:
        args += ["--augment", str(augment)]
    if pattern:
        args += ["--group-pattern", pattern]
    start = time.time()
    report = json.loads(cli(*args, ok=(0, 2)))
    seconds = time.time() - start
    out = json.loads(
        cli("predict", "--model", model, "--backend", "cpu", "--cache", cli.cache, "--json", *test_paths, ok=(0, 2))
    )
    by_path = {e["path"]: e for e in out}
    probs = np.array([[by_path[p]["probabilities"][c] for c in classes] for p in test_paths])
    labels = np.array([classes.index(by_path[p]["label"]) for p in test_paths])
    chosen = report["search"]["chosen_description"] if not manual else None
    return probs, labels, chosen, seconds


def sklearn_probabilities(x_train, y_train, x_test, groups=None):
    """(c): its defaults, folds grouped like (a)'s when there are groups."""
    splitter = StratifiedGroupKFold(5) if groups is not None else StratifiedKFold(5)
    cv = list(splitter.split(x_train, y_train, groups))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=5000, scoring="accuracy", cv=cv))
    model.fit(x_train, y_train)
    probs = model.predict_proba(x_test)
    return probs, probs.argmax(axis=1), float(model[-1].C_[0])


def figures(y, probs, pred):
    if probs.shape[1] == 2:
        auc = roc_auc_score(y, probs[:, 1])
    else:
        auc = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1])))
    return accuracy_score(y, pred), balanced_accuracy_score(y, pred), auc


def size_border_features(paths):
    from PIL import Image

    rows = []
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
            grey = np.asarray(im.convert("L"))
        ext = Path(p).suffix.lower()
        rows.append([w, h, ext == ".png", ext == ".jpeg", ext == ".jpg", float((grey < 20).mean())])
    return np.asarray(rows, dtype=np.float64)


def bootstrap_indices(n_test, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_test, size=(BOOTSTRAP, n_test))


def summarise(y, runs, boot):
    """Mean figures over draws with bootstrap intervals; runs: list of (probs, pred) per draw."""
    point = np.mean([figures(y, p, q) for p, q in runs], axis=0)
    accs = np.array([[accuracy_score(y[b], q[b]) for b in boot] for _, q in runs]).mean(axis=0)
    lo, hi = np.percentile(accs, [2.5, 97.5])
    return {"acc": point[0], "bal_acc": point[1], "auc": point[2], "acc_ci": [lo, hi]}


def paired_difference(y, a_runs, c_runs, boot, metric=accuracy_score):
    """Mean over draws of metric(a) − metric(c), with its bootstrap interval."""
    def mean_diff(idx):
        return np.mean([metric(y[idx], qa[idx]) - metric(y[idx], qc[idx]) for (_, qa), (_, qc) in zip(a_runs, c_runs)])

    diffs = [mean_diff(b) for b in boot]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": mean_diff(np.arange(len(y))), "ci": [lo, hi]}


def main():
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medtransfer-compare"))
    parser.add_argument("--target", type=Path, required=True, help="cargo target profile folder (with medtransfer)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "medtransfer" / "embeddings")
    parser.add_argument("--out", type=Path, default=root / "docs" / "compare-recipes.json")
    parser.add_argument("--sets", nargs="*", help="only these sets (names as in the table)")
    parser.add_argument("--sizes", nargs="*", help="only these sizes (5, 20, 60, full)")
    parser.add_argument(
        "--augment", type=int, default=0, help="augmented views per image for (a) only (train --augment N)"
    )
    args = parser.parse_args()
    if not args.shared.is_dir():
        sys.exit(f"SKIP: {args.shared} is absent (the shared data sets are needed)")
    cli = Cli(args.target / "medtransfer", args.target / "examples", args.cache)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results = []
    for name, train_dir, test_dir, pattern in prepare_sets(cli, args.shared, args.work, args.sets):
        print(f"== {name}", file=sys.stderr)
        train_emb, test_emb = cli.embed(train_dir), cli.embed(test_dir)
        classes = sorted({c for c, _ in test_emb.values()})
        train_items = [(p, c) for p, (c, _) in sorted(train_emb.items(), key=lambda kv: (kv[1][0], kv[0]))]
        test_paths = sorted(test_emb, key=lambda p: (test_emb[p][0], p))
        y_test = np.array([classes.index(test_emb[p][0]) for p in test_paths])
        x_test = np.stack([test_emb[p][1] for p in test_paths])
        boot = bootstrap_indices(len(test_paths), 7)
        baseline_test = size_border_features(test_paths) if name == "eye fundus" else None
        slug = re.sub(r"[^a-z]+", "-", name.lower())
        for n in SIZES:
            if args.sizes and str(n) not in args.sizes:
                continue
            runs = {"auto": [], "auto_argmax": [], "old": [], "sklearn": [], "size_border": []}
            extra = {"auto_chosen": [], "sklearn_C": [], "auto_seconds": [], "old_seconds": []}
            for r in range(DRAWS[n]):
                items = draw(train_items, n, r)
                folder = args.work / "runs" / slug / f"n{n}-d{r}"
                link_folder(items, folder / "train")
                for key, manual in [("auto", False), ("old", True)]:
                    probs, pred, chosen, seconds = product_probabilities(
                        cli,
                        folder / "train",
                        test_paths,
                        classes,
                        manual,
                        pattern,
                        folder / f"{key}.mtmodel",
                        0 if manual else args.augment,
                    )
                    runs[key].append((probs, pred))
                    if key == "auto" and len(classes) == 2:
                        # The same model without its out-of-fold threshold (argmax, as (c)).
                        runs["auto_argmax"].append((probs, probs.argmax(axis=1)))
                    extra[f"{key}_seconds"].append(round(seconds, 1))
                    if chosen is not None:
                        extra["auto_chosen"].append(chosen)
                x_train = np.stack([train_emb[p][1] for p, _ in items])
                y_train = np.array([classes.index(c) for _, c in items])
                groups = group_keys([p for p, _ in items], pattern)
                probs, pred, c_value = sklearn_probabilities(x_train, y_train, x_test, groups)
                runs["sklearn"].append((probs, pred))
                extra["sklearn_C"].append(c_value)
                if baseline_test is not None:
                    probs, pred, _ = sklearn_probabilities(
                        size_border_features([p for p, _ in items]), y_train, baseline_test, groups
                    )
                    runs["size_border"].append((probs, pred))
                print(f"   n={n} draw {r}: done", file=sys.stderr)
            row = {
                "set": name,
                "per_class": n,
                "draws": DRAWS[n],
                "train_images": len(items),
                "accuracy_per_draw": {
                    k: [float(accuracy_score(y_test, q)) for _, q in v] for k, v in runs.items() if v
                },
                "test_images": len(test_paths),
                **{k: summarise(y_test, v, boot) for k, v in runs.items() if v},
                "auto_minus_sklearn": paired_difference(y_test, runs["auto"], runs["sklearn"], boot),
                "auto_minus_sklearn_balanced": paired_difference(
                    y_test, runs["auto"], runs["sklearn"], boot, balanced_accuracy_score
                ),
                **extra,
            }
            results.append(row)
            print(format_row(row), file=sys.stderr)
    report = {
        "command": "bash scripts/compare-recipes.sh " + " ".join(sys.argv[3:]),
        "augment": args.augment,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "draw_seed": DRAW_SEED,
        "rows": results,
    }
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(markdown(results))


def fmt(s):
    return f"{s['acc']:.3f} ({s['acc_ci'][0]:.3f}–{s['acc_ci'][1]:.3f}) / {s['bal_acc']:.3f} / {s['auc']:.3f}"


def fmt_diff(d):
    return f"{d['diff']:+.3f} ({d['ci'][0]:+.3f} to {d['ci'][1]:+.3f})"


def format_row(row):
    return (
        f"{row['set']} n={row['per_class']}: auto {fmt(row['auto'])}; old {fmt(row['old'])}; "
        f"sklearn {fmt(row['sklearn'])}; a−c acc {fmt_diff(row['auto_minus_sklearn'])}, "
        f"bal. acc {fmt_diff(row['auto_minus_sklearn_balanced'])}"
    )


def markdown(rows):
    lines = [
        "| set | per class (draws) | (a) automatic: ACC (95% CI) / bal. ACC / AUC | (b) old default | "
        "(c) LogisticRegressionCV | a − c: ACC | a − c: bal. ACC |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_class = f"{row['per_class']} ({row['draws']})" if row["per_class"] != "full" else f"all {row['train_images']}"
        lines.append(
            f"| {row['set']} | {per_class} | {fmt(row['auto'])} | {fmt(row['old'])} | {fmt(row['sklearn'])} | "
            f"{fmt_diff(row['auto_minus_sklearn'])} | {fmt_diff(row['auto_minus_sklearn_balanced'])} |"
        )
    argmax = [r for r in rows if "auto_argmax" in r]
    if argmax:
        lines += ["", "| two classes: (a) at argmax (threshold 0.5) | per class | ACC (95% CI) / bal. ACC / AUC |", "|---|---|---|"]
        for row in argmax:
            lines.append(f"| {row['set']} | {row['per_class']} | {fmt(row['auto_argmax'])} |")
    baseline = [r for r in rows if "size_border" in r]
    if baseline:
        lines += ["", "| eye fundus, size/border-only baseline | per class | ACC (95% CI) / bal. ACC / AUC |", "|---|---|---|"]
        for row in baseline:
            lines.append(f"| LogisticRegressionCV on width, height, extension, black share | {row['per_class']} | {fmt(row['size_border'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
