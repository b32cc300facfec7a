use super::*;

fn embedding(seed: f32) -> Vec<f32> {
    (0..EMBEDDING_DIM).map(|i| seed + i as f32 * 1e-3).collect()
}

fn activations(v: f32) -> CutFeatures {
    CutFeatures {
        values: vec![half::f16::from_f32(v); activation_bytes() / 2],
    }
}

fn sample() -> ProjectArchive {
    ProjectArchive {
        classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
        images: vec![
            ProjectImage {
                name: "a (1).jpeg".into(),
                class: 0,
                thumbnail: Some(vec![0xFF, 0xD8, 1, 2, 3]),
                embedding: embedding(0.5),
                views: vec![embedding(0.25), embedding(0.75)],
                activations: Some(activations(1.5)),
            },
            ProjectImage {
                name: "b.png".into(),
                class: 1,
                thumbnail: None,
                embedding: embedding(-2.0),
                views: Vec::new(),
                activations: None,
            },
        ],
        settings: serde_json::json!({"epochs": 7}),
        model: None,
    }
}

#[test]
fn round_trips() {
    let project = sample();
    let bytes = project.to_bytes("test").expect("write");
    assert_eq!(ProjectArchive::from_bytes(&bytes), Ok(project));
}

#[test]
fn activations_travel_and_a_file_without_them_reads_as_images_without() {
    let bytes = sample().to_bytes("test").expect("write");
    let back = ProjectArchive::from_bytes(&bytes).expect("reads");
    assert_eq!(back.images[0].activations, Some(activations(1.5)));
    assert_eq!(back.images[1].activations, None);
    // Announced but missing: damaged; none announced (an older file): none.
    let announced = with_manifest(|m| m["images"][1]["activations"] = true.into());
    assert!(matches!(
        ProjectArchive::from_bytes(&announced),
        Err(ProjectFileError::Damaged(_))
    ));
    let older = ProjectArchive {
        images: sample()
            .images
            .into_iter()
            .map(|im| ProjectImage {
                activations: None,
                ..im
            })
            .collect(),
        ..sample()
    };
    let back = ProjectArchive::from_bytes(&older.to_bytes("test").expect("write")).expect("reads");
    assert!(back.images.iter().all(|im| im.activations.is_none()));
}

/// A linear two-class model on the real embedding size, trained "with" `classes`.
fn model_bytes(classes: &[&str]) -> Vec<u8> {
    use crate::head::{HeadConfig, HeadKind, HeadWeights, OutputKind};
    use crate::train::{FeatureNormalization, LossKind, StopReason, TrainConfig, TrainedHead};
    let config = HeadConfig {
        kind: HeadKind::Linear,
        output: OutputKind::Sigmoid,
        input_dim: EMBEDDING_DIM,
        num_classes: 2,
    };
    let trained = TrainedHead {
        classes: classes.iter().map(|c| c.to_string()).collect(),
        config,
        weights: HeadWeights::initial(&config, 1).expect("valid"),
        normalization: FeatureNormalization {
            mean: vec![0.0; EMBEDDING_DIM],
            std: vec![1.0; EMBEDDING_DIM],
        },
        train_config: TrainConfig::default(),
        loss: LossKind::BinaryCrossEntropy,
        class_weights: vec![1.0, 1.0],
        history: Vec::new(),
        kept_epoch: 1,
        stop_reason: StopReason::Completed,
        validation: None,
        threshold: None,
    };
    ModelFile::from_trained(&trained, "test").to_bytes()
}

#[test]
fn a_model_keeps_its_class_names_after_classes_were_renamed_or_added() {
    let project = ProjectArchive {
        classes: vec!["normal".into(), "pneumonia".into(), "covid".into()],
        model: Some(model_bytes(&["NORMAL", "PNEUMONIA"])),
        ..sample()
    };
    let back = ProjectArchive::from_bytes(&project.to_bytes("test").expect("write"))
        .expect("a model trained before a rename is kept");
    let model =
        ModelFile::from_bytes(back.model.as_deref().expect("model kept")).expect("model reads");
    assert_eq!(model.header.classes, ["NORMAL", "PNEUMONIA"]);
    assert_eq!(back.classes, ["normal", "pneumonia", "covid"]);
}

#[test]
fn refuses_what_is_not_a_project() {
    assert_eq!(
        ProjectArchive::from_bytes(b"hello"),
        Err(ProjectFileError::NotAProjectFile)
    );
    assert_eq!(
        ProjectArchive::from_bytes(&[]),
        Err(ProjectFileError::NotAProjectFile)
    );
}

/// Rewrites the archive with its manifest changed by `edit`.
fn with_manifest(edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let bytes = sample().to_bytes("test").expect("write");
    let mut zip = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
    let mut out = ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).expect("entry");
        let name = file.name().expect("entry name").to_string();
        let mut content = Vec::new();
        file.read_to_end(&mut content).expect("read");
        if name == MANIFEST {
            let mut json: serde_json::Value = serde_json::from_slice(&content).expect("json");
            edit(&mut json);
            content = serde_json::to_vec(&json).expect("json");
        }
        out.start_file(name, SimpleFileOptions::default())
            .expect("start");
        out.write_all(&content).expect("write");
    }
    out.finish().expect("finish").into_inner()
}

#[test]
fn refuses_newer_versions_other_backbones_and_bad_shapes() {
    let newer = with_manifest(|m| m["format_version"] = 2.into());
    assert_eq!(
        ProjectArchive::from_bytes(&newer),
        Err(ProjectFileError::NewerVersion(2))
    );
    let other = with_manifest(|m| m["backbone"] = "resnet18".into());
    assert!(matches!(
        ProjectArchive::from_bytes(&other),
        Err(ProjectFileError::Incompatible { .. })
    ));
    let dim = with_manifest(|m| m["embedding_dim"] = 512.into());
    assert!(matches!(
        ProjectArchive::from_bytes(&dim),
        Err(ProjectFileError::Incompatible { .. })
    ));
    let class = with_manifest(|m| m["images"][1]["class"] = 5.into());
    let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&class) else {
        panic!("a class out of range must be refused");
    };
    assert!(message.contains("class 5"), "{message}");
    let extra = with_manifest(|m| {
        let mut third = m["images"][0].clone();
        third["thumbnail"] = false.into();
        m["images"].as_array_mut().expect("images").push(third);
    });
    let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&extra) else {
        panic!("an embedding count mismatch must be refused");
    };
    assert!(message.contains("embeddings"), "{message}");
    let model = with_manifest(|m| m["has_model"] = true.into());
    assert_eq!(
        ProjectArchive::from_bytes(&model),
        Err(damaged("its model is missing"))
    );
}

#[test]
fn refuses_non_finite_embeddings_and_inconsistent_projects() {
    let mut project = sample();
    project.images[1].embedding[3] = f32::NAN;
    let bytes = project.to_bytes("test").expect("write");
    assert!(matches!(
        ProjectArchive::from_bytes(&bytes),
        Err(ProjectFileError::Damaged(_))
    ));
    let mut project = sample();
    project.images[0].embedding.pop();
    assert!(matches!(
        project.to_bytes("test"),
        Err(ProjectFileError::Invalid(_))
    ));
}

#[test]
fn augmented_views_are_checked_and_older_files_have_none() {
    // The manifest of an image without views does not mention them (older files never did).
    let bytes = sample().to_bytes("test").expect("write");
    let mut zip = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
    let mut manifest = String::new();
    zip.by_name(MANIFEST)
        .expect("manifest")
        .read_to_string(&mut manifest)
        .expect("read");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    assert_eq!(manifest["images"][0]["views"], 2);
    assert!(manifest["images"][1].get("views").is_none());
    // Views the file does not have, or more than a project may hold, are refused.
    let missing = with_manifest(|m| m["images"][1]["views"] = 1.into());
    let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&missing) else {
        panic!("a view count the file does not match must be refused");
    };
    assert!(message.contains("augmented views"), "{message}");
    let many = with_manifest(|m| m["images"][0]["views"] = (MAX_VIEWS + 1).into());
    assert!(matches!(
        ProjectArchive::from_bytes(&many),
        Err(ProjectFileError::Damaged(_))
    ));
    let mut project = sample();
    project.images[0].views[1][7] = f32::INFINITY;
    let bytes = project.to_bytes("test").expect("write");
    let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&bytes) else {
        panic!("a non-finite view must be refused");
    };
    assert!(message.contains("augmented view of image 0"), "{message}");
    let mut project = sample();
    project.images[0].views[0].pop();
    assert!(matches!(
        project.to_bytes("test"),
        Err(ProjectFileError::Invalid(_))
    ));
}

#[test]
fn entries_cannot_read_more_than_the_budget() {
    // A crafted file can point many entries at the same stored bytes; the reader's budget
    // (the file's size) caps what all entries together may read.
    let mut project = sample();
    let mut thumb = vec![0x11; 4000];
    thumb[..2].copy_from_slice(&[0xFF, 0xD8]);
    project.images[0].thumbnail = Some(thumb);
    let bytes = project.to_bytes("test").expect("write");
    let read = ProjectArchive::from_bytes(&bytes).expect("a normal file reads");
    assert_eq!(read.images[0].thumbnail, project.images[0].thumbnail);
    let mut budget = 100u64;
    let mut zip = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
    let mut reader = Reader {
        zip: &mut zip,
        budget: &mut budget,
    };
    assert!(
        read_entry(&mut reader, &thumbnail_path(0), MAX_THUMBNAIL_BYTES).is_err(),
        "an entry larger than what is left of the budget is refused"
    );
}

#[test]
fn truncated_files_are_refused_without_panicking() {
    let bytes = sample().to_bytes("test").expect("write");
    for cut in (0..bytes.len()).step_by(97) {
        let _ = ProjectArchive::from_bytes(&bytes[..cut]);
    }
    for i in (0..bytes.len()).step_by(61) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5A;
        let _ = ProjectArchive::from_bytes(&flipped);
    }
}
