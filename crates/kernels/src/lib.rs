//! Hand-written CPU kernels for EfficientNet-Lite0 inference (BatchNorm already folded into
//! every convolution), used on the CPU path instead of running the network op by op through
//! Burn's `flex` backend.
//!
//! Why: onnxruntime needs about a fifth of the CPU time `flex` needs for the same forward pass
//! (see `BENCHMARKS.md`). The profile put the difference in three places that a generic tensor
//! backend cannot fix from outside: every ReLU6 is its own pass over memory, depthwise
//! convolutions run on the planar (NCHW) layout, and every layer allocates fresh zeroed
//! buffers. Here activations are channels-last (NHWC), so that
//! - a 1×1 convolution is one matrix product of `[pixels, C_in] × [C_in, C_out]` (`gemm`), done
//!   in tiles of pixels small enough to stay in cache while the bias, the skip connection and
//!   the ReLU6 are applied to them;
//! - a depthwise convolution runs over contiguous channel vectors, 16 channels in registers at a
//!   time, bias and ReLU6 applied before the store;
//! - three scratch buffers are reused by every layer of an image.
//!
//! Natively the work is split over the cores with rayon (whole images when the batch has at
//! least one image per core, otherwise the pixels of each layer); in wasm it runs on the
//! calling thread. Nothing here depends on Burn: `medtransfer-core` builds a [`Network`] from
//! its Burn model's parameters and checks it against the Burn forward pass.
//!
//! [`vector`] holds the linear head solver's two loops, for the same full optimisation.

#![deny(missing_docs)]

use gemm::Parallelism;

mod cut;
mod depthwise;
mod network;
mod pointwise;
mod stem;
pub mod vector;

pub use cut::CutActivations;
pub use depthwise::Depthwise;
pub use network::{BatchOutput, Block, LayerTimes, Network};
pub use pointwise::Pointwise;
pub use stem::Stem;

/// The upper bound of ReLU6.
const RELU6_MAX: f32 = 6.0;

/// Channels handled together by the depthwise and stem kernels (two AVX registers, four SSE).
const LANES: usize = 16;

/// Output values of a 1×1 convolution computed per tile (128 KiB of `f32`): small enough to
/// stay in L2 between the matrix product and the bias/skip/ReLU6 passes over the same tile.
const TILE_VALUES: usize = 32 * 1024;

/// Weights of the wrong size for a layer, or an input of the wrong size for the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A layer's weights or bias do not have the length its shape needs.
    #[error("{layer}: {what} has {got} values, expected {expected}")]
    WeightLength {
        /// Which layer.
        layer: String,
        /// `weight` or `bias`.
        what: &'static str,
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
    },
    /// Consecutive layers do not agree on a channel count.
    #[error("{layer}: takes {expected} channels but receives {got}")]
    Channels {
        /// Which layer.
        layer: String,
        /// Channels the previous layer produces.
        got: usize,
        /// Channels this layer takes.
        expected: usize,
    },
    /// An image is not `3 × height × width` values, or the size is zero.
    #[error("image {index} has {got} values, expected {expected} (3 × {height} × {width})")]
    InputLength {
        /// Position of the image in the batch.
        index: usize,
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
}

fn check_len(
    layer: &str,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::WeightLength {
            layer: layer.to_string(),
            what,
            got,
            expected,
        })
    }
}

/// TensorFlow "SAME" padding before the first row/column (the rest goes after):
/// `max((ceil(input / stride) − 1)·stride + kernel − input, 0) / 2`.
fn same_padding_before(input: usize, kernel: usize, stride: usize) -> usize {
    let output = input.div_ceil(stride);
    let needed = (output.max(1) - 1) * stride + kernel;
    needed.saturating_sub(input) / 2
}

/// The `cols × rows` transpose of a row-major `rows × cols` matrix (weights from PyTorch's
/// output-channel-first layouts into the channel-contiguous ones the kernels read).
fn transpose(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut transposed = vec![0.0; matrix.len()];
    for r in 0..rows {
        for c in 0..cols {
            transposed[c * rows + r] = matrix[r * cols + c];
        }
    }
    transposed
}

/// Whether one layer may split its work over threads (only when images are not already
/// running on every core side by side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Threads {
    Serial,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Parallel,
}

/// Runs `work(index, chunk)` on every `chunk_len`-sized chunk of `out`, over the cores when
/// `threads` allows it and there is more than one chunk.
fn for_each_chunk<F>(out: &mut [f32], chunk_len: usize, threads: Threads, work: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    if threads == Threads::Parallel && out.len() > chunk_len {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(index, chunk)| work(index, chunk));
        return;
    }
    let _ = threads;
    for (index, chunk) in out.chunks_mut(chunk_len).enumerate() {
        work(index, chunk);
    }
}

/// `values = min(max(values, 0), 6)`.
fn relu6_in_place(values: &mut [f32]) {
    for value in values {
        *value = value.clamp(0.0, RELU6_MAX);
    }
}

#[cfg(test)]
mod tests;
