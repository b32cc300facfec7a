//! Depthwise convolutions over channels-last rows, 16 channels at a time (AVX2/FMA chosen at
//! run time, portable code otherwise), bias and ReLU6 applied before the store.

use super::*;

/// A depthwise k×k convolution (one filter per channel) with bias and ReLU6, TF "SAME" padding.
#[derive(Clone, Debug)]
pub struct Depthwise {
    /// `[k·k, C]`: for each tap, one weight per channel (contiguous over channels).
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) channels: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
}

impl Depthwise {
    /// Builds the layer from Burn's/PyTorch's kernel layout `[C, 1, k, k]`.
    pub fn from_oihw(
        layer: &str,
        weight: &[f32],
        bias: Vec<f32>,
        channels: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self, KernelError> {
        check_len(layer, "weight", weight.len(), channels * kernel * kernel)?;
        check_len(layer, "bias", bias.len(), channels)?;
        Ok(Self {
            weight: transpose(weight, channels, kernel * kernel),
            bias,
            channels,
            kernel,
            stride: stride.max(1),
        })
    }

    /// Output size for an `h × w` input.
    pub(crate) fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// Convolves the channels-last `h × w × C` input into `out` (`ho × wo × C`).
    pub(crate) fn run(&self, input: &[f32], h: usize, w: usize, out: &mut [f32], threads: Threads) {
        let (ho, wo) = self.output_size(h, w);
        let c = self.channels;
        assert!(input.len() >= h * w * c && out.len() >= ho * wo * c);
        let geometry = Geometry {
            h,
            w,
            kernel: self.kernel,
            stride: self.stride,
            pad_top: same_padding_before(h, self.kernel, self.stride),
            pad_left: same_padding_before(w, self.kernel, self.stride),
        };
        for_each_chunk(&mut out[..ho * wo * c], wo * c, threads, |oy, row| {
            depthwise_row_dispatch(self, &geometry, input, oy, row);
        });
    }
}

/// Where a convolution's window falls on its input.
pub(crate) struct Geometry {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
}

impl Geometry {
    /// The taps `lo..hi` of a k-wide window at output position `o` that fall inside an input
    /// of `size`, and the input index under tap `lo` (the valid taps are always contiguous).
    #[inline(always)]
    pub(crate) fn taps(&self, o: usize, pad: usize, size: usize) -> (usize, usize, usize) {
        let start = o * self.stride;
        let lo = pad.saturating_sub(start).min(self.kernel);
        let hi = (size + pad).saturating_sub(start).min(self.kernel).max(lo);
        (lo, hi, (start + lo).saturating_sub(pad))
    }
}

/// Picks the widest instruction set the CPU has for a depthwise output row.
pub(crate) fn depthwise_row_dispatch(
    layer: &Depthwise,
    geometry: &Geometry,
    input: &[f32],
    oy: usize,
    row: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been checked for AVX2 and FMA.
        unsafe { depthwise_row_avx2(layer, geometry, input, oy, row) };
        return;
    }
    depthwise_row(layer, geometry, input, oy, row, 0);
}

/// One output row of a depthwise convolution with AVX2 + FMA: for each pixel, 32 channels at a
/// time (four registers) then 8 at a time are accumulated over the window's taps, bias-added,
/// clamped and stored; channels past the last multiple of 8 go to [`depthwise_row`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_row_avx2(
    layer: &Depthwise,
    geometry: &Geometry,
    input: &[f32],
    oy: usize,
    row: &mut [f32],
) {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let c = layer.channels;
    let k = geometry.kernel;
    let w = geometry.w;
    let (ky_lo, ky_hi, iy_lo) = geometry.taps(oy, geometry.pad_top, geometry.h);
    let vector_channels = c - c % 8;
    let wo = row.len() / c;
    assert!(row.len() == wo * c && input.len() >= geometry.h * w * c);
    assert!(layer.weight.len() == k * k * c && layer.bias.len() == c);
    let (x, wt, bias, out) = (
        input.as_ptr(),
        layer.weight.as_ptr(),
        layer.bias.as_ptr(),
        row.as_mut_ptr(),
    );
    // SAFETY (every pointer below): `iy_lo + (ky − ky_lo) < h` and `ix_lo + (kx − kx_lo) < w`
    // for the taps `taps` returns, so input offsets stay below `h·w·c`; tap offsets below
    // `k·k·c`; output offsets below `wo·c`; channel offsets below `vector_channels ≤ c`.
    unsafe {
        let zero = _mm256_setzero_ps();
        let six = _mm256_set1_ps(RELU6_MAX);
        let clamp = |v: __m256| _mm256_min_ps(_mm256_max_ps(v, zero), six);
        for ox in 0..wo {
            let (kx_lo, kx_hi, ix_lo) = geometry.taps(ox, geometry.pad_left, w);
            let pixel = out.add(ox * c);
            let mut ch = 0;
            while ch + 32 <= vector_channels {
                let mut acc = [
                    _mm256_loadu_ps(bias.add(ch)),
                    _mm256_loadu_ps(bias.add(ch + 8)),
                    _mm256_loadu_ps(bias.add(ch + 16)),
                    _mm256_loadu_ps(bias.add(ch + 24)),
                ];
                for ky in ky_lo..ky_hi {
                    let iy = iy_lo + (ky - ky_lo);
                    for kx in kx_lo..kx_hi {
                        let ix = ix_lo + (kx - kx_lo);
                        let src = x.add((iy * w + ix) * c + ch);
                        let tap = wt.add((ky * k + kx) * c + ch);
                        for (lane, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(
                                _mm256_loadu_ps(src.add(lane * 8)),
                                _mm256_loadu_ps(tap.add(lane * 8)),
                                *acc,
                            );
                        }
                    }
                }
                for (lane, acc) in acc.into_iter().enumerate() {
                    _mm256_storeu_ps(pixel.add(ch + lane * 8), clamp(acc));
                }
                ch += 32;
            }
            while ch < vector_channels {
                let mut acc = _mm256_loadu_ps(bias.add(ch));
                for ky in ky_lo..ky_hi {
                    let iy = iy_lo + (ky - ky_lo);
                    for kx in kx_lo..kx_hi {
                        let ix = ix_lo + (kx - kx_lo);
                        acc = _mm256_fmadd_ps(
                            _mm256_loadu_ps(x.add((iy * w + ix) * c + ch)),
                            _mm256_loadu_ps(wt.add((ky * k + kx) * c + ch)),
                            acc,
                        );
                    }
                }
                _mm256_storeu_ps(pixel.add(ch), clamp(acc));
                ch += 8;
            }
        }
    }
    if vector_channels < c {
        depthwise_row(layer, geometry, input, oy, row, vector_channels);
    }
}

/// One output row of a depthwise convolution, channels `first_channel..C` of every pixel
/// (portable: the browser's CPU path, and CPUs without AVX2): [`LANES`] channels at a time
/// are accumulated over the window's taps, bias-added, clamped and stored.
pub(crate) fn depthwise_row(
    layer: &Depthwise,
    geometry: &Geometry,
    input: &[f32],
    oy: usize,
    row: &mut [f32],
    first_channel: usize,
) {
    let c = layer.channels;
    let k = geometry.kernel;
    let w = geometry.w;
    let (ky_lo, ky_hi, iy_lo) = geometry.taps(oy, geometry.pad_top, geometry.h);
    for (ox, pixel) in row.chunks_exact_mut(c).enumerate() {
        let (kx_lo, kx_hi, ix_lo) = geometry.taps(ox, geometry.pad_left, w);
        let mut channel = first_channel;
        while channel + LANES <= c {
            let mut acc = [0.0f32; LANES];
            acc.copy_from_slice(&layer.bias[channel..channel + LANES]);
            for ky in ky_lo..ky_hi {
                let iy = iy_lo + (ky - ky_lo);
                for kx in kx_lo..kx_hi {
                    let at = (iy * w + ix_lo + (kx - kx_lo)) * c + channel;
                    let tap = (ky * k + kx) * c + channel;
                    let (x, wt) = (&input[at..at + LANES], &layer.weight[tap..tap + LANES]);
                    for lane in 0..LANES {
                        acc[lane] += x[lane] * wt[lane];
                    }
                }
            }
            for (out, value) in pixel[channel..channel + LANES].iter_mut().zip(acc) {
                *out = value.clamp(0.0, RELU6_MAX);
            }
            channel += LANES;
        }
        for ch in channel..c {
            let mut acc = layer.bias[ch];
            for ky in ky_lo..ky_hi {
                let iy = iy_lo + (ky - ky_lo);
                for kx in kx_lo..kx_hi {
                    let x = input[(iy * w + ix_lo + (kx - kx_lo)) * c + ch];
                    acc += x * layer.weight[(ky * k + kx) * c + ch];
                }
            }
            pixel[ch] = acc.clamp(0.0, RELU6_MAX);
        }
    }
}
