//! `medtransfer eval`, `predict` and `split`: evaluating a trained head on a folder-per-class
//! image set, predicting with it, and splitting a set; and the reports and the atomic model
//! write they share with `train` (see [`crate::train`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::dataset_folder::class_name;
use medtransfer_core::embeddings::View;
use medtransfer_core::formats;
use medtransfer_core::metrics::{Evaluation, EvaluationOptions, evaluate, predicted_class};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::split::stratified_split;
use serde_json::{Value, json};

use crate::backbone::{Backbone, BackboneArgs, folder_skipped, progress_bar, skipped_entry};
use crate::dataset::{FolderDataset, LabelledFile, walk_tree};
use crate::predictor::{self, Predicted};
use crate::train::group_keys;
use medtransfer_core::finetune::ModelClassifier;

/// Exit status when some input files could not be processed (the others were).
pub(crate) const EXIT_SOME_FILES_FAILED: u8 = 2;

/// `medtransfer eval` arguments.
#[derive(Args)]
pub struct EvalArgs {
    /// The model file written by `medtransfer train`.
    #[arg(long)]
    model: PathBuf,
    /// Labelled images: one sub-folder per class, named as the model's classes.
    #[arg(long)]
    data: PathBuf,
    /// Two classes only: predict the second class when its probability is at least this
    /// (default: the threshold stored in the model, else the most probable class).
    #[arg(long)]
    threshold: Option<f64>,
    /// Print one JSON object instead of a report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// `medtransfer predict` arguments.
#[derive(Args)]
pub struct PredictArgs {
    /// The model file written by `medtransfer train`.
    #[arg(long)]
    model: PathBuf,
    /// Images, or folders of images (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Two classes only: predict the second class when its probability is at least this
    /// (default: the threshold stored in the model, else the most probable class).
    #[arg(long)]
    threshold: Option<f64>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// `medtransfer split` arguments.
#[derive(Args)]
pub struct SplitArgs {
    /// Labelled images: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// Share of each class that goes to `test/`.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Group key pattern, as for `train`.
    #[arg(long)]
    group_pattern: Option<String>,
    /// Fixes the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder to create with `train/` and `test/` (files are copied).
    #[arg(long)]
    out: PathBuf,
}

/// The backbone and a trained model's predictor for `eval` and `predict`.
fn open_backbone_and_model(
    backbone: &BackboneArgs,
    model: &Path,
) -> Result<(Backbone, ModelFile, ModelClassifier), String> {
    let backbone = Backbone::open(backbone)?;
    let (model, classifier) = predictor::open(model, &backbone.device)?;
    Ok((backbone, model, classifier))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed over `path`
/// once complete: a crash, a full disk or Ctrl-C never leaves a half-written file under the
/// real name, and an existing file is replaced only by a whole new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        use std::io::Write;
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The evaluation as the JSON object `eval --json` prints.
pub(crate) fn evaluation_json(e: &Evaluation, paths: Option<&[PathBuf]>) -> Value {
    let misclassified: Vec<Value> = e
        .misclassified
        .iter()
        .map(|m| {
            let mut v = json!({
                "index": m.index,
                "true": e.classes.get(m.true_class),
                "predicted": e.classes.get(m.predicted_class),
                "probability": m.probability,
            });
            if let Some(path) = paths.and_then(|p| p.get(m.index)) {
                v["path"] = json!(path.display().to_string());
            }
            v
        })
        .collect();
    json!({
        "n": e.n,
        "accuracy": e.accuracy,
        "balanced_accuracy": e.balanced_accuracy,
        "auc": e.auc,
        "accuracy_ci": e.accuracy_ci,
        "auc_ci": e.auc_ci,
        "log_loss": e.log_loss,
        "classes": e.classes,
        "per_class": e.per_class,
        "confusion_matrix": e.confusion_matrix,
        "misclassified": misclassified,
        "roc": e.roc,
    })
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or(String::new(), |[lo, hi]| {
        format!(" (95% CI {lo:.3}–{hi:.3})")
    })
}

pub(crate) fn print_evaluation(e: &Evaluation, paths: Option<&[PathBuf]>) {
    println!(
        "  accuracy           {:.3}{}",
        e.accuracy,
        fmt_ci(e.accuracy_ci)
    );
    println!("  balanced accuracy  {:.3}", e.balanced_accuracy);
    if let Some(auc) = e.auc {
        println!("  AUC                {auc:.3}{}", fmt_ci(e.auc_ci));
    }
    if let Some(note) = e.small_sample_note() {
        println!("  note: {note}");
    }
    println!(
        "  {:<20} {:>9} {:>11} {:>11} {:>6} {:>7}",
        "class", "precision", "sensitivity", "specificity", "F1", "support"
    );
    for c in &e.per_class {
        println!(
            "  {:<20} {:>9.3} {:>11.3} {:>11.3} {:>6.3} {:>7}",
            c.class, c.precision, c.sensitivity, c.specificity, c.f1, c.support
        );
    }
    println!("  confusion matrix (rows: true, columns: predicted):");
    for (name, row) in e.classes.iter().zip(&e.confusion_matrix) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>6}")).collect();
        println!("  {name:<20} {}", cells.join(""));
    }
    if let Some(paths) = paths {
        let shown = e.misclassified.len().min(10);
        if shown > 0 {
            println!(
                "  misclassified ({} in all, first {shown}):",
                e.misclassified.len()
            );
        }
        for m in e.misclassified.iter().take(shown) {
            println!(
                "    {} — true {}, predicted {} ({:.2})",
                paths
                    .get(m.index)
                    .map_or("?".into(), |p| p.display().to_string()),
                e.classes.get(m.true_class).map_or("?", String::as_str),
                e.classes.get(m.predicted_class).map_or("?", String::as_str),
                m.probability
            );
        }
    }
}

/// `medtransfer eval`.
pub fn eval(args: &EvalArgs) -> ExitCode {
    let (mut backbone, model, classifier) =
        match open_backbone_and_model(&args.backbone, &args.model) {
            Ok(opened) => opened,
            Err(e) => return fail(e),
        };
    let dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Map the folder's classes onto the model's by name.
    let mut mapping = Vec::new();
    for name in &dataset.classes {
        match model.header.classes.iter().position(|c| c == name) {
            Some(i) => mapping.push(i),
            None => {
                return fail(format!(
                    "the folder has a class \"{name}\" the model does not know (model classes: {:?})",
                    model.header.classes
                ));
            }
        }
    }
    let files: Vec<LabelledFile> = dataset
        .files
        .iter()
        .map(|f| LabelledFile {
            label: mapping[f.label],
            ..f.clone()
        })
        .collect();
    let bar = progress_bar(files.len(), predictor::stage(&classifier), args.json);
    let items: Vec<(PathBuf, View)> = files
        .iter()
        .map(|f| (f.path.clone(), View::Original))
        .collect();
    let results = predictor::predict(&classifier, None, &mut backbone, &items, &bar);
    bar.finish_and_clear();
    let mut skipped = folder_skipped(&dataset);
    let (mut probabilities, mut labels, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (file, result)) in files.iter().zip(results).enumerate() {
        match result {
            Ok(p) => {
                probabilities.push(p.probabilities);
                labels.push(file.label);
                kept.push(i);
            }
            Err(error) => skipped.push(skipped_entry(&file.path, &error)),
        }
    }
    if probabilities.is_empty() {
        return fail(match skipped.first() {
            Some(first) => format!(
                "no image in the folder could be used (first: {} {})",
                first["path"].as_str().unwrap_or("?"),
                first["error"].as_str().unwrap_or("?")
            ),
            None => "the folder has no images".to_string(),
        });
    }
    let threshold = args.threshold.or(model.header.threshold.map(|t| t.value));
    let options = EvaluationOptions {
        threshold,
        seed: model.header.training.seed,
        ..EvaluationOptions::default()
    };
    let evaluation = match evaluate(&probabilities, &labels, &model.header.classes, &options) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let paths: Vec<PathBuf> = kept.iter().map(|&i| files[i].path.clone()).collect();
    if args.json {
        let mut report = evaluation_json(&evaluation, Some(&paths));
        report["skipped"] = json!(skipped);
        report["threshold"] = json!(threshold);
        println!("{report}");
    } else {
        for s in &skipped {
            eprintln!(
                "skipped {}: {}",
                s["path"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("?")
            );
        }
        println!("{} ({} images):", args.data.display(), evaluation.n);
        print_evaluation(&evaluation, Some(&paths));
    }
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

/// `medtransfer predict`.
pub fn predict(args: &PredictArgs) -> ExitCode {
    let (mut backbone, model, classifier) =
        match open_backbone_and_model(&args.backbone, &args.model) {
            Ok(opened) => opened,
            Err(e) => return fail(e),
        };
    let mut paths = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            paths.extend(walk_tree(input).files.into_iter().map(|(_, path)| path));
        } else {
            paths.push(input.clone());
        }
    }
    let items: Vec<(PathBuf, View)> = paths.iter().map(|p| (p.clone(), View::Original)).collect();
    let bar = progress_bar(items.len(), predictor::stage(&classifier), args.json);
    let results = predictor::predict(&classifier, model.ood.as_ref(), &mut backbone, &items, &bar);
    bar.finish_and_clear();
    let classes = &model.header.classes;
    let threshold = args
        .threshold
        .or(model.header.threshold.map(|t| t.value))
        .filter(|_| classes.len() == 2);
    let entries: Vec<Value> = paths
        .iter()
        .zip(results)
        .map(|(path, result)| {
            let path = path.display().to_string();
            match result {
                Ok(Predicted { probabilities: p, ood }) => {
                    let best = predicted_class(&p, threshold);
                    let probs: serde_json::Map<String, Value> = classes
                        .iter()
                        .zip(&p)
                        .map(|(c, &v)| (c.clone(), json!(v)))
                        .collect();
                    let mut entry = json!({ "path": path, "label": classes.get(best), "probability": p.get(best), "probabilities": probs });
                    // Absent for a model file without an OOD reference (older, or too few
                    // training images).
                    if let Some(ood) = ood {
                        entry["out_of_distribution"] = json!(ood.out_of_distribution);
                        entry["ood_score"] = json!(ood.score);
                    }
                    entry
                }
                Err(error) => json!({ "path": path, "error": error }),
            }
        })
        .collect();
    let failed = entries.iter().any(|e| e.get("error").is_some());
    if args.json {
        println!("{}", Value::Array(entries));
    } else {
        for e in &entries {
            let path = e["path"].as_str().unwrap_or("?");
            if let Some(error) = e.get("error") {
                println!("{path}: ERROR {}", error.as_str().unwrap_or("?"));
                continue;
            }
            let probs: Vec<String> = classes
                .iter()
                .map(|c| {
                    format!(
                        "{c} {:.3}",
                        e["probabilities"][c].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect();
            let warning = match e["out_of_distribution"].as_bool() {
                Some(true) => format!(
                    "  WARNING: unlike the training images (OOD score {:.2}; above 1 is out of distribution): do not trust this prediction",
                    e["ood_score"].as_f64().unwrap_or(f64::NAN)
                ),
                _ => String::new(),
            };
            println!(
                "{path}: {}  ({}){warning}",
                e["label"].as_str().unwrap_or("?"),
                probs.join(", ")
            );
        }
    }
    if failed {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `medtransfer split`: a seeded, stratified (optionally grouped) train/test split of a
/// folder-per-class set, copied into `OUT/train/CLASS` and `OUT/test/CLASS`. Only image files
/// are split (recognised from their first bytes, as the decoder does); the others are reported.
pub fn split(args: &SplitArgs) -> ExitCode {
    let mut dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let (Ok(data), Some(out)) = (std::fs::canonicalize(&args.data), resolved(&args.out))
        && out.starts_with(&data)
    {
        return fail(format!(
            "the output folder {} is inside the data folder {}: choose one outside it",
            args.out.display(),
            args.data.display()
        ));
    }
    let mut skipped = folder_skipped(&dataset);
    dataset.files.retain(|file| match not_an_image(&file.path) {
        Some(reason) => {
            skipped.push(skipped_entry(&file.path, &reason));
            false
        }
        None => true,
    });
    let labels: Vec<usize> = dataset.files.iter().map(|f| f.label).collect();
    let files: Vec<&LabelledFile> = dataset.files.iter().collect();
    let groups = match group_keys(&files, args.group_pattern.as_deref()) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let split = match stratified_split(&labels, groups.as_deref(), args.test_fraction, args.seed) {
        Ok(s) => s,
        Err(e) => return fail(e.with_class_names(&dataset.classes)),
    };
    // Folders whose names differ only in Unicode normalisation are one class, so two of its
    // files may share a name: the second is copied under a numbered name, never over the first.
    let mut written = std::collections::HashSet::new();
    for (part, indices) in [("train", &split.train), ("test", &split.validation)] {
        for &i in indices {
            let file = &dataset.files[i];
            let wanted = args
                .out
                .join(part)
                .join(&dataset.classes[file.label])
                .join(&file.in_class);
            let target = unused_name(&wanted, &written);
            if target != wanted {
                eprintln!(
                    "note: {} copied as {}: another file of its class has that name",
                    file.path.display(),
                    target.display()
                );
            }
            written.insert(name_key(&target));
            let copied = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::copy(&file.path, &target).map(|_| ()));
            if let Err(e) = copied {
                return fail(format!(
                    "cannot copy {} to {}: {e}",
                    file.path.display(),
                    target.display()
                ));
            }
        }
    }
    for s in &skipped {
        eprintln!(
            "skipped {}: {}",
            s["path"].as_str().unwrap_or("?"),
            s["error"].as_str().unwrap_or("?")
        );
    }
    println!(
        "{}: {} train, {} test images (seed {}) in {}",
        args.data.display(),
        split.train.len(),
        split.validation.len(),
        args.seed,
        args.out.display()
    );
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

/// How a file system that ignores case or Unicode normalisation (macOS, Windows) sees `path`.
fn name_key(path: &Path) -> String {
    class_name(&path.to_string_lossy()).to_lowercase()
}

/// `wanted`, or the first of `stem (2).ext`, `stem (3).ext`, … whose [`name_key`] is not in
/// `taken`.
fn unused_name(wanted: &Path, taken: &std::collections::HashSet<String>) -> PathBuf {
    let stem = wanted.file_stem().unwrap_or_default().to_string_lossy();
    let extension = wanted
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    std::iter::once(wanted.to_path_buf())
        .chain((2..).map(|n| wanted.with_file_name(format!("{stem} ({n}){extension}"))))
        .find(|candidate| !taken.contains(&name_key(candidate)))
        .unwrap_or_else(|| wanted.to_path_buf())
}

/// `path` with links and `..` resolved, even when it does not exist yet: its nearest existing
/// ancestor canonicalised, and the rest appended.
fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return Some(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
}

/// Why `path` is not an image file (empty, unreadable, or not PNG, JPEG, TIFF or DICOM by its
/// first bytes), or `None` when it is one. Reads at most 4 KiB.
fn not_an_image(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut head)) {
        return Some(format!("cannot read the file: {e}"));
    }
    if formats::sniff(&head).is_some() {
        return None;
    }
    Some(match formats::decode_8bit(&head) {
        Err(e) => e.to_string(),
        Ok(_) => return None,
    })
}
