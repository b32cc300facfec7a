//! A real-world class-folder drop (`tests/fixtures/cases/16-folder-junk-layout/dataset`: OS
//! junk, odd names, nesting, an empty file, a PDF, a link and a dangling link) through
//! `train`, `eval` and `split`: exactly two classes with 7 and 5 images, junk never a class or
//! a failed image, every other problem reported per file. Skips, with a message, without the
//! converted weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dataset() -> PathBuf {
    repo_root().join("tests/fixtures/cases/16-folder-junk-layout/dataset")
}

fn weights() -> Option<PathBuf> {
    let dir = std::env::var_os("MEDTRANSFER_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("weights"));
    if dir.join("efficientnet-lite0.bpk").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} lacks the converted weights; run scripts/test.sh (it fetches them)",
            dir.display()
        );
        None
    }
}

fn medtransfer(args: &[&str], weights: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medtransfer"))
        .args(args)
        .env("MEDTRANSFER_WEIGHTS_DIR", weights)
        .output()
        .expect("the medtransfer binary runs")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// File name → error of each `skipped` entry.
fn skipped(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            let path = s["path"].as_str().expect("path");
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            (name, s["error"].as_str().expect("error").to_string())
        })
        .collect();
    out.sort();
    out
}

fn assert_skipped_are_the_problem_files(report: &Value) {
    let skipped = skipped(report);
    let names: Vec<&str> = skipped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "broken_link.png",
            "empty_008.png",
            "link_to_101.png",
            "notes.pdf"
        ],
        "{skipped:?}"
    );
    let reason = |name: &str| &skipped.iter().find(|(n, _)| n == name).expect(name).1;
    assert!(
        reason("empty_008.png").contains("empty file"),
        "{skipped:?}"
    );
    assert!(
        reason("broken_link.png").contains("dangling link"),
        "{skipped:?}"
    );
    assert!(
        reason("link_to_101.png").contains("already included"),
        "{skipped:?}"
    );
    assert!(reason("notes.pdf").contains("PDF"), "{skipped:?}");
}

#[test]
fn train_and_eval_see_two_classes_of_7_and_5_images() {
    let Some(weights) = weights() else {
        return;
    };
    let dir = temp_dir("folder-case");
    let data = dataset().display().to_string();
    let model = dir.join("model.mtmodel").display().to_string();
    let cache = dir.join("cache").display().to_string();
    let args = [
        "train",
        "--data",
        &data,
        "--val-split",
        "0",
        "--head",
        "linear",
        "--epochs",
        "2",
        "--cache",
        &cache,
        "--out",
        &model,
        "--json",
    ];
    let output = medtransfer(&args, &weights);
    // Exit status 2: some files could not be used; the others trained the model.
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report = json(&output);
    assert_eq!(
        report["classes"],
        serde_json::json!(["normal", "pneumonia"])
    );
    assert_eq!(report["train_images"], 12);
    assert_skipped_are_the_problem_files(&report);

    let output = medtransfer(
        &[
            "eval", "--model", &model, "--data", &data, "--cache", &cache, "--json",
        ],
        &weights,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let report = json(&output);
    assert_eq!(report["n"], 12);
    let support: Vec<u64> = report["per_class"]
        .as_array()
        .expect("per_class")
        .iter()
        .map(|c| c["support"].as_u64().expect("support"))
        .collect();
    assert_eq!(support, [7, 5]);
    assert_skipped_are_the_problem_files(&report);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir");
                out.push(relative.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn split_copies_only_the_images_into_two_classes() {
    // Needs no weights: split decodes nothing, it recognises images by their first bytes.
    let weights = Path::new("/nonexistent");
    let dir = temp_dir("folder-split");
    let out = dir.join("split");
    let data = dataset().display().to_string();
    let out_arg = out.display().to_string();
    let args = [
        "split",
        "--data",
        &data,
        "--test-fraction",
        "0.4",
        "--seed",
        "3",
        "--out",
        &out_arg,
    ];
    let output = medtransfer(&args, weights);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "empty_008.png",
        "notes.pdf",
        "broken_link.png",
        "link_to_101.png",
    ] {
        assert!(stderr.contains(name), "{name} reported: {stderr}");
    }
    for junk in [
        "Thumbs.db",
        ".DS_Store",
        "._img",
        "__MACOSX",
        "desktop.ini",
        "README",
    ] {
        assert!(
            !stderr.contains(junk),
            "{junk} is junk, not reported: {stderr}"
        );
    }
    let files = files_under(&out);
    let count = |class: &str| {
        files
            .iter()
            .filter(|f| f.split('/').nth(1) == Some(class))
            .count()
    };
    assert_eq!((count("normal"), count("pneumonia")), (7, 5), "{files:?}");
    assert_eq!(files.len(), 12, "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("normal/subset_b/img_009.png")),
        "nested folders keep their place: {files:?}"
    );
    // Same seed, same split; and a split written inside its own data folder is refused.
    let again = dir.join("again");
    let again_arg = again.display().to_string();
    let mut args2 = args;
    args2[8] = again_arg.as_str();
    medtransfer(&args2, weights);
    assert_eq!(files_under(&again), files);
    let inside = dataset().join("split-here").display().to_string();
    args2[8] = inside.as_str();
    let output = medtransfer(&args2, weights);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("inside the data folder"));
    assert!(!dataset().join("split-here").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn class_names_that_differ_only_in_normalisation_are_one_class() {
    let dir = temp_dir("folder-nfc");
    let data = dir.join("data");
    let image = dataset().join("normal/img_001.png");
    // The NFC and NFD folders both hold x1..x4.png: one class, eight files, none lost.
    let mut layout = vec![
        ("caf\u{e9}".to_string(), "a.png".to_string()),
        ("cafe\u{301}".into(), "b.png".into()),
        ("cafe".into(), "c.png".into()),
        ("cafe".into(), "d.png".into()),
    ];
    for n in 1..=4 {
        layout.push(("caf\u{e9}".into(), format!("x{n}.png")));
        layout.push(("cafe\u{301}".into(), format!("x{n}.png")));
    }
    for (class, file) in &layout {
        std::fs::create_dir_all(data.join(class)).expect("mkdir");
        std::fs::copy(&image, data.join(class).join(file)).expect("copy");
    }
    let out = dir.join("split").display().to_string();
    let data_arg = data.display().to_string();
    let output = medtransfer(
        &[
            "split",
            "--data",
            &data_arg,
            "--test-fraction",
            "0.5",
            "--out",
            &out,
        ],
        Path::new("/nonexistent"),
    );
    assert!(output.status.success(), "{output:?}");
    let files = files_under(&dir.join("split"));
    let classes: std::collections::BTreeSet<&str> =
        files.iter().filter_map(|f| f.split('/').nth(1)).collect();
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        ["cafe", "caf\u{e9}"],
        "{files:?}"
    );
    assert_eq!(files.len(), 12, "{files:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another file of its class has that name"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A class folder whose name is not UTF-8 (Latin-1 `café` from an old archive): `split`
/// copies its images into the output, never onto the source files.
#[cfg(unix)]
#[test]
fn split_never_writes_onto_its_source() {
    use std::os::unix::ffi::OsStrExt;
    let dir = temp_dir("folder-latin1");
    let data = dir.join("data");
    let latin1 = data.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let image = dataset().join("normal/img_001.png");
    let original = std::fs::read(&image).expect("image");
    for (class, files) in [
        (latin1.clone(), ["a.png", "b.png"]),
        (data.join("tea"), ["c.png", "d.png"]),
    ] {
        std::fs::create_dir_all(&class).expect("mkdir");
        for file in files {
            std::fs::copy(&image, class.join(file)).expect("copy");
        }
    }
    let out = dir.join("split").display().to_string();
    let data_arg = data.display().to_string();
    let output = medtransfer(
        &[
            "split",
            "--data",
            &data_arg,
            "--test-fraction",
            "0.5",
            "--out",
            &out,
        ],
        Path::new("/nonexistent"),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(files_under(&dir.join("split")).len(), 4);
    for file in ["a.png", "b.png"] {
        assert_eq!(std::fs::read(latin1.join(file)).expect("source"), original);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
