//! The whole network: blocks of the kernels above over reused scratch buffers, split over the
//! cores by image or by pixels, with optional per-layer timings.

use super::*;

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
    pub(crate) stem: Stem,
    pub(crate) blocks: Vec<Block>,
    pub(crate) head: Pointwise,
    pub(crate) classifier: Pointwise,
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
pub(crate) struct Clock<'a> {
    pub(crate) profile: Option<(&'a mut LayerTimes, std::time::Instant)>,
}

impl Clock<'_> {
    /// No profiling.
    pub(crate) fn off() -> Self {
        Clock { profile: None }
    }

    /// Charges the time since the previous lap to `kind`.
    pub(crate) fn lap(&mut self, kind: impl FnOnce() -> String) {
        if let Some((times, since)) = &mut self.profile {
            let now = std::time::Instant::now();
            *times.by_kind.entry(kind()).or_default() += now - *since;
            *since = now;
        }
    }
}

/// Activation buffers reused by every layer of one image.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) current: Vec<f32>,
    pub(crate) spare: Vec<f32>,
    pub(crate) middle: Vec<f32>,
}

/// The first `len` values of `buffer`, growing it (never shrinking) when it is too short.
pub(crate) fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
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

    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Every image must be `3 × height × width` values, and the size not zero.
    pub(crate) fn check_inputs(
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
    pub(crate) fn with_logits(&self, embeddings: Vec<f32>, n: usize) -> BatchOutput {
        let mut logits = vec![0.0; n * self.classes()];
        self.classifier
            .run(&embeddings, n, &mut logits, None, false, Threads::Serial);
        BatchOutput { embeddings, logits }
    }

    /// Runs the stem and the first `blocks` blocks on one planar image, leaving the
    /// channels-last activations in `scratch.current`; returns their `(height, width,
    /// channels)`.
    pub(crate) fn run_blocks(
        &self,
        image: &[f32],
        size: (usize, usize),
        blocks: usize,
        scratch: &mut Scratch,
        threads: Threads,
        clock: &mut Clock,
    ) -> (usize, usize, usize) {
        let shape = self.run_stem(image, size, scratch, threads, clock);
        self.run_range(0..blocks, shape, scratch, threads, clock)
    }

    /// The stem on one planar image, into `scratch.current`; returns `(height, width,
    /// channels)` of its output.
    fn run_stem(
        &self,
        image: &[f32],
        (height, width): (usize, usize),
        scratch: &mut Scratch,
        threads: Threads,
        clock: &mut Clock,
    ) -> (usize, usize, usize) {
        let stride = self.stem.stride;
        let (h, w) = (height.div_ceil(stride), width.div_ceil(stride));
        let channels = self.stem.out_channels;
        self.stem.run(
            image,
            height,
            width,
            at_least(&mut scratch.current, h * w * channels),
            threads,
        );
        clock.lap(|| format!("stem {0}x{0}/{stride} + relu6", self.stem.kernel));
        (h, w, channels)
    }

    /// Runs `range` of the blocks on the `(height, width, channels)` activations in
    /// `scratch.current`, leaving their output there; returns its shape.
    fn run_range(
        &self,
        range: std::ops::Range<usize>,
        (mut h, mut w, mut channels): (usize, usize, usize),
        scratch: &mut Scratch,
        threads: Threads,
        clock: &mut Clock,
    ) -> (usize, usize, usize) {
        let end = range.end.min(self.blocks.len());
        let start = range.start.min(end);
        for block in &self.blocks[start..end] {
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
        (h, w, channels)
    }

    /// The embedding of one planar image, written into `embedding`.
    pub(crate) fn embed(
        &self,
        image: &[f32],
        size: (usize, usize),
        scratch: &mut Scratch,
        threads: Threads,
        embedding: &mut [f32],
        clock: &mut Clock,
    ) {
        self.embed_with_cut(image, size, scratch, threads, embedding, None, clock);
    }

    /// [`Self::embed`], also copying the activations after the first `cut.0` blocks into
    /// `cut.1` (channels-last) on the way.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn embed_with_cut(
        &self,
        image: &[f32],
        size: (usize, usize),
        scratch: &mut Scratch,
        threads: Threads,
        embedding: &mut [f32],
        cut: Option<(usize, &mut Vec<f32>)>,
        clock: &mut Clock,
    ) {
        let all = self.blocks.len();
        let mut shape = self.run_stem(image, size, scratch, threads, clock);
        if let Some((blocks, out)) = cut {
            shape = self.run_range(0..blocks, shape, scratch, threads, clock);
            let (h, w, c) = shape;
            out.clear();
            out.extend_from_slice(&scratch.current[..h * w * c]);
            shape = self.run_range(blocks..all, shape, scratch, threads, clock);
        } else {
            shape = self.run_range(0..all, shape, scratch, threads, clock);
        }
        let (h, w, _) = shape;
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
