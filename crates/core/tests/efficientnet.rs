//! End-to-end checks of the pretrained EfficientNet-Lite0 on Burn's `flex` CPU backend:
//! conversion of the real PyTorch checkpoint, agreement with an independent numpy reference
//! (golden fixtures in `tests/fixtures/efficientnet/`, see its README), and sensible
//! predictions on real photos through the shared preprocessing.
//!
//! Tests that need `weights/` (made by `scripts/fetch-weights.sh`) print a SKIP line and pass
//! when it is absent, so a fresh clone's `cargo test` works; the project's test script fetches
//! the weights first, so there they run. `MEDTRANSFER_WEIGHTS_DIR` overrides the folder.
//!
//! Native only: conversion reads files (the wasm build type-checks an empty test).
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use medtransfer_core::efficientnet::{
    EMBEDDING_DIM, EfficientNetLite0, ImageNetLabels, LABELS_FILE_NAME, NUM_CLASSES,
    PYTORCH_WEIGHTS_FILE_NAME, WeightsError, convert_pytorch_weights, load_from_bytes,
    top_k_predictions,
};
use medtransfer_core::inference::{Engine, run_batch_on};
use medtransfer_core::preprocess::{batch_to_tensor, preprocess_image};
use medtransfer_core::readback::read_f32;

/// Largest allowed |logit − oracle logit|.
const LOGIT_TOLERANCE: f64 = 1e-3;
/// Smallest allowed cosine similarity between our embedding and the oracle's.
const MIN_EMBEDDING_COSINE: f64 = 0.9999;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn weights_dir() -> PathBuf {
    std::env::var_os("MEDTRANSFER_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("weights"))
}

fn fixtures_dir() -> PathBuf {
    repo_root().join("tests/fixtures/efficientnet")
}

fn skip(test: &str, missing: &Path) {
    eprintln!(
        "SKIP {test}: {} not found; run scripts/fetch-weights.sh (or set MEDTRANSFER_WEIGHTS_DIR)",
        missing.display()
    );
}

/// The checkpoint converted by `convert_pytorch_weights` into a temporary file, read back;
/// made once per test binary. `None` when the checkpoint is absent.
fn converted_weights() -> Option<&'static [u8]> {
    static CONVERTED: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    CONVERTED
        .get_or_init(|| {
            let pth = weights_dir().join(PYTORCH_WEIGHTS_FILE_NAME);
            if !pth.is_file() {
                return None;
            }
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("efficientnet-lite0-{}.bpk", std::process::id()));
            let started = Instant::now();
            let summary = convert_pytorch_weights(&pth, &out).expect("the checkpoint converts");
            eprintln!(
                "converted {} in {:.2?}: {} tensors, {} parameters, {} bytes",
                pth.display(),
                started.elapsed(),
                summary.tensors,
                summary.parameters,
                summary.bytes
            );
            let bytes = std::fs::read(&out).expect("the converted file reads back");
            assert_eq!(bytes.len(), summary.bytes);
            let _ = std::fs::remove_file(&out);
            Some(bytes)
        })
        .as_deref()
}

/// The pretrained model on `flex`, or `None` (after a SKIP line) without the weights.
fn model_or_skip(test: &str) -> Option<EfficientNetLite0> {
    let Some(bytes) = converted_weights() else {
        skip(test, &weights_dir().join(PYTORCH_WEIGHTS_FILE_NAME));
        return None;
    };
    Some(load_from_bytes(bytes, &Device::flex()).expect("the converted weights load"))
}

fn read(tensor: Tensor<2>) -> Vec<f32> {
    pollster::block_on(read_f32(tensor)).expect("read back")
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * y).sum();
    let norm_a = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let norm_b = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (norm_a * norm_b)
}

/// One image of `expected.json`.
struct Golden {
    file: String,
    top1: usize,
    logits: Vec<f64>,
    embedding: Vec<f64>,
}

fn floats(value: &serde_json::Value, what: &str) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{what}: {v} is not a number"))
        })
        .collect()
}

fn golden_fixtures() -> Vec<Golden> {
    let path = fixtures_dir().join("expected.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is committed but unreadable: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("expected.json is JSON");
    json["images"]
        .as_array()
        .expect("images array")
        .iter()
        .map(|image| Golden {
            file: image["file"].as_str().expect("file name").to_string(),
            top1: image["top5"][0][0].as_u64().expect("top-1 class") as usize,
            logits: floats(&image["logits"], "logits"),
            embedding: floats(&image["embedding"], "embedding"),
        })
        .collect()
}

/// The committed fixtures are complete (runs without weights).
#[test]
fn golden_fixtures_are_complete() {
    let goldens = golden_fixtures();
    assert_eq!(goldens.len(), 3);
    for golden in &goldens {
        assert_eq!(golden.logits.len(), NUM_CLASSES, "{}", golden.file);
        assert_eq!(golden.embedding.len(), EMBEDDING_DIM, "{}", golden.file);
        let bytes = std::fs::read(fixtures_dir().join(&golden.file)).expect("input PNG");
        let input = preprocess_image(&bytes).expect("input PNG preprocesses");
        assert!(input.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

/// The golden fixtures' inputs, preprocessed as the app does.
fn golden_inputs(goldens: &[Golden]) -> Vec<Vec<f32>> {
    goldens
        .iter()
        .map(|g| {
            let bytes = std::fs::read(fixtures_dir().join(&g.file)).expect("input PNG");
            preprocess_image(&bytes).expect("preprocesses")
        })
        .collect()
}

/// Asserts that flat `[n, 1000]` logits and `[n, 1280]` embeddings agree with the oracle.
fn assert_matches_goldens(goldens: &[Golden], logits: &[f32], embeddings: &[f32], engine: &str) {
    for (i, golden) in goldens.iter().enumerate() {
        let ours_logits = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let ours_embedding = &embeddings[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM];
        let max_abs = ours_logits
            .iter()
            .zip(&golden.logits)
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            .fold(0.0, f64::max);
        let max_abs_embedding = ours_embedding
            .iter()
            .zip(&golden.embedding)
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            .fold(0.0, f64::max);
        let cos = cosine(ours_embedding, &golden.embedding);
        let top1 = ours_logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .expect("non-empty");
        eprintln!(
            "{engine}, {}: max |Δlogit| = {max_abs:.3e}, max |Δembedding| = \
             {max_abs_embedding:.3e}, cosine = {cos:.9} (1 − cosine = {:.1e}), top-1 {top1} \
             (oracle {})",
            golden.file,
            1.0 - cos,
            golden.top1
        );
        assert!(
            max_abs <= LOGIT_TOLERANCE,
            "{engine}, {}: logits differ from the oracle by up to {max_abs}",
            golden.file
        );
        assert!(
            cos >= MIN_EMBEDDING_COSINE,
            "{engine}, {}: embedding cosine {cos} vs the oracle",
            golden.file
        );
        assert_eq!(top1, golden.top1, "{engine}, {}: top-1 class", golden.file);
    }
}

/// Logits and embeddings of the three 224×224 fixture inputs, run as one batch through the
/// Burn graph on `flex`, agree with the float64 numpy oracle.
#[test]
fn matches_the_numpy_oracle_on_golden_fixtures() {
    let Some(model) = model_or_skip("matches_the_numpy_oracle_on_golden_fixtures") else {
        return;
    };
    let goldens = golden_fixtures();
    let batch = batch_to_tensor(&golden_inputs(&goldens), &Device::flex()).expect("batches");

    let started = Instant::now();
    let output = model.forward(batch);
    let logits = read(output.logits);
    let embeddings = read(output.embedding);
    eprintln!(
        "forward of a batch of {} on flex: {:.2?}",
        goldens.len(),
        started.elapsed()
    );
    assert_matches_goldens(&goldens, &logits, &embeddings, "Burn graph");
}

/// The CPU path (`run_batch` on `flex`, which runs MedTransfer's own kernels) agrees with the
/// oracle on the golden fixtures, and with the Burn graph on other images.
#[test]
fn cpu_kernels_match_the_numpy_oracle_and_the_burn_graph() {
    let Some(model) = model_or_skip("cpu_kernels_match_the_numpy_oracle_and_the_burn_graph") else {
        return;
    };
    let device = Device::flex();
    let goldens = golden_fixtures();
    let output = pollster::block_on(run_batch_on(
        &model,
        &golden_inputs(&goldens),
        &device,
        Engine::Auto,
    ))
    .expect("the kernels run");
    assert_matches_goldens(
        &goldens,
        &output.logits.concat(),
        &output.embeddings.concat(),
        "CPU kernels",
    );

    // Pseudo-random images over the whole input range, one batch on each engine.
    let images: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            (0..3 * 224 * 224)
                .map(|j: usize| {
                    ((j.wrapping_mul(2654435761) >> (7 + i)) % 256) as f32 / 128.0 - 1.0
                })
                .collect()
        })
        .collect();
    let kernels = pollster::block_on(run_batch_on(&model, &images, &device, Engine::Auto))
        .expect("the kernels run");
    let graph = pollster::block_on(run_batch_on(&model, &images, &device, Engine::BurnGraph))
        .expect("the graph runs");
    for (i, (ours, burn)) in kernels.logits.iter().zip(&graph.logits).enumerate() {
        let max_diff = ours
            .iter()
            .zip(burn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("image {i}: kernels vs Burn graph, max |Δlogit| = {max_diff:.3e}");
        assert!(max_diff <= 1e-3, "image {i}: logits differ by {max_diff}");
    }
    for (ours, burn) in kernels.embeddings.iter().zip(&graph.embeddings) {
        let max_diff = ours
            .iter()
            .zip(burn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max_diff <= 1e-3, "embeddings differ by {max_diff}");
    }
    // A wrong-sized input is an error, not a panic.
    let error = pollster::block_on(run_batch_on(
        &model,
        &[vec![0.0; 10]],
        &device,
        Engine::Auto,
    ))
    .expect_err("a 10-value image");
    assert!(error.to_string().contains("10"), "{error}");
}

/// The original (non-224×224) photos, through the shared preprocessing (whole-image resize),
/// get their ImageNet classes.
#[test]
fn classifies_real_photos() {
    let photos = weights_dir().join("photos");
    let chelsea = photos.join("chelsea.png");
    let coffee = photos.join("coffee.png");
    if !chelsea.is_file() || !coffee.is_file() {
        skip("classifies_real_photos", &photos);
        return;
    }
    let Some(model) = model_or_skip("classifies_real_photos") else {
        return;
    };
    let labels = std::fs::read_to_string(weights_dir().join(LABELS_FILE_NAME))
        .ok()
        .and_then(|json| ImageNetLabels::from_json(&json).ok());
    let inputs: Vec<Vec<f32>> = [&chelsea, &coffee]
        .iter()
        .map(|path| preprocess_image(&std::fs::read(path).expect("photo")).expect("decodes"))
        .collect();
    let batch = batch_to_tensor(&inputs, &Device::flex()).expect("batches");
    let ranked =
        pollster::block_on(top_k_predictions(model.forward_logits(batch), 5)).expect("ranks");
    for (name, predictions) in ["chelsea.png", "coffee.png"].iter().zip(&ranked) {
        let described: Vec<String> = predictions
            .iter()
            .map(|p| {
                let label = labels
                    .as_ref()
                    .and_then(|l| l.short_name(p.class))
                    .unwrap_or("?");
                format!("{} {label} {:.3}", p.class, p.probability)
            })
            .collect();
        eprintln!("{name}: {}", described.join(" | "));
    }
    let cat = ranked[0][0].class;
    assert!(
        (281..=285).contains(&cat),
        "chelsea.png top-1 is {cat}, not a cat"
    );
    let espresso = ranked[1][0].class;
    assert!(
        espresso == 967 || espresso == 968,
        "coffee.png top-1 is {espresso}, not espresso/cup"
    );
}

/// The label list fetched by `scripts/fetch-weights.sh` parses and is the standard order.
#[test]
fn fetched_label_list_parses() {
    let path = weights_dir().join(LABELS_FILE_NAME);
    let Ok(json) = std::fs::read_to_string(&path) else {
        skip("fetched_label_list_parses", &path);
        return;
    };
    let labels = ImageNetLabels::from_json(&json).expect("1000 labels");
    assert_eq!(labels.get(0), Some("tench, Tinca tinca"));
    assert_eq!(labels.get(285), Some("Egyptian cat"));
    assert_eq!(labels.short_name(967), Some("espresso"));
}

/// The real converted file is rejected once damaged; no panic on any of it.
#[test]
fn damaged_real_weights_are_rejected() {
    let Some(bytes) = converted_weights() else {
        skip(
            "damaged_real_weights_are_rejected",
            &weights_dir().join(PYTORCH_WEIGHTS_FILE_NAME),
        );
        return;
    };
    let device = Device::flex();
    let truncated = load_from_bytes(&bytes[..bytes.len() - 1], &device);
    assert!(
        matches!(truncated, Err(WeightsError::Damaged(_))),
        "{truncated:?}"
    );
    let mut flipped = bytes.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let result = load_from_bytes(&flipped, &device);
    assert!(
        matches!(result, Err(WeightsError::Damaged(_))),
        "{result:?}"
    );
    // The PyTorch checkpoint itself is not a converted file.
    let pth = std::fs::read(weights_dir().join(PYTORCH_WEIGHTS_FILE_NAME)).expect("pth");
    let result = load_from_bytes(&pth, &device);
    assert!(
        matches!(result, Err(WeightsError::NotWeightsFile(_))),
        "{result:?}"
    );
}

/// Conversion fails with a clear error, and writes nothing, on missing or broken checkpoints.
#[test]
fn conversion_rejects_bad_checkpoints() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join(format!("should-not-exist-{}.bpk", std::process::id()));

    let missing = convert_pytorch_weights(&tmp.join("no-such-file.pth"), &out);
    assert!(
        matches!(missing, Err(WeightsError::ReadCheckpoint { .. })),
        "{missing:?}"
    );

    let garbage = tmp.join(format!("garbage-{}.pth", std::process::id()));
    std::fs::write(&garbage, b"this is not a torch checkpoint").expect("writes");
    let result = convert_pytorch_weights(&garbage, &out);
    assert!(result.is_err(), "{result:?}");
    eprintln!(
        "garbage checkpoint: {}",
        result.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&garbage);

    let pth = weights_dir().join(PYTORCH_WEIGHTS_FILE_NAME);
    if let Ok(real) = std::fs::read(&pth) {
        let truncated = tmp.join(format!("truncated-{}.pth", std::process::id()));
        std::fs::write(&truncated, &real[..real.len() / 3]).expect("writes");
        let result = convert_pytorch_weights(&truncated, &out);
        assert!(result.is_err(), "a truncated checkpoint converted");
        eprintln!(
            "truncated checkpoint: {}",
            result.err().map(|e| e.to_string()).unwrap_or_default()
        );
        let _ = std::fs::remove_file(&truncated);
    } else {
        skip("conversion_rejects_bad_checkpoints (truncated part)", &pth);
    }
    assert!(!out.exists(), "a failed conversion left {}", out.display());
}

#[test]
fn run_batch_splits_large_batches_without_changing_results() {
    let Some(model) = model_or_skip("run_batch_splits_large_batches_without_changing_results")
    else {
        return;
    };
    let device = Device::flex();
    let batch = medtransfer_core::inference::MAX_FORWARD_BATCH + 2;
    // Distinct images, so that a mix-up of order across passes (the Burn graph, as on a GPU) or
    // across threads (the CPU kernels, whole images per core) would show.
    let images: Vec<Vec<f32>> = (0..batch)
        .map(|i| {
            (0..3 * 224 * 224)
                .map(|j| ((i * 31 + j * 7) % 255) as f32 / 128.0 - 1.0)
                .collect()
        })
        .collect();
    for engine in [Engine::Auto, Engine::BurnGraph] {
        let together = pollster::block_on(run_batch_on(&model, &images, &device, engine))
            .expect("the batch runs");
        assert_eq!(together.embeddings.len(), batch);
        assert_eq!(together.logits.len(), batch);
        for i in [0, batch / 2, batch - 1] {
            let alone = pollster::block_on(run_batch_on(&model, &images[i..=i], &device, engine))
                .expect("one image runs");
            let max_diff = alone.logits[0]
                .iter()
                .zip(&together.logits[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-4,
                "{engine:?}, image {i}: batched vs alone differ by {max_diff}"
            );
        }
    }
}

/// The frozen part (CPU kernels, stored as f16) followed by the pretrained tail gives the
/// network's own embedding, at every cut the page and CLI offer; and the Burn graph's
/// activations at the cut are the kernels'.
#[test]
fn cut_point_activations_and_the_pretrained_tail_give_the_embedding() {
    use medtransfer_core::efficientnet::{Tail, TailWeights, cut_shape};
    use medtransfer_core::finetune::cut_features;
    let Some(model) =
        model_or_skip("cut_point_activations_and_the_pretrained_tail_give_the_embedding")
    else {
        return;
    };
    let device = Device::flex();
    let goldens = golden_fixtures();
    let images = golden_inputs(&goldens);
    let full = pollster::block_on(run_batch_on(&model, &images, &device, Engine::Auto))
        .expect("the kernels run");
    for blocks in [1, 2, 5, 8] {
        let cut: Vec<_> = pollster::block_on(cut_features(&model, &images, blocks, &device))
            .expect("cut-point activations")
            .into_iter()
            .map(|r| r.expect("finite"))
            .collect();
        let (c, h, w) = cut_shape(blocks);
        assert!(cut.iter().all(|f| f.values.len() == c * h * w));
        let weights = pollster::block_on(TailWeights::pretrained(&model, blocks)).expect("reads");
        let tail = Tail::from_weights(&weights, &device).expect("fits");
        let flat: Vec<f32> = cut
            .iter()
            .flat_map(|f| f.values.iter().map(|v| v.to_f32()))
            .collect();
        let x = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(flat.clone(), [cut.len(), c, h, w]),
            &device,
        );
        let embeddings = read(tail.forward(x));
        let max_diff = embeddings
            .iter()
            .zip(full.embeddings.concat())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{blocks} blocks: tail on f16 activations vs the network, max |Δ| = {max_diff:.3e}"
        );
        assert!(
            max_diff <= 2e-2,
            "{blocks} blocks: embeddings differ by {max_diff}"
        );
        let frozen = 16 - blocks;
        let graph = pollster::block_on(read_f32(
            model.forward_cut(batch_to_tensor(&images, &device).expect("batch"), frozen),
        ))
        .expect("reads");
        let graph_diff = graph
            .iter()
            .zip(&flat)
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0f32, f32::max);
        assert!(
            graph_diff <= 5e-3,
            "{blocks} blocks: graph vs kernels {graph_diff}"
        );
    }
}

/// One pass gives the embedding and the activations the page stores; moving those to a later
/// cut gives what the frozen part computes there directly.
#[test]
fn embedding_with_activations_and_advancing_the_cut_agree_with_the_direct_paths() {
    use medtransfer_core::finetune::{
        STORED_BLOCKS, advance, cut_features, embed_with_activations,
    };
    let Some(model) = model_or_skip("embedding_with_activations_and_advancing_the_cut") else {
        return;
    };
    let device = Device::flex();
    let images = golden_inputs(&golden_fixtures());
    let full = pollster::block_on(run_batch_on(&model, &images, &device, Engine::Auto))
        .expect("the kernels run");
    let mut inputs: Vec<Result<Vec<f32>, String>> = images.iter().cloned().map(Ok).collect();
    inputs.insert(1, Err("a bad file".into()));
    let both = pollster::block_on(embed_with_activations(
        &model,
        inputs,
        STORED_BLOCKS,
        &device,
    ));
    assert_eq!(both.len(), images.len() + 1);
    assert_eq!(both[1], Err("a bad file".to_string()));
    let both: Vec<_> = both.into_iter().filter_map(Result::ok).collect();
    let stored: Vec<_> = pollster::block_on(cut_features(&model, &images, STORED_BLOCKS, &device))
        .expect("activations")
        .into_iter()
        .map(|r| r.expect("finite"))
        .collect();
    for (i, b) in both.iter().enumerate() {
        assert_eq!(
            b.embedding, full.embeddings[i],
            "image {i}: the same embedding"
        );
        assert_eq!(b.activations, stored[i], "image {i}: the same activations");
    }
    let moved =
        pollster::block_on(advance(&model, &stored, STORED_BLOCKS, 2, &device)).expect("advances");
    let direct: Vec<_> = pollster::block_on(cut_features(&model, &images, 2, &device))
        .expect("direct")
        .into_iter()
        .map(|r| r.expect("finite"))
        .collect();
    for (a, b) in moved.iter().zip(&direct) {
        let max_diff = a
            .values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x.to_f32() - y.to_f32()).abs() / (1.0 + y.to_f32().abs()))
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-2,
            "advanced vs direct activations: {max_diff}"
        );
    }
    assert!(pollster::block_on(advance(&model, &stored, 2, 8, &device)).is_err());
}

/// The last convolutional feature map Grad-CAM weighs, `[N, 1280, 7, 7]`, pools to the
/// network's embedding, from the whole network and from a cut through the pretrained tail.
#[test]
fn the_feature_map_pools_to_the_embedding_with_and_without_a_tail() {
    use medtransfer_core::efficientnet::{Tail, TailWeights};
    use medtransfer_core::gradcam::FeatureMap;
    let Some(model) =
        model_or_skip("the_feature_map_pools_to_the_embedding_with_and_without_a_tail")
    else {
        return;
    };
    let device = Device::flex();
    let images = golden_inputs(&golden_fixtures());
    let batch = || batch_to_tensor(&images, &device).expect("batch");
    let embeddings = read(model.forward_embedding(batch()));
    let weights = pollster::block_on(TailWeights::pretrained(&model, 2)).expect("reads");
    let tail = Tail::from_weights(&weights, &device).expect("fits");
    for (what, map) in [
        ("network", model.forward_feature_map(batch())),
        (
            "tail",
            tail.forward_feature_map(model.forward_cut(batch(), 14)),
        ),
    ] {
        assert_eq!(map.dims(), [images.len(), EMBEDDING_DIM, 7, 7], "{what}");
        let values = pollster::block_on(read_f32(map)).expect("reads");
        for (i, image) in values.chunks(EMBEDDING_DIM * 49).enumerate() {
            let pooled = FeatureMap {
                channels: EMBEDDING_DIM,
                height: 7,
                width: 7,
                values: image.to_vec(),
            }
            .embedding();
            let expected = &embeddings[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM];
            let diff = pooled
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-4,
                "{what}, image {i}: pooled map vs embedding {diff}"
            );
        }
    }
}
