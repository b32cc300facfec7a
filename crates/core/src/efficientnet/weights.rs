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

/// Native-only part: reading the PyTorch checkpoint (`weights/pytorch.rs`).
#[cfg(not(target_arch = "wasm32"))]
mod pytorch;

#[cfg(not(target_arch = "wasm32"))]
pub use pytorch::{convert_pytorch_weights, convert_pytorch_weights_to_bytes};

#[cfg(test)]
pub(crate) mod tests;
