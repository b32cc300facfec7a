//! Reading tensors back to the host, asynchronously: the only kind of read that works on WebGPU
//! in a browser (synchronous reads panic there), so every read in the core goes through here.

use burn::tensor::Tensor;

/// Errors from running a computation on a device.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The backend failed to execute or to read the result back.
    #[error("the compute backend failed: {0}")]
    Execution(String),
}

/// Reads a float tensor back to the host as `f32`s, asynchronously.
pub async fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, ComputeError> {
    let data = tensor
        .into_data_async()
        .await
        .map_err(|e| ComputeError::Execution(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| ComputeError::Execution(format!("{e:?}")))
}
