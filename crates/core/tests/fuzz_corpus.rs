//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`: seeds, and inputs that once
//! crashed or that the fuzzer kept for their coverage) through the same entry points as the
//! targets, in the normal test suite: a fixed crash stays fixed without running the fuzzer.

use std::path::{Path, PathBuf};

use medtransfer_core::model_file::ModelFile;
use medtransfer_core::preprocess::{INPUT_LEN, preprocess_image};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let bytes = std::fs::read(e.path()).expect("readable");
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

/// Every input decodes or is refused, never panics; the seeds (named by kind, e.g.
/// `grey16.png`, `mono16_rle.dcm`) all decode.
#[test]
fn decode_preprocess_corpus() {
    for (name, bytes) in corpus("decode_preprocess") {
        let result = preprocess_image(&bytes);
        if let Ok(input) = &result {
            assert_eq!(input.len(), INPUT_LEN, "{name}");
            assert!(input.iter().all(|v| v.is_finite()), "{name}");
        }
        let is_seed = [".png", ".jpg", ".tif", ".dcm"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if is_seed {
            assert!(result.is_ok(), "seed {name}: {:?}", result.err());
        }
    }
}

/// Every input loads or is refused, never panics, also with a valid checksum appended; the
/// seed model files load.
#[test]
fn model_file_corpus() {
    use sha2::{Digest, Sha256};
    for (name, bytes) in corpus("model_file") {
        let plain = ModelFile::from_bytes(&bytes);
        if name.ends_with(".mtmodel") {
            assert!(plain.is_ok(), "seed {name}: {:?}", plain.err());
        }
        let mut sealed = bytes.clone();
        sealed.extend_from_slice(&Sha256::digest(&bytes));
        if let Ok(model) = ModelFile::from_bytes(&sealed) {
            assert!(ModelFile::from_bytes(&model.to_bytes()).is_ok(), "{name}");
        }
    }
}

/// Every input loads or is refused, never panics; what loads writes and reloads to the same
/// project; the seed projects (`*.mtproject`, from `fuzz/make_project_seeds.py`) load.
#[test]
fn project_file_corpus() {
    use medtransfer_core::project_file::ProjectArchive;
    for (name, bytes) in corpus("project_file") {
        let result = ProjectArchive::from_bytes(&bytes);
        if name.ends_with(".mtproject") {
            assert!(result.is_ok(), "seed {name}: {:?}", result.err());
        }
        if let Ok(project) = result {
            let written = project.to_bytes("test").expect("write");
            assert_eq!(ProjectArchive::from_bytes(&written), Ok(project), "{name}");
        }
    }
}

/// A project whose model takes other features than the backbone's embeddings is refused (the
/// 4-feature seed model), while the same project with a 1280-feature model loads.
#[test]
fn project_with_a_model_of_other_features_is_refused() {
    use medtransfer_core::project_file::{ProjectArchive, ProjectFileError};
    let seeds: std::collections::HashMap<String, Vec<u8>> = corpus("project_file")
        .into_iter()
        .chain(corpus("model_file"))
        .collect();
    let good = ProjectArchive::from_bytes(&seeds["model.mtproject"]).expect("the seed loads");
    let narrow = seeds["linear_softmax.mtmodel"].clone();
    let narrow_header = ModelFile::from_bytes(&narrow)
        .expect("the seed model loads")
        .header;
    assert_eq!(narrow_header.classes, good.classes);
    assert_ne!(narrow_header.head.input_dim, 1280);
    let bad = ProjectArchive {
        model: Some(narrow),
        ..good
    };
    let bytes = bad.to_bytes("test").expect("write");
    match ProjectArchive::from_bytes(&bytes) {
        Err(ProjectFileError::Damaged(message)) => assert!(message.contains("features")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
