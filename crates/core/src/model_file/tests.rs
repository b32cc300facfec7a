use super::*;
use crate::head::{HeadKind, OutputKind};
use crate::train::ClassWeighting;

fn sample() -> ModelFile {
    let config = HeadConfig {
        kind: HeadKind::Mlp {
            hidden: 3,
            dropout: 0.5,
        },
        output: OutputKind::Sigmoid,
        input_dim: 4,
        num_classes: 2,
    };
    let trained = TrainedHead {
        classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
        config,
        weights: HeadWeights::initial(&config, 3).expect("valid"),
        normalization: FeatureNormalization {
            mean: vec![0.5, 1.0, 0.0, -2.0],
            std: vec![1.0, 2.0, 0.5, 1.0],
        },
        train_config: TrainConfig {
            class_weights: ClassWeighting::On,
            seed: 99,
            ..TrainConfig::default()
        },
        loss: LossKind::BinaryCrossEntropy,
        class_weights: vec![2.0, 0.5],
        history: Vec::new(),
        kept_epoch: 4,
        stop_reason: StopReason::EarlyStopped,
        validation: None,
        threshold: None,
    };
    ModelFile::from_trained(&trained, "medtransfer test")
}

#[test]
fn a_fine_tuned_model_round_trips_and_a_head_only_one_stays_version_2() {
    let head_only = sample().to_bytes();
    assert_eq!(head_only[MAGIC.len()..MAGIC.len() + 4], 2u32.to_le_bytes());
    let model = sample();
    let tensors = tail_tensor_shapes(1)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let len = shape.iter().product();
            (name, shape, vec![i as f32 * 0.25; len])
        })
        .collect();
    let tuned = FineTuned {
        tail: TailWeights { blocks: 1, tensors },
        head: TrainedHead {
            classes: model.header.classes.clone(),
            config: model.header.head,
            weights: model.weights.clone(),
            normalization: model.normalization.clone(),
            train_config: model.header.training.clone(),
            loss: model.header.loss,
            class_weights: model.header.class_weights.clone(),
            history: Vec::new(),
            kept_epoch: 2,
            stop_reason: StopReason::Completed,
            validation: None,
            threshold: None,
        },
        config: FineTuneConfig {
            blocks: 1,
            ..FineTuneConfig::default()
        },
    };
    let file = ModelFile::from_fine_tuned(&tuned, "medtransfer test");
    let bytes = file.to_bytes();
    assert_eq!(bytes[MAGIC.len()..MAGIC.len() + 4], 3u32.to_le_bytes());
    let back = ModelFile::from_bytes(&bytes).expect("reads");
    assert_eq!(back, file);
    assert_eq!(back.tail.as_ref(), Some(&tuned.tail));
    assert_eq!(back.header.fine_tuning.map(|f| f.blocks), Some(1));
    // A block count the header does not match its tensors is damage, not a panic.
    let mut wrong = file.clone();
    wrong.header.fine_tuning = Some(FineTuneConfig {
        blocks: 2,
        ..FineTuneConfig::default()
    });
    assert!(matches!(
        ModelFile::from_bytes(&wrong.to_bytes()),
        Err(ModelFileError::Damaged(_))
    ));
    wrong.header.fine_tuning = Some(FineTuneConfig {
        blocks: 99,
        ..FineTuneConfig::default()
    });
    assert!(matches!(
        ModelFile::from_bytes(&wrong.to_bytes()),
        Err(ModelFileError::Damaged(_))
    ));
    // A fine-tuned model's header in a version-2 file (checksum made right): refused.
    let mut older = bytes.clone();
    older[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&2u32.to_le_bytes());
    let body = older.len() - 32;
    let digest = Sha256::digest(&older[..body]);
    older[body..].copy_from_slice(&digest);
    assert!(matches!(
        ModelFile::from_bytes(&older),
        Err(ModelFileError::Damaged(m)) if m.contains("version 3")
    ));
    // Cut anywhere in the tail: refused.
    assert!(ModelFile::from_bytes(&bytes[..bytes.len() - 1000]).is_err());
}

#[test]
fn round_trips_exactly() {
    let model = sample();
    let bytes = model.to_bytes();
    let back = ModelFile::from_bytes(&bytes).expect("reads");
    assert_eq!(back, model);
    assert_eq!(back.header.training.seed, 99);
    // The header is readable JSON right after the fixed part.
    let text = String::from_utf8_lossy(&bytes[..400]);
    assert!(
        text.contains("\"classes\":[\"NORMAL\",\"PNEUMONIA\"]"),
        "{text}"
    );
}

#[test]
fn damaged_and_foreign_files_are_refused_without_panics() {
    let bytes = sample().to_bytes();
    assert!(matches!(
        ModelFile::from_bytes(b""),
        Err(ModelFileError::NotAModelFile)
    ));
    assert!(matches!(
        ModelFile::from_bytes(b"\x89PNG\r\n\x1a\n rest of a png"),
        Err(ModelFileError::NotAModelFile)
    ));
    // Every truncation is an error.
    for cut in [
        MAGIC.len(),
        MAGIC.len() + 3,
        MAGIC.len() + 20,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        assert!(
            ModelFile::from_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Any flipped byte is caught by the checksum.
    for at in [
        MAGIC.len() + 1,
        MAGIC.len() + 30,
        bytes.len() - 100,
        bytes.len() - 5,
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        assert!(ModelFile::from_bytes(&flipped).is_err(), "flip at {at}");
    }
    // A newer version is named as such.
    let mut newer = bytes.clone();
    newer[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        ModelFile::from_bytes(&newer),
        Err(ModelFileError::NewerVersion(7))
    ));
}

/// Re-signs altered content so the checks behind the checksum are exercised.
fn resign(mut model: ModelFile, edit: impl FnOnce(&mut ModelFile)) -> Vec<u8> {
    edit(&mut model);
    model.to_bytes()
}

#[test]
fn inconsistent_content_is_refused_even_with_a_valid_checksum() {
    let other_backbone = resign(sample(), |m| m.header.backbone = "resnet18".into());
    assert!(matches!(
        ModelFile::from_bytes(&other_backbone),
        Err(ModelFileError::Incompatible { .. })
    ));
    let wrong_classes = resign(sample(), |m| m.header.classes.push("extra".into()));
    assert!(ModelFile::from_bytes(&wrong_classes).is_err());
    let short_tensor = resign(sample(), |m| {
        m.weights.tensors[0].2.pop();
    });
    assert!(ModelFile::from_bytes(&short_tensor).is_err());
    let nan = resign(sample(), |m| m.normalization.std[0] = f32::NAN);
    assert!(ModelFile::from_bytes(&nan).is_err());
    let bad_shape = resign(sample(), |m| {
        m.header.tensors[0].shape = vec![usize::MAX, 2]
    });
    assert!(ModelFile::from_bytes(&bad_shape).is_err());
}

/// An OOD reference of the sample's 4-value embeddings.
fn reference() -> OodReference {
    let embeddings: Vec<Vec<f32>> = (0..12)
        .map(|i| vec![1.0, i as f32 * 0.1, (i % 3) as f32, 0.5])
        .collect();
    let labels: Vec<usize> = (0..12).map(|i| i % 2).collect();
    OodReference::fit(&embeddings, &labels, None, 1).expect("fits")
}

#[test]
fn an_ood_reference_round_trips_as_version_4_and_a_version_3_header_with_one_is_refused() {
    let model = sample().with_ood(reference());
    let bytes = model.to_bytes();
    assert_eq!(bytes[MAGIC.len()..MAGIC.len() + 4], 4u32.to_le_bytes());
    let back = ModelFile::from_bytes(&bytes).expect("reads");
    assert_eq!(back, model);
    assert_eq!(
        back.ood.as_ref().map(|r| r.calibration.references),
        Some(12)
    );
    // Adding it again replaces it.
    assert_eq!(model.clone().with_ood(reference()), model);
    // The reference's rows must have the head's input length.
    let wrong_width = resign(model.clone(), |m| {
        if let Some(r) = &mut m.ood {
            r.embeddings.truncate(12 * 3);
            r.dim = 3;
        }
        m.header.tensors.last_mut().expect("listed").shape = vec![12, 3];
    });
    assert!(matches!(
        ModelFile::from_bytes(&wrong_width),
        Err(ModelFileError::Damaged(_))
    ));
    // A non-finite reference value behind a valid checksum is refused.
    let nan = resign(model.clone(), |m| {
        if let Some(r) = &mut m.ood {
            r.embeddings[5] = f32::NAN;
        }
    });
    assert!(ModelFile::from_bytes(&nan).is_err());
    // The header in a version-3 file (checksum made right): refused, naming version 4.
    let mut older = bytes.clone();
    older[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&3u32.to_le_bytes());
    let body = older.len() - 32;
    let digest = Sha256::digest(&older[..body]);
    older[body..].copy_from_slice(&digest);
    assert!(matches!(
        ModelFile::from_bytes(&older),
        Err(ModelFileError::Damaged(m)) if m.contains("version 4")
    ));
    // A head-only file without it is still version 2.
    assert_eq!(
        sample().to_bytes()[MAGIC.len()..MAGIC.len() + 4],
        2u32.to_le_bytes()
    );
}
