//! `medtransfer check`: the data check (core's [`medtransfer_core::check`]) on a labelled
//! folder: exact and near-duplicates, label suspects and shortcuts, each with its files and
//! what to do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::check::{DataCheck, Finding, ImageFacts};
use medtransfer_core::train::LabelledEmbeddings;
use serde_json::{Value, json};

use crate::backbone::{
    Backbone, BackboneArgs, embed_files, folder_skipped, progress_bar, skipped_entry,
};
use crate::dataset::{FolderDataset, LabelledFile};
use crate::train::flags::group_keys;

/// Exit status when some files could not be checked (the others were).
const EXIT_SOME_FILES_FAILED: u8 = 2;

/// `medtransfer check`'s arguments.
#[derive(Args)]
pub struct CheckArgs {
    /// The labelled folder (one sub-folder per class).
    #[arg(long)]
    data: PathBuf,
    /// A regular expression whose first match in a file name is its patient id (as `train`'s):
    /// a patient's images stay in one fold when shortcuts are scored.
    #[arg(long)]
    group_pattern: Option<String>,
    /// Seed of the shortcut scores' folds and permutations.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// Reads every file's facts (hash, size, format, dark share) on all cores, in order.
fn read_facts(files: &[&LabelledFile]) -> Vec<Result<ImageFacts, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|f| {
                            let bytes = std::fs::read(&f.path).map_err(|e| e.to_string())?;
                            let name = f.path.file_name().unwrap_or_default().to_string_lossy();
                            ImageFacts::from_bytes(&name, &bytes).map_err(|e| e.to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("the reader failed".to_string()); chunk])
            })
            .collect()
    })
}

/// A labelled folder embedded and checked: what `check` reports and `map` marks.
pub(crate) struct CheckedFolder {
    /// The folder's classes and files.
    pub dataset: FolderDataset,
    /// The path of each usable image, in the order of `set` and `report`.
    pub paths: Vec<PathBuf>,
    /// Their embeddings and labels.
    pub set: LabelledEmbeddings,
    /// The data check on them.
    pub report: DataCheck,
    /// The files that could not be used, as `{"path", "error"}`.
    pub skipped: Vec<Value>,
}

/// Embeds every image of `data` (through the cache) and runs the data check on them.
///
/// # Errors
/// The folder, the weights or the group pattern cannot be used.
pub(crate) fn check_folder(
    data: &Path,
    group_pattern: Option<&str>,
    seed: u64,
    backbone: &BackboneArgs,
    quiet: bool,
) -> Result<CheckedFolder, String> {
    let dataset = FolderDataset::open(data)?;
    let mut backbone = Backbone::open(backbone)?;
    let files: Vec<&LabelledFile> = dataset.files.iter().collect();
    let bar = progress_bar(files.len(), "embedding", quiet);
    let (set, kept, mut skipped) = embed_files(&mut backbone, &files, &bar);
    bar.finish_and_clear();
    let usable: Vec<&LabelledFile> = kept.iter().map(|&i| files[i]).collect();
    let facts: Vec<Option<ImageFacts>> = read_facts(&usable)
        .into_iter()
        .zip(&usable)
        .map(|(result, file)| match result {
            Ok(f) => Some(f),
            Err(e) => {
                skipped.push(skipped_entry(&file.path, &e));
                None
            }
        })
        .collect();
    skipped.extend(folder_skipped(&dataset));
    let groups = group_keys(&usable, group_pattern)?;
    let report = DataCheck::run(
        dataset.classes.len(),
        &set.labels,
        &set.embeddings,
        &facts,
        groups.as_deref(),
        seed,
    )
    .map_err(|e| e.to_string())?;
    let paths = usable.iter().map(|f| f.path.clone()).collect();
    Ok(CheckedFolder {
        dataset,
        paths,
        set,
        report,
        skipped,
    })
}

/// Checks the folder and prints the findings: JSON `{"images", "classes", "findings": [{"kind",
/// "files", "classes", "advice", …}], "properties", "skipped"}`, or text. Exit status 1 when the
/// folder or the weights cannot be read (nothing on stdout), 2 when some file could not be
/// checked; findings do not change it.
pub fn check(args: &CheckArgs) -> ExitCode {
    let CheckedFolder {
        dataset,
        paths,
        set,
        report,
        skipped,
    } = match check_folder(
        &args.data,
        args.group_pattern.as_deref(),
        args.seed,
        &args.backbone,
        args.json,
    ) {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = |i: usize| paths[i].display().to_string();
    let class = |i: usize| dataset.classes[set.labels[i]].clone();
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let items: Vec<usize> = match f {
                Finding::ExactDuplicate { items, .. } => items.clone(),
                Finding::NearDuplicate { a, b, .. } => vec![*a, *b],
                Finding::LabelSuspect {
                    item, neighbours, ..
                } => std::iter::once(*item)
                    .chain(neighbours.iter().copied())
                    .collect(),
                Finding::Shortcut(_) => Vec::new(),
            };
            let mut entry = serde_json::to_value(f).unwrap_or_else(|_| json!({}));
            entry["files"] = json!(items.iter().map(|&i| path(i)).collect::<Vec<_>>());
            entry["file_classes"] = json!(items.iter().map(|&i| class(i)).collect::<Vec<_>>());
            entry["advice"] = json!(f.advice(&dataset.classes, &set.labels));
            entry
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "images": report.images,
                "classes": dataset.classes,
                "findings": findings,
                "properties": report.properties,
                "skipped": skipped,
            })
        );
    } else {
        print_text(&report, &findings, &dataset.classes, &skipped);
    }
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

/// The findings as text, one block per finding.
fn print_text(report: &DataCheck, findings: &[Value], classes: &[String], skipped: &[Value]) {
    println!(
        "{} images in {} classes checked",
        report.images,
        classes.len()
    );
    let count = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).count();
    println!(
        "exact duplicates: {}, near-duplicates: {}, label suspects: {}, shortcuts: {}",
        count("exact_duplicate"),
        count("near_duplicate"),
        count("label_suspect"),
        count("shortcut")
    );
    for f in findings {
        let kind = f["kind"]
            .as_str()
            .unwrap_or("?")
            .replace('_', " ")
            .to_uppercase();
        println!("\n{kind}: {}", f["advice"].as_str().unwrap_or(""));
        let files = f["files"].as_array().cloned().unwrap_or_default();
        let file_classes = f["file_classes"].as_array().cloned().unwrap_or_default();
        for (file, class) in files.iter().zip(&file_classes) {
            println!(
                "  {} [{}]",
                file.as_str().unwrap_or("?"),
                class.as_str().unwrap_or("?")
            );
        }
    }
    if !report.properties.is_empty() {
        println!("\nshortcut scores (out-of-fold balanced accuracy of each property alone):");
        for p in &report.properties {
            println!(
                "  {:<38} {:.3} (chance {:.3}, p = {:.3}){}",
                p.property.describe(),
                p.balanced_accuracy,
                p.chance,
                p.p_value,
                if p.flagged { "  SHORTCUT" } else { "" }
            );
        }
    }
    for s in skipped {
        eprintln!(
            "skipped {}: {}",
            s["path"].as_str().unwrap_or("?"),
            s["error"].as_str().unwrap_or("?")
        );
    }
}
