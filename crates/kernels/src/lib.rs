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

#![deny(missing_docs)]

use gemm::Parallelism;

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

/// A 1×1 convolution with bias: a matrix product over channels-last pixels.
#[derive(Clone, Debug)]
pub struct Pointwise {
    /// `[C_in, C_out]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
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
    fn run(
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

/// A depthwise k×k convolution (one filter per channel) with bias and ReLU6, TF "SAME" padding.
#[derive(Clone, Debug)]
pub struct Depthwise {
    /// `[k·k, C]`: for each tap, one weight per channel (contiguous over channels).
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
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
    fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// Convolves the channels-last `h × w × C` input into `out` (`ho × wo × C`).
    fn run(&self, input: &[f32], h: usize, w: usize, out: &mut [f32], threads: Threads) {
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
struct Geometry {
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
}

impl Geometry {
    /// The taps `lo..hi` of a k-wide window at output position `o` that fall inside an input
    /// of `size`, and the input index under tap `lo` (the valid taps are always contiguous).
    #[inline(always)]
    fn taps(&self, o: usize, pad: usize, size: usize) -> (usize, usize, usize) {
        let start = o * self.stride;
        let lo = pad.saturating_sub(start).min(self.kernel);
        let hi = (size + pad).saturating_sub(start).min(self.kernel).max(lo);
        (lo, hi, (start + lo).saturating_sub(pad))
    }
}

/// Picks the widest instruction set the CPU has for a depthwise output row.
fn depthwise_row_dispatch(
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
fn depthwise_row(
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

/// The stem: a dense k×k convolution with bias and ReLU6 from the planar (CHW) input image to
/// channels-last output, TF "SAME" padding.
#[derive(Clone, Debug)]
pub struct Stem {
    /// `[(ky·k + kx)·C_in + c_in, C_out]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
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
    fn run(&self, image: &[f32], h: usize, w: usize, out: &mut [f32], threads: Threads) {
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
    fn row(&self, geometry: &Geometry, image: &[f32], oy: usize, row: &mut [f32]) {
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

/// One MBConv block: optional 1×1 expansion + ReLU6, depthwise + ReLU6, 1×1 projection, and the
/// input added back when the block keeps its size.
#[derive(Clone, Debug)]
pub struct Block {
    /// The 1×1 expansion (absent in the first block).
    pub expand: Option<Pointwise>,
    /// The depthwise convolution, carrying the block's stride.
    pub depthwise: Depthwise,
    /// The 1×1 projection (no activation).
    pub project: Pointwise,
    /// Whether the input is added to the output.
    pub skip: bool,
}

/// EfficientNet-Lite0 (or any network of the same shape) as CPU kernels.
#[derive(Clone, Debug)]
pub struct Network {
    stem: Stem,
    blocks: Vec<Block>,
    head: Pointwise,
    classifier: Pointwise,
}

/// Embeddings and logits of a batch, image after image.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutput {
    /// `N × embedding_dim` pooled features (after the head's ReLU6), row-major.
    pub embeddings: Vec<f32>,
    /// `N × classes` logits, row-major.
    pub logits: Vec<f32>,
}

/// Wall time per kind of layer, summed over the images of [`Network::profile`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTimes {
    /// Kind of layer (`stem 3x3/2`, `expand 1x1`, `depthwise 5x5/1`, …) and its total time.
    pub by_kind: std::collections::BTreeMap<String, std::time::Duration>,
}

/// Adds each layer's time to a [`LayerTimes`] when profiling; does nothing otherwise (and
/// then never reads the clock, which the browser's `std` does not have).
struct Clock<'a> {
    profile: Option<(&'a mut LayerTimes, std::time::Instant)>,
}

impl Clock<'_> {
    /// No profiling.
    fn off() -> Self {
        Clock { profile: None }
    }

    /// Charges the time since the previous lap to `kind`.
    fn lap(&mut self, kind: impl FnOnce() -> String) {
        if let Some((times, since)) = &mut self.profile {
            let now = std::time::Instant::now();
            *times.by_kind.entry(kind()).or_default() += now - *since;
            *since = now;
        }
    }
}

/// Activation buffers reused by every layer of one image.
#[derive(Default)]
struct Scratch {
    current: Vec<f32>,
    spare: Vec<f32>,
    middle: Vec<f32>,
}

/// The first `len` values of `buffer`, growing it (never shrinking) when it is too short.
fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

impl Network {
    /// Assembles the network, checking that consecutive layers agree on channel counts.
    pub fn new(
        stem: Stem,
        blocks: Vec<Block>,
        head: Pointwise,
        classifier: Pointwise,
    ) -> Result<Self, KernelError> {
        let mismatch = |layer: String, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(KernelError::Channels {
                    layer,
                    got,
                    expected,
                })
            }
        };
        let mut channels = stem.out_channels;
        for (index, block) in blocks.iter().enumerate() {
            let mid = match &block.expand {
                Some(expand) => {
                    mismatch(
                        format!("block {index} expand"),
                        channels,
                        expand.in_channels,
                    )?;
                    expand.out_channels
                }
                None => channels,
            };
            mismatch(
                format!("block {index} depthwise"),
                mid,
                block.depthwise.channels,
            )?;
            mismatch(
                format!("block {index} project"),
                mid,
                block.project.in_channels,
            )?;
            if block.skip {
                mismatch(
                    format!("block {index} skip"),
                    block.project.out_channels,
                    channels,
                )?;
                if block.depthwise.stride != 1 {
                    return Err(KernelError::Channels {
                        layer: format!("block {index} skip (stride {})", block.depthwise.stride),
                        got: block.depthwise.stride,
                        expected: 1,
                    });
                }
            }
            channels = block.project.out_channels;
        }
        mismatch("head".to_string(), channels, head.in_channels)?;
        mismatch(
            "classifier".to_string(),
            head.out_channels,
            classifier.in_channels,
        )?;
        Ok(Self {
            stem,
            blocks,
            head,
            classifier,
        })
    }

    /// Length of one embedding.
    pub fn embedding_dim(&self) -> usize {
        self.head.out_channels
    }

    /// Number of logits per image.
    pub fn classes(&self) -> usize {
        self.classifier.out_channels
    }

    /// Embeddings and logits of `images`, each a planar `3 × height × width` image (the layout
    /// preprocessing produces). Natively the work is spread over rayon's threads.
    pub fn forward(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
    ) -> Result<BatchOutput, KernelError> {
        self.check_inputs(images, height, width)?;
        let dim = self.embedding_dim();
        let mut embeddings = vec![0.0; images.len() * dim];
        #[cfg(not(target_arch = "wasm32"))]
        if images.len() >= rayon::current_num_threads() {
            use rayon::prelude::*;
            embeddings
                .par_chunks_mut(dim)
                .zip(images.par_iter())
                .for_each_init(Scratch::default, |scratch, (embedding, image)| {
                    self.embed(
                        image,
                        (height, width),
                        scratch,
                        Threads::Serial,
                        embedding,
                        &mut Clock::off(),
                    )
                });
            return Ok(self.with_logits(embeddings, images.len()));
        }
        #[cfg(not(target_arch = "wasm32"))]
        let threads = Threads::Parallel;
        #[cfg(target_arch = "wasm32")]
        let threads = Threads::Serial;
        let mut scratch = Scratch::default();
        for (embedding, image) in embeddings.chunks_exact_mut(dim).zip(images) {
            self.embed(
                image,
                (height, width),
                &mut scratch,
                threads,
                embedding,
                &mut Clock::off(),
            );
        }
        Ok(self.with_logits(embeddings, images.len()))
    }

    /// Every image must be `3 × height × width` values, and the size not zero.
    fn check_inputs(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
    ) -> Result<(), KernelError> {
        let expected = self.stem.in_channels * height * width;
        for (index, image) in images.iter().enumerate() {
            if image.len() != expected || expected == 0 {
                return Err(KernelError::InputLength {
                    index,
                    got: image.len(),
                    expected,
                    height,
                    width,
                });
            }
        }
        Ok(())
    }

    /// Adds the classifier's logits to `n` embeddings.
    fn with_logits(&self, embeddings: Vec<f32>, n: usize) -> BatchOutput {
        let mut logits = vec![0.0; n * self.classes()];
        self.classifier
            .run(&embeddings, n, &mut logits, None, false, Threads::Serial);
        BatchOutput { embeddings, logits }
    }

    /// The embedding of one planar image, written into `embedding`.
    fn embed(
        &self,
        image: &[f32],
        (height, width): (usize, usize),
        scratch: &mut Scratch,
        threads: Threads,
        embedding: &mut [f32],
        clock: &mut Clock,
    ) {
        let stride = self.stem.stride;
        let (mut h, mut w) = (height.div_ceil(stride), width.div_ceil(stride));
        let mut channels = self.stem.out_channels;
        self.stem.run(
            image,
            height,
            width,
            at_least(&mut scratch.current, h * w * channels),
            threads,
        );
        clock.lap(|| format!("stem {0}x{0}/{stride} + relu6", self.stem.kernel));
        for block in &self.blocks {
            let pixels = h * w;
            // The depthwise input: the expansion's output, or the block input itself.
            let mid_channels = block.depthwise.channels;
            if let Some(expand) = &block.expand {
                expand.run(
                    &scratch.current,
                    pixels,
                    at_least(&mut scratch.spare, pixels * mid_channels),
                    None,
                    true,
                    threads,
                );
                clock.lap(|| "expand 1x1 + relu6".to_string());
            }
            let (ho, wo) = block.depthwise.output_size(h, w);
            let depthwise_input = if block.expand.is_some() {
                &scratch.spare
            } else {
                &scratch.current
            };
            block.depthwise.run(
                depthwise_input,
                h,
                w,
                at_least(&mut scratch.middle, ho * wo * mid_channels),
                threads,
            );
            clock.lap(|| {
                let (k, s) = (block.depthwise.kernel, block.depthwise.stride);
                format!("depthwise {k}x{k}/{s} + relu6")
            });
            let out_channels = block.project.out_channels;
            block.project.run(
                &scratch.middle,
                ho * wo,
                at_least(&mut scratch.spare, ho * wo * out_channels),
                block.skip.then_some(&scratch.current[..pixels * channels]),
                false,
                threads,
            );
            clock.lap(|| {
                if block.skip {
                    "project 1x1 + skip add".to_string()
                } else {
                    "project 1x1".to_string()
                }
            });
            std::mem::swap(&mut scratch.current, &mut scratch.spare);
            (h, w, channels) = (ho, wo, out_channels);
        }
        let pixels = h * w;
        let dim = self.head.out_channels;
        self.head.run(
            &scratch.current,
            pixels,
            at_least(&mut scratch.spare, pixels * dim),
            None,
            true,
            threads,
        );
        clock.lap(|| "head 1x1 + relu6".to_string());
        embedding.fill(0.0);
        for pixel in scratch.spare[..pixels * dim].chunks_exact(dim) {
            for (sum, value) in embedding.iter_mut().zip(pixel) {
                *sum += value;
            }
        }
        let scale = 1.0 / pixels as f32;
        for value in embedding {
            *value *= scale;
        }
        clock.lap(|| "global average pool".to_string());
    }

    /// Runs `images` one at a time (each layer over the cores, as for a single image) and
    /// returns the time spent in each kind of layer: where the CPU path's time goes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
    ) -> Result<LayerTimes, KernelError> {
        self.check_inputs(images, height, width)?;
        let mut times = LayerTimes::default();
        let mut scratch = Scratch::default();
        let mut embedding = vec![0.0; self.embedding_dim()];
        for image in images {
            let mut clock = Clock {
                profile: Some((&mut times, std::time::Instant::now())),
            };
            self.embed(
                image,
                (height, width),
                &mut scratch,
                Threads::Parallel,
                &mut embedding,
                &mut clock,
            );
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests;
