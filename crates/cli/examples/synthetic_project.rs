//! Writes a synthetic `.mtproject` file for the scale benchmark (`bench/scale.mjs`): N images in
//! C classes, each with a small JPEG thumbnail and an embedding drawn around its class's own
//! random centre (so a head can learn them). No model.
//!
//! `cargo run -p medtransfer-cli --example synthetic_project -- OUT.mtproject [images] [classes]`
//!
//! Or, with real embeddings, `… -- OUT.mtproject --from-embed EMBED.json`, where EMBED.json is
//! what `medtransfer embed --json --data DIR` prints: one image per embedded entry, its class
//! from the entry (thumbnails are still placeholders).

use std::process::ExitCode;

use image::{DynamicImage, GrayImage, Luma};
use medtransfer_core::efficientnet::EMBEDDING_DIM;
use medtransfer_core::project_file::{ProjectArchive, ProjectImage};
use medtransfer_core::rng::SeededRng;
use medtransfer_core::thumbnail::thumbnail_of;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: synthetic_project OUT.mtproject [images=5000] [classes=100]");
        return ExitCode::FAILURE;
    };
    if let (Some("--from-embed"), Some(json)) = (args.get(1).map(String::as_str), args.get(2)) {
        return match from_embed(json) {
            Ok(project) => write(out, &project),
            Err(e) => {
                eprintln!("{json}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let images: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let classes: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .max(1);
    let mut rng = SeededRng::new(7);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..EMBEDDING_DIM).map(|_| rng.uniform(0.0, 2.0)).collect())
        .collect();
    let mut project = ProjectArchive {
        classes: (0..classes).map(|c| format!("class {c:03}")).collect(),
        images: Vec::with_capacity(images),
        settings: serde_json::Value::Null,
        model: None,
    };
    for i in 0..images {
        let class = i % classes;
        let thumbnail = match placeholder(class, classes, i) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("thumbnail {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        project.images.push(ProjectImage {
            name: format!("synthetic-{i:05}.png"),
            class,
            thumbnail: Some(thumbnail),
            embedding: centres[class]
                .iter()
                .map(|c| (c + 0.5 * rng.normal()).max(0.0))
                .collect(),
            views: Vec::new(),
            activations: None,
        });
    }
    write(out, &project)
}

/// A grey placeholder thumbnail, one shade per class.
fn placeholder(class: usize, classes: usize, i: usize) -> Result<Vec<u8>, String> {
    let shade = (class * 255 / classes.max(1)) as u8;
    let picture = DynamicImage::ImageLuma8(GrayImage::from_fn(96, 96, |x, y| {
        Luma([shade.wrapping_add(((x + y + i as u32) % 64) as u8)])
    }));
    thumbnail_of(&picture).map_err(|e| e.to_string())
}

/// A project of the embedded entries of `medtransfer embed --json --data` output.
fn from_embed(path: &str) -> Result<ProjectArchive, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut classes: Vec<String> = entries
        .iter()
        .filter_map(|e| e["class"].as_str().map(str::to_owned))
        .collect();
    classes.sort();
    classes.dedup();
    let mut project = ProjectArchive {
        classes: classes.clone(),
        images: Vec::new(),
        settings: serde_json::Value::Null,
        model: None,
    };
    for (i, entry) in entries.iter().enumerate() {
        let (Some(class), Some(values)) = (entry["class"].as_str(), entry["embedding"].as_array())
        else {
            continue;
        };
        let class = classes.iter().position(|c| c == class).unwrap_or(0);
        let name = entry["path"].as_str().unwrap_or("image");
        project.images.push(ProjectImage {
            name: name.rsplit('/').next().unwrap_or(name).to_owned(),
            class,
            thumbnail: Some(placeholder(class, classes.len(), i)?),
            embedding: values
                .iter()
                .filter_map(|v| v.as_f64())
                .map(|v| v as f32)
                .collect(),
            views: Vec::new(),
            activations: None,
        });
    }
    Ok(project)
}

fn write(out: &str, project: &ProjectArchive) -> ExitCode {
    match project.to_bytes("synthetic_project example") {
        Ok(bytes) => match std::fs::write(out, &bytes) {
            Ok(()) => {
                println!(
                    "{out}: {} images, {} classes, {} bytes",
                    project.images.len(),
                    project.classes.len(),
                    bytes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{out}: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
