//! The activations part-way through the network, for fine-tuning the blocks after them: alone
//! ([`Network::cut_features`]) or with the embedding from the same pass
//! ([`Network::forward_with_cut`]).

use super::*;
use crate::network::{Clock, Scratch};

/// Activations part-way through the network ([`Network::cut_features`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CutActivations {
    /// One channels-last `height × width × channels` vector per image.
    pub rows: Vec<Vec<f32>>,
    /// Rows of each image's activations (0 for no images).
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

impl Network {
    /// The activations after the stem and the first `blocks` blocks of each of `images`
    /// (planar `3 × height × width` each): the frozen part of a network whose last blocks are
    /// fine-tuned, one channels-last `h × w × c` vector per image. Natively the images are
    /// spread over rayon's threads.
    ///
    /// # Errors
    /// [`KernelError::InputLength`] for an image of the wrong size; [`KernelError::Channels`]
    /// when `blocks` is more than the network has.
    pub fn cut_features(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
        blocks: usize,
    ) -> Result<CutActivations, KernelError> {
        self.check_cut(images, height, width, blocks)?;
        let one = |image: &[f32], scratch: &mut Scratch| {
            let (h, w, c) = self.run_blocks(
                image,
                (height, width),
                blocks,
                scratch,
                Threads::Serial,
                &mut Clock::off(),
            );
            (scratch.current[..h * w * c].to_vec(), (h, w, c))
        };
        #[cfg(not(target_arch = "wasm32"))]
        let results: Vec<(Vec<f32>, (usize, usize, usize))> = {
            use rayon::prelude::*;
            images
                .par_iter()
                .map_init(Scratch::default, |scratch, image| one(image, scratch))
                .collect()
        };
        #[cfg(target_arch = "wasm32")]
        let results: Vec<(Vec<f32>, (usize, usize, usize))> = {
            let mut scratch = Scratch::default();
            images
                .iter()
                .map(|image| one(image, &mut scratch))
                .collect()
        };
        let (height, width, channels) = results.first().map_or((0, 0, 0), |r| r.1);
        Ok(CutActivations {
            rows: results.into_iter().map(|r| r.0).collect(),
            height,
            width,
            channels,
        })
    }

    /// [`Self::forward`] that also returns the activations after the first `blocks` blocks
    /// of each image (as [`Self::cut_features`] gives them), from the same pass.
    ///
    /// # Errors
    /// As [`Self::cut_features`].
    pub fn forward_with_cut(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
        blocks: usize,
    ) -> Result<(BatchOutput, CutActivations), KernelError> {
        self.check_cut(images, height, width, blocks)?;
        let dim = self.embedding_dim();
        let one = |image: &[f32], scratch: &mut Scratch, threads: Threads| {
            let mut embedding = vec![0.0; dim];
            let mut cut = Vec::new();
            self.embed_with_cut(
                image,
                (height, width),
                scratch,
                threads,
                &mut embedding,
                Some((blocks, &mut cut)),
                &mut Clock::off(),
            );
            (embedding, cut)
        };
        #[cfg(not(target_arch = "wasm32"))]
        let results: Vec<(Vec<f32>, Vec<f32>)> = if images.len() >= rayon::current_num_threads() {
            use rayon::prelude::*;
            images
                .par_iter()
                .map_init(Scratch::default, |scratch, image| {
                    one(image, scratch, Threads::Serial)
                })
                .collect()
        } else {
            let mut scratch = Scratch::default();
            images
                .iter()
                .map(|image| one(image, &mut scratch, Threads::Parallel))
                .collect()
        };
        #[cfg(target_arch = "wasm32")]
        let results: Vec<(Vec<f32>, Vec<f32>)> = {
            let mut scratch = Scratch::default();
            images
                .iter()
                .map(|image| one(image, &mut scratch, Threads::Serial))
                .collect()
        };
        let (height_cut, width_cut, channels) = self.cut_shape(height, width, blocks);
        let mut embeddings = Vec::with_capacity(images.len() * dim);
        let mut rows = Vec::with_capacity(images.len());
        for (embedding, cut) in results {
            embeddings.extend(embedding);
            rows.push(cut);
        }
        Ok((
            self.with_logits(embeddings, images.len()),
            CutActivations {
                rows,
                height: height_cut,
                width: width_cut,
                channels,
            },
        ))
    }

    /// The inputs' sizes and a cut within the network.
    fn check_cut(
        &self,
        images: &[&[f32]],
        height: usize,
        width: usize,
        blocks: usize,
    ) -> Result<(), KernelError> {
        self.check_inputs(images, height, width)?;
        if blocks > self.blocks.len() {
            return Err(KernelError::Channels {
                layer: "cut point".to_string(),
                got: blocks,
                expected: self.blocks.len(),
            });
        }
        Ok(())
    }

    /// `(height, width, channels)` after the stem and the first `blocks` blocks of a
    /// `height × width` image.
    fn cut_shape(&self, height: usize, width: usize, blocks: usize) -> (usize, usize, usize) {
        let stride = self.stem.stride;
        let (mut h, mut w) = (height.div_ceil(stride), width.div_ceil(stride));
        let mut channels = self.stem.out_channels;
        for block in self.blocks.iter().take(blocks) {
            (h, w) = block.depthwise.output_size(h, w);
            channels = block.project.out_channels;
        }
        (h, w, channels)
    }
}
