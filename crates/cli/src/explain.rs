//! `medtransfer explain`: where in each image the evidence for a class lies (core's
//! [`medtransfer_core::gradcam`], Grad-CAM), as a heat-map PNG over the image and, with
//! `--json`, the map itself and its peak.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::gradcam::{Explainer, Heatmap, overlay};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::preprocess::{decode_image, preprocess_decoded};
use serde_json::{Value, json};

use crate::backbone::{Backbone, BackboneArgs, progress_bar};
use crate::dataset::walk_tree;
use crate::evaluate::{EXIT_SOME_FILES_FAILED, fail, write_atomically};

/// `medtransfer explain` arguments.
#[derive(Args)]
pub struct ExplainArgs {
    /// The model file written by `medtransfer train`.
    #[arg(long)]
    model: PathBuf,
    /// The class to explain, by name (default: each image's predicted class, with the model's
    /// two-class threshold).
    #[arg(long)]
    class: Option<String>,
    /// Folder for the heat-map PNGs (`NAME.gradcam.png`, created when missing).
    #[arg(long, default_value = "gradcam")]
    out: PathBuf,
    /// Images, or folders of images (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Print one JSON array instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// A file name in `out` for `path`'s heat map not given to an earlier image of this run.
fn output_path(out: &Path, path: &Path, taken: &mut HashSet<PathBuf>) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let mut candidate = out.join(format!("{stem}.gradcam.png"));
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = out.join(format!("{stem}-{n}.gradcam.png"));
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// Explains one file and writes its PNG to `target`.
fn explain_one(
    explainer: &Explainer,
    backbone: &Backbone,
    path: &Path,
    class: Option<usize>,
    target: &Path,
) -> Result<Heatmap, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let image = decode_image(&bytes).map_err(|e| e.to_string())?;
    let input = preprocess_decoded(&image).map_err(|e| e.to_string())?;
    let map = pollster::block_on(explainer.feature_map(&backbone.model, &input))
        .map_err(|e| e.to_string())?;
    let heatmap = explainer.explain(&map, class).map_err(|e| e.to_string())?;
    let mut png = Vec::new();
    overlay(&image.to_rgb8(), &heatmap)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the heat map: {e}"))?;
    write_atomically(target, &png)
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    Ok(heatmap)
}

/// `medtransfer explain`: JSON `[{"path", "class", "probability", "peak": [x, y], "heatmap":
/// [[…]], "overlay"}]` (peak in 0–1 image coordinates, x to the right, y down, `null` when no
/// cell holds evidence for the class; heatmap rows top
/// to bottom, values 0–1), or text. Exit status 1 when the model, the weights, the class or the
/// output folder are unusable (nothing on stdout), 2 when some image failed (its entry says
/// why; the others are explained).
pub fn explain(args: &ExplainArgs) -> ExitCode {
    let backbone = match Backbone::open(&args.backbone) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let model = match std::fs::read(&args.model)
        .map_err(|e| format!("cannot read {}: {e}", args.model.display()))
        .and_then(|bytes| {
            ModelFile::from_bytes(&bytes).map_err(|e| format!("{}: {e}", args.model.display()))
        }) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let explainer = match Explainer::from_file(&model, &backbone.device.device) {
        Ok(x) => x,
        Err(e) => return fail(format!("{}: {e}", args.model.display())),
    };
    let classes = &model.header.classes;
    let class = match &args.class {
        None => None,
        Some(name) => match classes.iter().position(|c| c == name) {
            Some(i) => Some(i),
            None => {
                return fail(format!(
                    "the model has no class {name:?}; its classes are {}",
                    classes.join(", ")
                ));
            }
        },
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        return fail(format!("cannot create {}: {e}", args.out.display()));
    }
    // Heat maps written by an earlier run are not images to explain.
    let out = std::fs::canonicalize(&args.out).ok();
    let mut paths = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            paths.extend(
                walk_tree(input)
                    .files
                    .into_iter()
                    .map(|(_, path)| path)
                    .filter(|path| {
                        let inside = std::fs::canonicalize(path)
                            .ok()
                            .zip(out.as_ref())
                            .is_some_and(|(p, o)| p.starts_with(o));
                        !inside
                    }),
            );
        } else {
            paths.push(input.clone());
        }
    }
    let bar = progress_bar(paths.len(), "explaining", args.json);
    let mut taken = HashSet::new();
    let entries: Vec<Value> = paths
        .iter()
        .map(|path| {
            let target = output_path(&args.out, path, &mut taken);
            let result = explain_one(&explainer, &backbone, path, class, &target);
            bar.inc(1);
            let path = path.display().to_string();
            match result {
                Ok(h) => json!({
                    "path": path,
                    "class": classes.get(h.class),
                    "probability": h.probabilities.get(h.class),
                    "peak": h.peak,
                    "heatmap": h.rows(),
                    "overlay": target.display().to_string(),
                }),
                Err(error) => json!({ "path": path, "error": error }),
            }
        })
        .collect();
    bar.finish_and_clear();
    if args.json {
        println!("{}", Value::Array(entries.clone()));
    } else {
        for e in &entries {
            let path = e["path"].as_str().unwrap_or("?");
            match e.get("error") {
                Some(error) => println!("{path}: ERROR {}", error.as_str().unwrap_or("?")),
                None => {
                    let evidence = match e["peak"].as_array() {
                        Some(peak) => format!(
                            "strongest evidence at x {:.2}, y {:.2}",
                            peak.first().and_then(Value::as_f64).unwrap_or(f64::NAN),
                            peak.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN)
                        ),
                        None => "no evidence for it anywhere in the image".to_string(),
                    };
                    println!(
                        "{path}: {} (p {:.3}), {evidence} -> {}",
                        e["class"].as_str().unwrap_or("?"),
                        e["probability"].as_f64().unwrap_or(f64::NAN),
                        e["overlay"].as_str().unwrap_or("?"),
                    )
                }
            }
        }
    }
    if entries.iter().any(|e| e.get("error").is_some()) {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
