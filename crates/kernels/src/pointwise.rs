//! 1×1 convolutions as tiled `gemm` products with bias, skip connection and ReLU6 applied
//! to each tile while it is in cache.

use super::*;

/// A 1×1 convolution with bias: a matrix product over channels-last pixels.
#[derive(Clone, Debug)]
pub struct Pointwise {
    /// `[C_in, C_out]`, row-major.
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
}

impl Pointwise {
    /// Builds the layer from Burn's/PyTorch's kernel layout `[C_out, C_in, 1, 1]`.
    pub fn from_oihw(
        layer: &str,
        weight: &[f32],
        bias: Vec<f32>,
        out_channels: usize,
        in_channels: usize,
    ) -> Result<Self, KernelError> {
        check_len(layer, "weight", weight.len(), out_channels * in_channels)?;
        let weight = transpose(weight, out_channels, in_channels);
        Self::from_in_out(layer, weight, bias, in_channels, out_channels)
    }

    /// Builds the layer from a `[C_in, C_out]` row-major matrix (Burn's `Linear` layout).
    pub fn from_in_out(
        layer: &str,
        weight: Vec<f32>,
        bias: Vec<f32>,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self, KernelError> {
        check_len(layer, "weight", weight.len(), out_channels * in_channels)?;
        check_len(layer, "bias", bias.len(), out_channels)?;
        Ok(Self {
            weight,
            bias,
            in_channels,
            out_channels,
        })
    }

    /// `out[p, :] = input[p, :] · W + bias (+ residual[p, :])`, then ReLU6 when asked, for
    /// `pixels` channels-last pixels. `out` and `residual` hold `pixels × C_out` values,
    /// `input` `pixels × C_in`.
    pub(crate) fn run(
        &self,
        input: &[f32],
        pixels: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        relu6: bool,
        threads: Threads,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        assert!(input.len() >= pixels * cin && out.len() >= pixels * cout);
        let out = &mut out[..pixels * cout];
        let tile_pixels = (TILE_VALUES / cout).max(16);
        // One tile only (the late 7×7 layers, or a batch of images already on every core): let
        // the matrix product itself use the threads (natively; wasm has none).
        let product_threads = match threads {
            #[cfg(not(target_arch = "wasm32"))]
            Threads::Parallel if pixels <= tile_pixels => Parallelism::Rayon(0),
            _ => Parallelism::None,
        };
        for_each_chunk(out, tile_pixels * cout, threads, |tile, out_tile| {
            let rows = out_tile.len() / cout;
            let first = tile * tile_pixels;
            match residual {
                Some(residual) => {
                    let residual = &residual[first * cout..(first + rows) * cout];
                    for (row, skip) in out_tile
                        .chunks_exact_mut(cout)
                        .zip(residual.chunks_exact(cout))
                    {
                        for ((o, s), b) in row.iter_mut().zip(skip).zip(&self.bias) {
                            *o = s + b;
                        }
                    }
                }
                None => {
                    for row in out_tile.chunks_exact_mut(cout) {
                        row.copy_from_slice(&self.bias);
                    }
                }
            }
            let lhs = &input[first * cin..(first + rows) * cin];
            // SAFETY: `out_tile` is `rows × cout`, `lhs` is `rows × cin` and `self.weight` is
            // `cin × cout`, all row-major with the strides given; the three do not overlap.
            unsafe {
                gemm::gemm(
                    rows,
                    cout,
                    cin,
                    out_tile.as_mut_ptr(),
                    1,
                    cout as isize,
                    true,
                    lhs.as_ptr(),
                    1,
                    cin as isize,
                    self.weight.as_ptr(),
                    1,
                    cout as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    product_threads,
                );
            }
            if relu6 {
                relu6_in_place(out_tile);
            }
        });
    }
}
