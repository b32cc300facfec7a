//! `medtransfer embed`: the 1280-d embedding (the backbone's pooled features) of each image, or of
//! every image of a labelled folder, through the same embedding cache as `train`, so a folder
//! embedded once for training is exported at once (e.g. to check a head in NumPy or
//! scikit-learn on exactly the vectors MedTransfer trains on).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::embeddings::View;
use serde_json::{Value, json};

use crate::backbone::{Backbone, BackboneArgs, folder_skipped, progress_bar};
use crate::dataset::FolderDataset;

/// Exit status when some input files could not be embedded (the others were).
const EXIT_SOME_FILES_FAILED: u8 = 2;

/// `medtransfer embed`'s arguments.
#[derive(Args)]
pub struct EmbedArgs {
    /// Image files (any supported format: PNG, JPEG, DICOM, …).
    #[arg(required_unless_present = "data", conflicts_with = "data")]
    images: Vec<PathBuf>,
    /// A labelled folder (one sub-folder per class) instead of files: every image in it, each
    /// entry naming its class.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// Embeds the images (cached embeddings are read, the rest computed and cached) and prints, in
/// input order (for `--data`: class by class, each class's files sorted by path), one entry per
/// image: `{"path", "embedding": [1280 numbers in [0, 6]]}` plus `"class"` with `--data`, or
/// `{"path", "error"}` for a file that could not be read or decoded; with `--data`, the files
/// the folder walk left out (dangling or duplicate links) follow as `{"path", "error"}`. Exit
/// status 1 when the weights or the folder cannot be read (nothing printed on stdout), 2 when
/// some file failed or was left out.
pub fn embed(args: &EmbedArgs) -> ExitCode {
    let mut left_out = Vec::new();
    let (paths, classes): (Vec<PathBuf>, Vec<Option<String>>) = match &args.data {
        Some(root) => match FolderDataset::open(root) {
            Ok(dataset) => {
                left_out = folder_skipped(&dataset);
                dataset
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), dataset.classes.get(f.label).cloned()))
                    .unzip()
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => (args.images.clone(), vec![None; args.images.len()]),
    };
    let mut backbone = match Backbone::open(&args.backbone) {
        Ok(backbone) => backbone,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !args.json {
        eprintln!("backend: {}", backbone.device.describe());
    }
    let items: Vec<(PathBuf, View)> = paths.iter().map(|p| (p.clone(), View::Original)).collect();
    let bar = progress_bar(items.len(), "embedding", args.json);
    let results = backbone.embed(&items, &AugmentConfig::default(), &bar);
    bar.finish_and_clear();
    let mut failed = !left_out.is_empty();
    let mut entries: Vec<Value> = paths
        .iter()
        .zip(classes)
        .zip(results)
        .map(|((path, class), result)| {
            let path = path.display().to_string();
            let mut entry = match result {
                Ok(embedding) => json!({ "path": path, "embedding": embedding }),
                Err(error) => {
                    failed = true;
                    json!({ "path": path, "error": error })
                }
            };
            if let Some(class) = class {
                entry["class"] = json!(class);
            }
            entry
        })
        .collect();
    entries.extend(left_out);
    if args.json {
        println!("{}", Value::Array(entries));
    } else {
        for entry in &entries {
            print_line(entry);
        }
    }
    if failed {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// One readable line: the path, the class if any, and the first values (or the error).
fn print_line(entry: &Value) {
    let path = entry["path"].as_str().unwrap_or("?");
    let class = entry["class"]
        .as_str()
        .map(|c| format!(" [{c}]"))
        .unwrap_or_default();
    if let Some(error) = entry["error"].as_str() {
        println!("{path}{class}: ERROR {error}");
    } else if let Some(embedding) = entry["embedding"].as_array() {
        let head: Vec<String> = embedding
            .iter()
            .take(4)
            .map(|v| format!("{:.4}", v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        println!(
            "{path}{class}: {} values [{}, …]",
            embedding.len(),
            head.join(", ")
        );
    }
}
