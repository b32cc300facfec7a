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
fn embed_a_labelled_folder_through_the_cache() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-embed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tiny_dataset(&root.join("data"));
    let data = root.join("data").to_string_lossy().to_string();
    let cache = root.join("cache");
    let cache_arg = cache.to_string_lossy().to_string();
    let args = [
        "embed",
        "--json",
        "--backend",
        "cpu",
        "--cache",
        &cache_arg,
        "--data",
        &data,
    ];
    let first = medtransfer(&args, &weights);
    // The broken file is reported in its entry; the others are embedded (exit 2).
    assert_eq!(first.status.code(), Some(2), "{first:?}");
    let entries = json_stdout(&first);
    let entries = entries.as_array().expect("array");
    assert_eq!(entries.len(), 9);
    let classes: Vec<&str> = entries.iter().filter_map(|e| e["class"].as_str()).collect();
    assert_eq!(classes.iter().filter(|c| **c == "bright").count(), 4);
    assert_eq!(classes.iter().filter(|c| **c == "dark").count(), 5);
    let broken: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("error").is_some())
        .collect();
    assert_eq!(broken.len(), 1);
    assert!(
        broken[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("broken.png"))
    );
    // Cached: one file per embedded image, and a second run gives the same numbers.
    let cached = walk_count(&cache);
    assert_eq!(cached, 8, "cache files");
    let second = json_stdout(&medtransfer(&args, &weights));
    assert_eq!(second, Value::Array(entries.clone()));
    // The same values as embedding the file on its own, without the cache.
    let one = entries
        .iter()
        .find(|e| e["class"] == "bright" && e.get("embedding").is_some())
        .expect("a bright image");
    let path = one["path"].as_str().expect("path");
    let alone = json_stdout(&medtransfer(
        &["embed", "--json", "--backend", "cpu", "--no-cache", path],
        &weights,
    ));
    let (a, b) = (&alone[0]["embedding"], &one["embedding"]);
    let a: Vec<f64> = a
        .as_array()
        .expect("a")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let b: Vec<f64> = b
        .as_array()
        .expect("b")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(a.len(), 1280);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    let _ = std::fs::remove_dir_all(&root);
}

/// Files below `dir`, recursively.
fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() { walk_count(&path) } else { 1 }
            })
            .sum()
    })
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

/// Settings outside core's limits are refused by the argument parser, naming the flag and the
/// range, before any image or weight is read.
#[test]
fn train_refuses_settings_outside_core_limits() {
    let empty = std::env::temp_dir().join("medtransfer-cli-test-limits");
    std::fs::create_dir_all(&empty).expect("temp dir");
    let base = ["train", "--data", "nowhere", "--out", "m.mtmodel"];
    for (flag, value, range) in [
        ("--val-split", "0.7", "from 0 to 0.5"),
        ("--epochs", "0", "from 1 to 100000"),
        ("--batch", "70000", "from 1 to 65536"),
        ("--lr", "0", "above 0 and below 10"),
        ("--lr", "NaN", "above 0 and below 10"),
        ("--weight-decay", "1", "at least 0 and below 1"),
        ("--label-smoothing", "0.5", "at least 0 and below 0.5"),
        ("--dropout", "-0.1", "at least 0 and below 1"),
        ("--hidden", "0", "from 1 to 65536"),
        ("--cv", "1", "from 2 to 50"),
    ] {
        let joined = format!("{flag}={value}");
        let mut args = base.to_vec();
        args.push(&joined);
        let output = medtransfer(&args, &empty);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(range),
            "{flag} {value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
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

/// A tiny two-class set of generated images (dark and bright squares) plus one broken file.
fn tiny_dataset(root: &std::path::Path) {
    for (class, level) in [("dark", 30u8), ("bright", 220u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..4u8 {
            let image = image::GrayImage::from_fn(40, 40, |x, y| {
                image::Luma([level.wrapping_add(((x + y) as u8 + i * 7) % 20)])
            });
            image.save(dir.join(format!("{i}.png"))).expect("png");
        }
    }
    std::fs::write(root.join("dark/broken.png"), b"not a png at all").expect("write");
}

#[test]
fn train_predict_eval_on_a_tiny_set_and_refuse_bad_model_files() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tiny_dataset(&root.join("data"));
    let model = root.join("m.mtmodel");
    let m = model.to_string_lossy().to_string();
    let data = root.join("data").to_string_lossy().to_string();
    let cache = root.join("cache").to_string_lossy().to_string();

    // The broken file is reported and skipped (exit 2); the model is still written.
    let output = medtransfer(
        &[
            "train",
            "--data",
            &data,
            "--val-split",
            "0",
            "--epochs",
            "3",
            "--head",
            "linear",
            "--lr",
            "1e-2",
            "--cache",
            &cache,
            "--cv",
            "4",
            "--out",
            &m,
            "--json",
        ],
        &weights,
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_stdout(&output);
    assert_eq!(report["train_images"], 8);
    let skipped = report["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]["path"]
            .as_str()
            .unwrap_or("")
            .ends_with("broken.png")
    );
    assert_eq!(report["classes"], serde_json::json!(["bright", "dark"]));
    // Cross-validation: every usable image predicted by a head that did not train on it.
    let cv = &report["cross_validation"];
    assert_eq!(cv["folds"], 4, "{report}");
    assert_eq!(cv["out_of_fold"]["n"], 8, "{report}");
    assert!(
        cv["out_of_fold"]["accuracy"]
            .as_f64()
            .is_some_and(|a| (0.0..=1.0).contains(&a))
    );

    // Predict on a folder: one entry per file, the broken one with its error.
    let output = medtransfer(
        &["predict", "--model", &m, "--cache", &cache, "--json", &data],
        &weights,
    );
    assert_eq!(output.status.code(), Some(2));
    let predictions = json_stdout(&output);
    let predictions = predictions.as_array().expect("array");
    assert_eq!(predictions.len(), 9);
    let labelled: Vec<&Value> = predictions
        .iter()
        .filter(|p| p.get("error").is_none())
        .collect();
    assert_eq!(labelled.len(), 8);
    // Bright and dark squares are told apart after training on them.
    for p in labelled {
        let path = p["path"].as_str().unwrap_or("");
        let expected = if path.contains("/bright/") {
            "bright"
        } else {
            "dark"
        };
        assert_eq!(p["label"], expected, "{p}");
        // Eight images are too few to calibrate an OOD warning: the keys are absent.
        assert!(p.get("out_of_distribution").is_none(), "{p}");
    }

    // eval refuses a class the model does not know.
    // (A class folder needs a file to be a class: empty folders are not classes.)
    std::fs::create_dir_all(root.join("other/unknown")).expect("mkdir");
    std::fs::write(root.join("other/unknown/x.png"), b"x").expect("write");
    let other = root.join("other").to_string_lossy().to_string();
    let output = medtransfer(
        &["eval", "--model", &m, "--data", &other, "--cache", &cache],
        &weights,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown"));

    // Damaged and foreign model files are refused with a message, never a panic.
    let mut bytes = std::fs::read(&model).expect("model");
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    let damaged = root.join("damaged.mtmodel");
    std::fs::write(&damaged, &bytes).expect("write");
    let foreign = root.join("foreign.mtmodel");
    std::fs::write(&foreign, b"PK\x03\x04 a zip file").expect("write");
    for (file, message) in [(&damaged, "damaged"), (&foreign, "not a MedTransfer model")] {
        let output = medtransfer(
            &["predict", "--model", &file.to_string_lossy(), &data],
            &weights,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_automatic_recipe_tries_augmented_views_when_asked() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-auto-augment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tiny_dataset(&root.join("data"));
    let data = root.join("data").to_string_lossy().to_string();
    let cache = root.join("cache").to_string_lossy().to_string();
    let model = root.join("m.mtmodel").to_string_lossy().to_string();
    let output = medtransfer(
        &[
            "train",
            "--data",
            &data,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--augment",
            "2",
            "--out",
            &model,
            "--json",
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report = json_stdout(&output);
    assert_eq!(report["recipe"], "automatic");
    let candidates = report["search"]["candidates"]
        .as_array()
        .expect("candidates");
    let described: Vec<&str> = candidates
        .iter()
        .filter_map(|c| c["description"].as_str())
        .collect();
    let augmented = described
        .iter()
        .filter(|d| d.ends_with("augmented views"))
        .count();
    // Every linear candidate, once without and once with the views.
    assert_eq!(augmented, 13, "{described:?}");
    assert_eq!(
        described
            .iter()
            .filter(|d| d.starts_with("linear") && !d.ends_with("augmented views"))
            .count(),
        13
    );
    // The refit trains on the views only when they were chosen.
    let chosen = report["search"]["chosen_description"]
        .as_str()
        .expect("chosen");
    let rows = report["train_rows"].as_u64().expect("rows");
    let images = report["train_images"].as_u64().expect("images");
    assert_eq!(images, 8);
    assert_eq!(
        rows,
        if chosen.ends_with("augmented views") {
            24
        } else {
            8
        },
        "{chosen}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn fine_tuning_the_last_blocks_writes_a_model_that_eval_and_predict_run() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-tune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (class, level) in [("dark", 40u8), ("bright", 200u8)] {
        let dir = root.join("data").join(class);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..10u8 {
            let image = image::RgbImage::from_fn(48, 48, |x, y| {
                let v = level.wrapping_add(((x * 3 + y) as u8).wrapping_mul(i + 1) % 40);
                image::Rgb([v, v / 2, 255 - v])
            });
            image.save(dir.join(format!("{i}.png"))).expect("png");
        }
    }
    let data = root.join("data").to_string_lossy().to_string();
    let cache = root.join("cache").to_string_lossy().to_string();
    let model = root.join("tuned.mtmodel");
    let m = model.to_string_lossy().to_string();
    let output = medtransfer(
        &[
            "train",
            "--data",
            &data,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--train-blocks",
            "2",
            "--tune-epochs",
            "2",
            "--out",
            &m,
            "--json",
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json_stdout(&output);
    assert_eq!(report["fine_tuning"]["blocks"], 2, "{report}");
    assert_eq!(report["fine_tuning"]["bytes_per_image"], 18_816);
    assert!(report["fine_tuning"]["head_only_validation"]["accuracy"].is_number());
    assert_eq!(report["train_images"], 16);
    let history = report["history"].as_array().expect("history");
    assert!(!history.is_empty() && history.len() <= 2, "{report}");
    // Cut-point activations were cached beside the embeddings.
    let cached = walk_count(&root.join("cache"));
    assert!(cached >= 40, "{cached} cache files");
    let bytes = std::fs::read(&model).expect("model");
    // Fine-tuned, with an out-of-distribution reference of its 20 images: format version 4.
    assert_eq!(bytes[18..22], 4u32.to_le_bytes(), "format version 4");
    assert_eq!(report["out_of_distribution"]["references"], 20, "{report}");

    // eval on the held-out images reproduces the figures training measured on them, so
    // eval ran the tuned blocks (the frozen backbone's embeddings would give others).
    let held = root.join("held");
    for path in report["validation_paths"].as_array().expect("paths") {
        let path = std::path::PathBuf::from(path.as_str().expect("path"));
        let class = path.parent().and_then(|p| p.file_name()).expect("class");
        std::fs::create_dir_all(held.join(class)).expect("mkdir");
        std::fs::copy(
            &path,
            held.join(class).join(path.file_name().expect("name")),
        )
        .expect("copy");
    }
    let output = medtransfer(
        &[
            "eval",
            "--model",
            &m,
            "--data",
            &held.to_string_lossy(),
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--json",
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let eval = json_stdout(&output);
    let validation = &report["validation"];
    assert_eq!(eval["n"], validation["n"]);
    for key in ["accuracy", "auc"] {
        let (a, b) = (eval[key].as_f64(), validation[key].as_f64());
        assert!(
            a.zip(b).is_some_and(|(a, b)| (a - b).abs() < 1e-9),
            "{key}: eval {a:?}, training {b:?}"
        );
    }
    // A photo of a cat is unlike every training image; the training images themselves are
    // mostly not (the threshold is the 95th percentile of their out-of-fold distances).
    let cat = weights
        .join("photos/chelsea.png")
        .to_string_lossy()
        .to_string();
    let output = medtransfer(
        &[
            "predict",
            "--model",
            &m,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--json",
            &data,
            &cat,
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let predictions = json_stdout(&output);
    let predictions = predictions.as_array().expect("array");
    assert_eq!(predictions.len(), 21);
    for p in predictions {
        let sum: f64 = ["bright", "dark"]
            .iter()
            .filter_map(|c| p["probabilities"][c].as_f64())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5, "{p}");
        let (flag, score) = (p["out_of_distribution"].as_bool(), p["ood_score"].as_f64());
        assert!(flag.zip(score).is_some_and(|(f, s)| f == (s > 1.0)), "{p}");
    }
    let flagged = |ps: &[Value]| {
        ps.iter()
            .filter(|p| p["out_of_distribution"] == true)
            .count()
    };
    assert_eq!(
        flagged(&predictions[20..]),
        1,
        "the cat: {}",
        predictions[20]
    );
    assert!(flagged(&predictions[..20]) <= 2, "{predictions:?}");
    // Its text output warns.
    let output = medtransfer(
        &[
            "predict",
            "--model",
            &m,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            &cat,
        ],
        &weights,
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("WARNING: unlike the training images"),
        "{text}"
    );
    // Grad-CAM through the tuned blocks: the class and probability `predict` gave.
    let first = predictions[0]["path"].as_str().expect("path");
    let out = root.join("heatmaps").to_string_lossy().to_string();
    let output = medtransfer(
        &[
            "explain",
            "--model",
            &m,
            "--backend",
            "cpu",
            "--out",
            &out,
            "--json",
            first,
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let explained = &json_stdout(&output)[0];
    assert_eq!(explained["class"], predictions[0]["label"], "{explained}");
    let (p_explain, p_predict) = (
        explained["probability"].as_f64().expect("p"),
        predictions[0]["probability"].as_f64().expect("p"),
    );
    assert!(
        (p_explain - p_predict).abs() < 1e-2,
        "{p_explain} vs {p_predict}"
    );
    // Fine-tuning needs held-out images; other flags it cannot serve are refused.
    for extra in [
        &["--val-split", "0"][..],
        &["--augment", "2"],
        &["--cv", "3"],
    ] {
        let mut args = vec![
            "train",
            "--data",
            &data,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--train-blocks",
            "2",
            "--out",
            &m,
        ];
        args.extend_from_slice(extra);
        let output = medtransfer(&args, &weights);
        assert!(!output.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn check_reports_a_label_conflict_and_each_unreadable_file() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tiny_dataset(&root);
    // The same file under both classes.
    std::fs::copy(root.join("dark/0.png"), root.join("bright/also-0.png")).expect("copy");
    let data = root.to_string_lossy().to_string();
    let cache = root.with_extension("cache").to_string_lossy().to_string();
    let args = [
        "check",
        "--data",
        &data,
        "--backend",
        "cpu",
        "--cache",
        &cache,
    ];
    let output = medtransfer(&[&args[..], &["--json"]].concat(), &weights);
    assert_eq!(output.status.code(), Some(2), "the broken file: {output:?}");
    let report = json_stdout(&output);
    assert_eq!(report["images"], 9, "{report}");
    assert_eq!(report["classes"], serde_json::json!(["bright", "dark"]));
    let conflicts: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "exact_duplicate")
        .collect();
    assert_eq!(conflicts.len(), 1, "{report}");
    let files: Vec<&str> = conflicts[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f.as_str().expect("path"))
        .collect();
    assert!(
        files.len() == 2
            && files[0].ends_with("bright/also-0.png")
            && files[1].ends_with("dark/0.png"),
        "{files:?}"
    );
    assert_eq!(
        conflicts[0]["file_classes"],
        serde_json::json!(["bright", "dark"])
    );
    assert!(
        conflicts[0]["advice"]
            .as_str()
            .expect("advice")
            .starts_with("Label conflict")
    );
    let skipped = report["skipped"].as_array().expect("skipped");
    assert!(
        skipped.len() == 1
            && skipped[0]["path"]
                .as_str()
                .expect("path")
                .ends_with("broken.png"),
        "{skipped:?}"
    );
    // Four readable images in `dark` are too few to score the properties (five are needed).
    assert_eq!(report["properties"], serde_json::json!([]), "{report}");
    // The text report says the same.
    let text = medtransfer(&args, &weights);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("9 images in 2 classes checked")
            && stdout.contains("EXACT DUPLICATE: Label conflict"),
        "{stdout}"
    );
    // The embedding map of the same folder: one CSV row per usable image, the conflict's
    // two files flagged, the two classes apart on the first axis (dark vs bright images).
    let csv_path = root.with_extension("csv");
    let csv_arg = csv_path.to_string_lossy().to_string();
    let output = medtransfer(
        &[
            "map",
            "--data",
            &data,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--out",
            &csv_arg,
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(2), "the broken file: {output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("9 images mapped"));
    let csv = std::fs::read_to_string(&csv_path).expect("the CSV");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,class,pc1,pc2,flags"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 9);
    for row in &rows {
        let flagged = row[4].contains("exact_duplicate");
        let conflict = row[0].ends_with("bright/also-0.png") || row[0].ends_with("dark/0.png");
        assert_eq!(flagged, conflict, "{row:?}");
    }
    let mean_pc1 = |class: &str| {
        let xs: Vec<f64> = rows
            .iter()
            .filter(|r| r[1] == class && !r[0].ends_with("also-0.png"))
            .map(|r| r[2].parse::<f64>().expect("a number"))
            .collect();
        xs.iter().sum::<f64>() / xs.len() as f64
    };
    let (dark, bright) = (mean_pc1("dark"), mean_pc1("bright"));
    let spread: f64 = rows
        .iter()
        .map(|r| r[3].parse::<f64>().expect("a number").abs())
        .fold(0.0, f64::max);
    assert!(
        (dark - bright).abs() > spread,
        "classes on the first axis: dark {dark}, bright {bright}; second axis within {spread}"
    );
    let _ = std::fs::remove_file(&csv_path);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(root.with_extension("cache"));
}

/// A 224×224 image of a textured background with grey distractor squares and, when `mark` is
/// given, a white disc (radius 14 px) with a black rim centred there (0–1 coordinates).
fn marked_image(seed: u64, mark: Option<(f32, f32)>) -> image::RgbImage {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32) / (1u64 << 31) as f32
    };
    let (fx, fy, phase) = (next() * 0.1 + 0.02, next() * 0.1 + 0.02, next() * 6.0);
    let mut image = image::RgbImage::from_fn(224, 224, |x, y| {
        let wave = ((x as f32 * fx + phase).sin() + (y as f32 * fy).cos()) * 25.0;
        let v = (110.0 + wave) as u8;
        image::Rgb([v, v, v])
    });
    for _ in 0..4 {
        let (sx, sy, grey) = ((next() * 200.0) as u32, (next() * 200.0) as u32, next());
        let level = (40.0 + grey * 120.0) as u8;
        for y in sy..(sy + 20).min(224) {
            for x in sx..(sx + 20).min(224) {
                image.put_pixel(x, y, image::Rgb([level, level, level]));
            }
        }
    }
    if let Some((mx, my)) = mark {
        let (cx, cy) = (mx * 224.0, my * 224.0);
        for (x, y, pixel) in image.enumerate_pixels_mut() {
            let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
            if d <= 14.0 {
                *pixel = image::Rgb([255, 255, 255]);
            } else if d <= 17.0 {
                *pixel = image::Rgb([0, 0, 0]);
            }
        }
    }
    image
}

/// Grad-CAM on a task whose evidence is known: an image is `marked` when it has a mark in one
/// place (both classes have the same textures and distractor squares), so each marked image's
/// heat map must peak on its mark; and `explain` reports bad files and unknown classes.
#[test]
fn explain_puts_the_grad_cam_peak_on_the_mark_that_decides_the_class() {
    let Some(weights) = ready_weights() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("mt-cli-explain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (mx, my) = (0.7f32, 0.3f32);
    for (class, mark) in [("marked", Some((mx, my))), ("plain", None)] {
        let dir = root.join("data").join(class);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..16u64 {
            let seed = i * 2 + u64::from(mark.is_some());
            marked_image(seed, mark)
                .save(dir.join(format!("{i}.png")))
                .expect("png");
        }
    }
    let new = root.join("new");
    std::fs::create_dir_all(&new).expect("mkdir");
    for i in 0..4u64 {
        marked_image(1000 + i, Some((mx, my)))
            .save(new.join(format!("marked-{i}.png")))
            .expect("png");
    }
    let s = |p: &std::path::Path| p.to_string_lossy().to_string();
    let (data, cache, model) = (
        s(&root.join("data")),
        s(&root.join("cache")),
        s(&root.join("m.mtmodel")),
    );
    let output = medtransfer(
        &[
            "train",
            "--data",
            &data,
            "--backend",
            "cpu",
            "--cache",
            &cache,
            "--out",
            &model,
            "--json",
        ],
        &weights,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let out = root.join("heatmaps");
    let new_dir = s(&new);
    let output = medtransfer(
        &[
            "explain",
            "--model",
            &model,
            "--backend",
            "cpu",
            "--out",
            &s(&out),
            "--json",
            &new_dir,
        ],
        &weights,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entries = json_stdout(&output);
    let entries = entries.as_array().expect("an array");
    assert_eq!(entries.len(), 4);
    for entry in entries {
        let path = entry["path"].as_str().expect("path");
        assert_eq!(entry["class"], "marked", "predicted class of {path}");
        let peak: Vec<f64> = entry["peak"]
            .as_array()
            .expect("peak")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        eprintln!("{path}: peak {peak:?}, mark ({mx}, {my})");
        assert!(
            (peak[0] - f64::from(mx)).abs() <= 0.15 && (peak[1] - f64::from(my)).abs() <= 0.15,
            "{path}: the heat map peaks at {peak:?}, the mark is at ({mx}, {my})"
        );
        let rows = entry["heatmap"].as_array().expect("heatmap");
        assert_eq!(rows.len(), 7);
        assert!(
            rows.iter()
                .all(|r| r.as_array().is_some_and(|r| r.len() == 7))
        );
        let overlay = image::open(entry["overlay"].as_str().expect("overlay")).expect("a PNG");
        assert_eq!((overlay.width(), overlay.height()), (224, 224));
    }

    // An unknown class is refused before any image; a broken file is reported on its own.
    let output = medtransfer(
        &["explain", "--model", &model, "--class", "middle", &new_dir],
        &weights,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("marked, plain"));
    let broken = root.join("broken.png");
    std::fs::write(&broken, b"not an image").expect("write");
    let one = s(&new.join("marked-0.png"));
    let output = medtransfer(
        &[
            "explain",
            "--model",
            &model,
            "--backend",
            "cpu",
            "--class",
            "plain",
            "--out",
            &s(&out),
            "--json",
            &s(&broken),
            &one,
        ],
        &weights,
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entries = json_stdout(&output);
    assert!(entries[0]["error"].is_string(), "{entries}");
    assert_eq!(entries[1]["class"], "plain", "the class asked for");
    let _ = std::fs::remove_dir_all(&root);
}
