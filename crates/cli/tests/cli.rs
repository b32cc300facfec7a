//! End-to-end tests of the `medtransfer` binary. Those that need the pretrained weights skip,
//! with a message, when `weights/` has not been fetched and converted (a fresh clone).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn weights_dir() -> PathBuf {
    std::env::var_os("MEDTRANSFER_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("weights"))
}

/// The weights folder when it has everything `classify` needs, else `None` after a message.
fn ready_weights() -> Option<PathBuf> {
    let dir = weights_dir();
    let needed = [
        "efficientnet-lite0.bpk",
        "imagenet-labels.json",
        "photos/chelsea.png",
    ];
    if needed.iter().all(|f| dir.join(f).is_file()) {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} lacks the converted weights; run scripts/test.sh (it fetches them)",
            dir.display()
        );
        None
    }
}

fn medtransfer(args: &[&str], weights: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtransfer"))
        .args(args)
        .env("MEDTRANSFER_WEIGHTS_DIR", weights)
        .output()
        .expect("the medtransfer binary runs")
}

fn json_stdout(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn classify_reports_each_file_and_exits_2_when_one_fails() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let bad = std::env::temp_dir().join("medtransfer-cli-test-not-an-image.png");
    std::fs::write(&bad, b"this is text, not a PNG").expect("temp file");
    let chelsea = weights.join("photos/chelsea.png");
    let output = medtransfer(
        &[
            "classify",
            "--json",
            "--backend",
            "cpu",
            chelsea.to_str().expect("utf-8 path"),
            bad.to_str().expect("utf-8 path"),
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(2));
    let entries = json_stdout(&output);
    let entries = entries.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 2, "one entry per input, in order");
    let top5 = entries[0]["top5"].as_array().expect("top5 for the photo");
    assert_eq!(top5.len(), 5);
    assert_eq!(top5[0]["index"], 285);
    assert_eq!(top5[0]["label"], "Egyptian cat");
    let p0 = top5[0]["prob"].as_f64().expect("prob");
    assert!((p0 - 0.79).abs() < 0.01, "top-1 probability {p0}");
    let probs: Vec<f64> = top5.iter().filter_map(|p| p["prob"].as_f64()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "sorted: {probs:?}");
    assert_eq!(entries[1]["path"], bad.to_str().expect("utf-8 path"));
    assert!(
        entries[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("decode")),
        "{}",
        entries[1]
    );
}

#[test]
fn embed_gives_1280_finite_values_per_image() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let coffee = weights.join("photos/coffee.png");
    let output = medtransfer(
        &[
            "embed",
            "--json",
            "--backend",
            "cpu",
            coffee.to_str().expect("utf-8 path"),
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(0));
    let entries = json_stdout(&output);
    let embedding = entries[0]["embedding"].as_array().expect("embedding");
    assert_eq!(embedding.len(), 1280);
    assert!(
        embedding
            .iter()
            .all(|v| v.as_f64().is_some_and(f64::is_finite))
    );
    // Pooled ReLU6 features: within [0, 6], not all zero.
    assert!(
        embedding
            .iter()
            .all(|v| v.as_f64().is_some_and(|x| (0.0..=6.0).contains(&x)))
    );
    assert!(
        embedding
            .iter()
            .any(|v| v.as_f64().is_some_and(|x| x > 0.1))
    );
}

#[test]
fn missing_weights_give_a_clear_error() {
    let empty = std::env::temp_dir().join("medtransfer-cli-test-no-weights");
    std::fs::create_dir_all(&empty).expect("temp dir");
    let output = medtransfer(&["embed", "--backend", "cpu", "x.png"], &empty);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("fetch-weights"), "{stderr}");
}

#[test]
fn device_on_cpu_passes_its_self_check() {
    let output = medtransfer(&["device", "--backend", "cpu", "--json"], &weights_dir());
    assert!(output.status.success());
    let report = json_stdout(&output);
    assert_eq!(report["backend"], "Cpu");
    assert_eq!(
        report["smoke_product"],
        serde_json::json!([1.0, 1.0, 2.5, 1.0])
    );
}
