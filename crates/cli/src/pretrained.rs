//! Commands that use the pretrained EfficientNet-Lite0's ImageNet classifier: `convert-weights`,
//! `classify` (`embed` is in `embed.rs`, through the embedding cache).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::efficientnet::{
    CONVERTED_WEIGHTS_FILE_NAME, EfficientNetLite0, ImageNetLabels, LABELS_FILE_NAME,
    convert_pytorch_weights, load_from_bytes,
};
use medtransfer_core::inference::{ImageOutput, run_each};
use medtransfer_core::preprocess::preprocess_image;
use serde_json::{Value, json};

use crate::Backend;

/// Exit status when some input files could not be processed (the others were).
const EXIT_SOME_FILES_FAILED: u8 = 2;

/// Arguments shared by the commands that run the pretrained network on images.
#[derive(Args)]
pub struct PretrainedArgs {
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Folder holding the converted weights and the ImageNet labels.
    #[arg(long, env = "MEDTRANSFER_WEIGHTS_DIR", default_value = "weights")]
    weights: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t)]
    backend: Backend,
    /// Images read and decoded at a time (on a GPU the network runs them in passes of at most 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
}

/// `medtransfer convert-weights --from PTH --to BPK`.
pub fn convert(from: &Path, to: &Path) -> ExitCode {
    match convert_pytorch_weights(from, to) {
        Ok(summary) => {
            println!(
                "wrote {}: {} tensors, {} parameters, {} bytes",
                to.display(),
                summary.tensors,
                summary.parameters,
                summary.bytes
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `medtransfer classify`: top-5 ImageNet classes per image.
pub fn classify(args: &PretrainedArgs) -> ExitCode {
    let labels_path = args.weights.join(LABELS_FILE_NAME);
    let labels = match std::fs::read_to_string(&labels_path)
        .map_err(|e| e.to_string())
        .and_then(|json| ImageNetLabels::from_json(&json).map_err(|e| e.to_string()))
    {
        Ok(labels) => labels,
        Err(error) => return setup_error(&labels_path, &error),
    };
    run_on_images(args, &labels)
}

/// The `classify` entry for one image's output: its five most probable ImageNet classes.
fn top5_entry(labels: &ImageNetLabels, path: &str, output: &ImageOutput) -> Value {
    let top5: Vec<Value> = labels
        .top_k(&output.logits, 5)
        .into_iter()
        .map(|(p, label)| json!({ "index": p.class, "label": label, "prob": p.probability }))
        .collect();
    json!({ "path": path, "top5": top5 })
}

/// Loads the model, runs it on every image in batches and prints one entry per image, in input
/// order, or `{"path", "error"}` for a file that failed. Exit status 2 when any file failed.
fn run_on_images(args: &PretrainedArgs, labels: &ImageNetLabels) -> ExitCode {
    let weights_path = args.weights.join(CONVERTED_WEIGHTS_FILE_NAME);
    let device = crate::device::open(args.backend);
    let model = match std::fs::read(&weights_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| load_from_bytes(&bytes, &device.device).map_err(|e| e.to_string()))
    {
        Ok(model) => model,
        Err(error) => return setup_error(&weights_path, &error),
    };
    if !args.json {
        eprintln!("backend: {}", device.describe());
    }
    let mut entries = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(usize::from(args.batch)) {
        entries.extend(process_chunk(&model, chunk, &device.device, labels));
    }
    let failed = entries.iter().any(|e| e.get("error").is_some());
    if args.json {
        println!("{}", Value::Array(entries));
    } else {
        print_table(&entries);
    }
    if failed {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Preprocesses and runs one batch; a file that cannot be read or decoded becomes an error
/// entry and the rest go on.
fn process_chunk(
    model: &EfficientNetLite0,
    paths: &[PathBuf],
    device: &burn::tensor::Device,
    labels: &ImageNetLabels,
) -> Vec<Value> {
    let inputs = paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
            preprocess_image(&bytes).map_err(|e| e.to_string())
        })
        .collect();
    let outputs = pollster::block_on(run_each(model, inputs, device));
    paths
        .iter()
        .zip(outputs)
        .map(|(path, output)| {
            let path = path.display().to_string();
            match output {
                Ok(output) => top5_entry(labels, &path, &output),
                Err(error) => json!({ "path": path, "error": error }),
            }
        })
        .collect()
}

/// Readable output: one line per image (or per class for `classify`).
fn print_table(entries: &[Value]) {
    for entry in entries {
        let path = entry["path"].as_str().unwrap_or("?");
        if let Some(error) = entry.get("error") {
            println!("{path}: ERROR {}", error.as_str().unwrap_or("?"));
        } else if let Some(top5) = entry["top5"].as_array() {
            println!("{path}");
            for p in top5 {
                println!(
                    "  {:>4}  {:<32} {:>6.2}%",
                    p["index"],
                    p["label"].as_str().unwrap_or("?"),
                    p["prob"].as_f64().unwrap_or(f64::NAN) * 100.0
                );
            }
        }
    }
}

/// Reports a missing or bad weights/labels file with what to run, and fails.
fn setup_error(path: &Path, error: &str) -> ExitCode {
    eprintln!(
        "error: cannot load {}: {error}\n\
         Fetch and convert the pretrained weights first: `bash scripts/fetch-weights.sh` then \
         `medtransfer convert-weights --from weights/efficientnet-lite0.pth --to \
         weights/efficientnet-lite0.bpk` (scripts/run.sh and scripts/test.sh do both), or pass \
         --weights DIR.",
        path.display()
    );
    ExitCode::FAILURE
}
