//! Writes a synthetic `.mtproject` file for the scale benchmark (`bench/scale.mjs`): N images in
//! C classes, each with a small JPEG thumbnail and an embedding drawn around its class's own
//! random centre (so a head can learn them). No model.
//!
//! `cargo run -p medtransfer-cli --example synthetic_project -- OUT.mtproject [images] [classes]`

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
        let shade = (class * 255 / classes) as u8;
        let picture = DynamicImage::ImageLuma8(GrayImage::from_fn(96, 96, |x, y| {
            Luma([shade.wrapping_add(((x + y + i as u32) % 64) as u8)])
        }));
        let thumbnail = match thumbnail_of(&picture) {
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
        });
    }
    match project.to_bytes("synthetic_project example") {
        Ok(bytes) => match std::fs::write(out, &bytes) {
            Ok(()) => {
                println!(
                    "{out}: {images} images, {classes} classes, {} bytes",
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
