use super::*;

/// Deterministic small parameters of the right shapes (not a useful network, but a valid
/// file), so the loader can be tested without the real weights.
pub(crate) fn synthetic_params() -> Vec<NamedParam> {
    param_specs()
        .into_iter()
        .enumerate()
        .map(|(t, spec)| {
            let n: usize = spec.shape.iter().product();
            let values = (0..n)
                .map(|i| (((i * 31 + t * 7) % 23) as f32 - 11.0) * 1e-3)
                .collect();
            NamedParam {
                name: spec.name,
                shape: spec.shape,
                values,
            }
        })
        .collect()
}

fn synthetic_file() -> Vec<u8> {
    encode_weights(&synthetic_params(), "synthetic").expect("encodes")
}

#[test]
fn specs_cover_the_whole_network() {
    let specs = param_specs();
    // stem + 16 depthwise + 16 project + 15 expand + head = 49 convolutions, 2 tensors
    // each, plus the linear layer's 2.
    assert_eq!(specs.len(), 49 * 2 + 2);
    let parameters: usize = specs
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    // The PyTorch state dict has 4,694,024 values; folding replaces each BatchNorm's four
    // vectors by one bias: 3 values fewer per channel, over 21,008 BatchNorm channels.
    let channels: usize = conv_layers().iter().map(|l| l.shape[0]).sum();
    assert_eq!(channels, 21_008);
    assert_eq!(parameters, 4_694_024 - 3 * channels);
}

#[test]
fn folding_matches_batchnorm_arithmetic() {
    // Two output channels, two weights each.
    let weight = [1.0, 2.0, -1.0, 0.5];
    let (w, b) = fold_batchnorm(
        &weight,
        &[2.0, 0.5],
        &[0.1, -0.2],
        &[0.3, 1.0],
        &[3.999, 0.249],
        1e-3,
    )
    .expect("folds");
    // s = γ / √(σ² + ε) = [2 / 2, 0.5 / 0.5] = [1, 1].
    let expected_w = [1.0f32, 2.0, -1.0, 0.5];
    let expected_b = [0.1f32 - 0.3, -0.2 - 1.0];
    for (got, want) in w.iter().zip(expected_w) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    for (got, want) in b.iter().zip(expected_b) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // Negative variance below −ε cannot be folded.
    assert!(fold_batchnorm(&[1.0], &[1.0], &[0.0], &[0.0], &[-1.0], 1e-3).is_err());
    // Mismatched lengths are rejected, not indexed out of bounds.
    assert!(fold_batchnorm(&[1.0, 2.0], &[1.0, 1.0], &[0.0], &[0.0], &[1.0], 1e-3).is_err());
    assert!(
        fold_batchnorm(
            &[1.0, 2.0, 3.0],
            &[1.0, 1.0],
            &[0.0; 2],
            &[0.0; 2],
            &[1.0; 2],
            1e-3
        )
        .is_err()
    );
}

#[test]
fn synthetic_file_round_trips() {
    let bytes = synthetic_file();
    let params = decode_weights(&bytes).expect("decodes");
    assert_eq!(params, synthetic_params());
    let model = load_from_bytes(&bytes, &Device::flex()).expect("loads");
    assert_eq!(model.blocks.len(), 16);
    assert!(model.blocks[0].expand.is_none());
    assert!(model.blocks[2].skip);
    assert_eq!(model.fc.weight.dims(), [EMBEDDING_DIM, NUM_CLASSES]);
}

/// The file's tensor names are the module's own parameter paths, so Burn's `BurnpackStore`
/// can load it into (and save fine-tuned versions from) the same module.
#[test]
fn tensor_names_match_burns_module_paths() {
    use burn::store::{BurnpackStore, ModuleStore};
    let bytes = synthetic_file();
    let mut model = load_from_bytes(&bytes, &Device::flex()).expect("loads");
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let result = store.apply_to(&mut model).expect("applies");
    assert!(result.missing.is_empty(), "missing: {:?}", result.missing);
    assert!(result.unused.is_empty(), "unused: {:?}", result.unused);
    assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
    assert_eq!(result.applied.len(), param_specs().len());
}

#[test]
fn garbage_is_not_a_weights_file() {
    let device = Device::flex();
    for bytes in [
        &b""[..],
        &b"not weights at all"[..],
        &[0u8; 4096][..],
        &b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19."[..], // a torch pickle's start
    ] {
        match load_from_bytes(bytes, &device) {
            Err(WeightsError::NotWeightsFile(_)) => {}
            other => panic!(
                "{} bytes: expected NotWeightsFile, got {other:?}",
                bytes.len()
            ),
        }
    }
}

#[test]
fn truncated_or_corrupted_files_are_damaged() {
    let device = Device::flex();
    let bytes = synthetic_file();
    // Truncation anywhere: never loads, never panics.
    for cut in [9, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let result = load_from_bytes(&bytes[..cut], &device);
        assert!(result.is_err(), "truncated to {cut} bytes loaded");
    }
    let result = load_from_bytes(&bytes[..bytes.len() - 4], &device);
    assert!(
        matches!(result, Err(WeightsError::Damaged(_))),
        "{result:?}"
    );
    // A flipped bit in the tensor data: caught by the checksum.
    let mut flipped = bytes.clone();
    let position = flipped.len() - 1000;
    flipped[position] ^= 0x10;
    let result = load_from_bytes(&flipped, &device);
    assert!(
        matches!(result, Err(WeightsError::Damaged(ref m)) if m.contains("checksum")),
        "{result:?}"
    );
    // Bit flips in the header/metadata region: an error of some kind, never a panic.
    for position in (0..1200).step_by(53) {
        let mut corrupted = bytes.clone();
        corrupted[position] ^= 0x5a;
        let _ = decode_weights(&corrupted);
    }
}

#[test]
fn other_burnpack_files_are_foreign() {
    let device = Device::flex();
    // A valid burnpack with an unrelated tensor.
    let other = Writer::new(vec![burn_pack::Tensor::new(
        "encoder.weight".into(),
        DType::F32,
        vec![2usize],
        None,
        Bytes::from_bytes_vec(f32_bytes(&[1.0, 2.0])),
    )])
    .into_bytes()
    .expect("writes");
    let result = load_from_bytes(&other, &device);
    assert!(
        matches!(result, Err(WeightsError::Foreign(_))),
        "{result:?}"
    );

    // Right identity, one tensor missing.
    let mut params = synthetic_params();
    let removed = params.pop().expect("non-empty");
    assert!(
        encode_weights(&params, "x").is_err(),
        "encoder refuses incomplete sets"
    );
    params.push(removed);

    // Right identity, wrong shape (written by hand, bypassing the encoder's checks).
    let tensors: Vec<_> = params
        .iter()
        .map(|p| {
            let shape = if p.name == "fc.bias" {
                vec![10, 100]
            } else {
                p.shape.clone()
            };
            burn_pack::Tensor::new(
                p.name.clone(),
                DType::F32,
                shape,
                None,
                Bytes::from_bytes_vec(f32_bytes(&p.values)),
            )
        })
        .collect();
    let reshaped = Writer::new(tensors)
        .with_metadata(META_MODEL, MODEL_NAME)
        .with_metadata(META_LAYOUT, LAYOUT)
        .into_bytes()
        .expect("writes");
    let result = load_from_bytes(&reshaped, &device);
    assert!(
        matches!(result, Err(WeightsError::Foreign(ref m)) if m.contains("fc.bias")),
        "{result:?}"
    );
}
