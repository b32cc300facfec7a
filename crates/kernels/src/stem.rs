//! The stem: the 3×3 stride-2 convolution from the RGB input to the first channels.

use super::*;
use crate::depthwise::Geometry;

/// The stem: a dense k×k convolution with bias and ReLU6 from the planar (CHW) input image to
/// channels-last output, TF "SAME" padding.
#[derive(Clone, Debug)]
pub struct Stem {
    /// `[(ky·k + kx)·C_in + c_in, C_out]`, row-major.
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
}

impl Stem {
    /// Builds the layer from Burn's/PyTorch's kernel layout `[C_out, C_in, k, k]`.
    pub fn from_oihw(
        layer: &str,
        weight: &[f32],
        bias: Vec<f32>,
        out_channels: usize,
        in_channels: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self, KernelError> {
        check_len(
            layer,
            "weight",
            weight.len(),
            out_channels * in_channels * kernel * kernel,
        )?;
        check_len(layer, "bias", bias.len(), out_channels)?;
        let mut packed = vec![0.0; weight.len()];
        for o in 0..out_channels {
            for i in 0..in_channels {
                for t in 0..kernel * kernel {
                    packed[(t * in_channels + i) * out_channels + o] =
                        weight[(o * in_channels + i) * kernel * kernel + t];
                }
            }
        }
        Ok(Self {
            weight: packed,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride: stride.max(1),
        })
    }

    /// Convolves the planar `C_in × h × w` image into `out` (`ho × wo × C_out`).
    pub(crate) fn run(&self, image: &[f32], h: usize, w: usize, out: &mut [f32], threads: Threads) {
        let (ho, wo) = (h.div_ceil(self.stride), w.div_ceil(self.stride));
        let (cin, cout, k) = (self.in_channels, self.out_channels, self.kernel);
        assert!(image.len() >= cin * h * w && out.len() >= ho * wo * cout);
        let geometry = Geometry {
            h,
            w,
            kernel: k,
            stride: self.stride,
            pad_top: same_padding_before(h, k, self.stride),
            pad_left: same_padding_before(w, k, self.stride),
        };
        for_each_chunk(&mut out[..ho * wo * cout], wo * cout, threads, |oy, row| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has just been checked for AVX2.
                unsafe { self.row_avx2(&geometry, image, oy, row) };
                return;
            }
            self.row(&geometry, image, oy, row);
        });
    }

    /// [`Stem::row`] compiled for AVX2 (the loop over output channels becomes 8-wide).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(&self, geometry: &Geometry, image: &[f32], oy: usize, row: &mut [f32]) {
        self.row(geometry, image, oy, row);
    }

    /// One output row: every tap's input value times that tap's weights for all output
    /// channels, accumulated onto the bias, then ReLU6.
    #[inline(always)]
    pub(crate) fn row(&self, geometry: &Geometry, image: &[f32], oy: usize, row: &mut [f32]) {
        let (cin, cout, k) = (self.in_channels, self.out_channels, self.kernel);
        let (h, w) = (geometry.h, geometry.w);
        let (ky_lo, ky_hi, iy_lo) = geometry.taps(oy, geometry.pad_top, h);
        for (ox, pixel) in row.chunks_exact_mut(cout).enumerate() {
            let (kx_lo, kx_hi, ix_lo) = geometry.taps(ox, geometry.pad_left, w);
            pixel.copy_from_slice(&self.bias);
            for ky in ky_lo..ky_hi {
                let iy = iy_lo + (ky - ky_lo);
                for kx in kx_lo..kx_hi {
                    let ix = ix_lo + (kx - kx_lo);
                    for ci in 0..cin {
                        let x = image[(ci * h + iy) * w + ix];
                        let tap = ((ky * k + kx) * cin + ci) * cout;
                        for (out, wt) in pixel.iter_mut().zip(&self.weight[tap..tap + cout]) {
                            *out += x * wt;
                        }
                    }
                }
            }
            relu6_in_place(pixel);
        }
    }
}
