//! EfficientNet-Lite0 on MedTransfer's own CPU kernels (`medtransfer-kernels`): what the CPU
//! path runs instead of the Burn graph on `flex`, with the same weights and the same results
//! (checked against the Burn forward pass and the numpy oracle's golden fixtures in
//! `tests/efficientnet.rs`).
//!
//! The kernels copy the weights out of the Burn model once (about 18 MB) and keep them in
//! channels-last layouts; [`cpu_network`] caches that copy for the model it was made from.

use std::sync::{Arc, Mutex};

use burn::module::{Param, ParamId};
use burn::tensor::Tensor;
use medtransfer_kernels::{Block, Depthwise, KernelError, Network, Pointwise, Stem};

use super::model::{EfficientNetLite0, SameConv2d};
use crate::readback::{ComputeError, read_f32};

/// Why the CPU kernels could not be built from a model.
#[derive(Debug, thiserror::Error)]
pub enum CpuKernelsError {
    /// A parameter could not be read back from the device.
    #[error(transparent)]
    Read(#[from] ComputeError),
    /// The model's parameters do not have the shapes the kernels need.
    #[error("the network's weights do not fit the CPU kernels: {0}")]
    Shape(#[from] KernelError),
}

impl From<CpuKernelsError> for ComputeError {
    fn from(error: CpuKernelsError) -> Self {
        match error {
            CpuKernelsError::Read(error) => error,
            other => ComputeError::Execution(other.to_string()),
        }
    }
}

async fn read<const D: usize>(param: &Param<Tensor<D>>) -> Result<Vec<f32>, ComputeError> {
    read_f32(param.val()).await
}

async fn pointwise(conv: &SameConv2d, layer: &str) -> Result<Pointwise, CpuKernelsError> {
    let [out_channels, in_channels, _, _] = conv.weight.dims();
    Ok(Pointwise::from_oihw(
        layer,
        &read(&conv.weight).await?,
        read(&conv.bias).await?,
        out_channels,
        in_channels,
    )?)
}

/// Copies `model`'s weights into the CPU kernels' layouts.
pub async fn build_cpu_network(model: &EfficientNetLite0) -> Result<Network, CpuKernelsError> {
    let [stem_out, stem_in, stem_k, _] = model.stem.weight.dims();
    let stem = Stem::from_oihw(
        "stem",
        &read(&model.stem.weight).await?,
        read(&model.stem.bias).await?,
        stem_out,
        stem_in,
        stem_k,
        model.stem.stride,
    )?;
    let mut blocks = Vec::with_capacity(model.blocks.len());
    for (index, block) in model.blocks.iter().enumerate() {
        let expand = match &block.expand {
            Some(conv) => Some(pointwise(conv, &format!("block {index} expand")).await?),
            None => None,
        };
        let [channels, _, kernel, _] = block.depthwise.weight.dims();
        let depthwise = Depthwise::from_oihw(
            &format!("block {index} depthwise"),
            &read(&block.depthwise.weight).await?,
            read(&block.depthwise.bias).await?,
            channels,
            kernel,
            block.depthwise.stride,
        )?;
        let project = pointwise(&block.project, &format!("block {index} project")).await?;
        blocks.push(Block {
            expand,
            depthwise,
            project,
            skip: block.skip,
        });
    }
    let head = pointwise(&model.head, "head").await?;
    let [fc_in, fc_out] = model.fc.weight.dims();
    let fc_bias = match &model.fc.bias {
        Some(bias) => read(bias).await?,
        None => vec![0.0; fc_out],
    };
    let classifier = Pointwise::from_in_out(
        "classifier",
        read(&model.fc.weight).await?,
        fc_bias,
        fc_in,
        fc_out,
    )?;
    Ok(Network::new(stem, blocks, head, classifier)?)
}

/// The kernels of the last model asked for, by the id of its first parameter (a model loaded
/// again gets new ids, so a stale copy is never used).
static CACHE: Mutex<Option<(ParamId, Arc<Network>)>> = Mutex::new(None);

/// The CPU kernels for `model`, built on first use and then reused.
pub async fn cpu_network(model: &EfficientNetLite0) -> Result<Arc<Network>, CpuKernelsError> {
    let id = model.stem.weight.id;
    if let Ok(cache) = CACHE.lock()
        && let Some((cached, network)) = cache.as_ref()
        && *cached == id
    {
        return Ok(Arc::clone(network));
    }
    let network = Arc::new(build_cpu_network(model).await?);
    if let Ok(mut cache) = CACHE.lock() {
        *cache = Some((id, Arc::clone(&network)));
    }
    Ok(network)
}
