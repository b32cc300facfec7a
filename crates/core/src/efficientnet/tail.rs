//! The trainable end of EfficientNet-Lite0 for fine-tuning: its last `N` MBConv blocks and the
//! 1×1 head convolution, which turn the activations at the cut point (after block `16 − N`)
//! into the 1280-d embedding. The part before the cut stays frozen and runs once per image
//! (`medtransfer_kernels::Network::cut_features`); only the tail runs forward and backward in
//! each epoch.
//!
//! The tail's tensors travel as [`TailWeights`] (names `blocks.{i}.expand.weight`, …, `head.bias`
//! in network order; kernels `[out, in / groups, k, k]`, BatchNorm folded in): read from the
//! pretrained model, trained, stored in the model file and put back on any device.

use burn::module::Param;
use burn::tensor::activation::relu6;
use burn::tensor::{Device, Tensor, TensorData};

use super::model::{
    BlockSpec, EfficientNetLite0, HEAD_IN_CHANNELS, MbConvBlock, STEM_CHANNELS, SameConv2d,
    block_specs, global_average_pool,
};
use super::{EMBEDDING_DIM, IMAGE_SIZE, same_output_size};
use crate::readback::{ComputeError, read_f32};

/// Most blocks a user may fine-tune: the last three stages (blocks 8–15), whose cut-point
/// activations are at most 14×14×112 values an image.
pub const MAX_TRAIN_BLOCKS: usize = 8;

/// The tail's weights are not those of an EfficientNet-Lite0 tail of their block count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fine-tuned blocks' weights do not fit EfficientNet-Lite0: {0}")]
pub struct TailWeightsError(pub String);

/// The last `blocks` blocks and the head convolution as host tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct TailWeights {
    /// How many of the last blocks (1..=[`MAX_TRAIN_BLOCKS`]).
    pub blocks: usize,
    /// `(name, shape, values)` per tensor, in [`tail_tensor_shapes`] order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The specs of the last `blocks` blocks, with their index in the network.
fn tail_specs(blocks: usize) -> Vec<(usize, BlockSpec)> {
    let specs = block_specs();
    let first = specs.len().saturating_sub(blocks);
    specs.into_iter().enumerate().skip(first).collect()
}

/// Names and shapes of the tensors of the last `blocks` blocks and the head convolution.
pub fn tail_tensor_shapes(blocks: usize) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Vec::new();
    for (index, spec) in tail_specs(blocks) {
        let mid = spec.mid_channels();
        if spec.expand_ratio != 1 {
            shapes.push((
                format!("blocks.{index}.expand.weight"),
                vec![mid, spec.in_channels, 1, 1],
            ));
            shapes.push((format!("blocks.{index}.expand.bias"), vec![mid]));
        }
        shapes.push((
            format!("blocks.{index}.depthwise.weight"),
            vec![mid, 1, spec.kernel, spec.kernel],
        ));
        shapes.push((format!("blocks.{index}.depthwise.bias"), vec![mid]));
        shapes.push((
            format!("blocks.{index}.project.weight"),
            vec![spec.out_channels, mid, 1, 1],
        ));
        shapes.push((
            format!("blocks.{index}.project.bias"),
            vec![spec.out_channels],
        ));
    }
    shapes.push((
        "head.weight".to_string(),
        vec![EMBEDDING_DIM, HEAD_IN_CHANNELS, 1, 1],
    ));
    shapes.push(("head.bias".to_string(), vec![EMBEDDING_DIM]));
    shapes
}

/// `(channels, height, width)` of the cut-point activations of a 224×224 image when the last
/// `blocks` blocks are fine-tuned (e.g. 2 → 192×7×7, 8 → 80×14×14).
pub fn cut_shape(blocks: usize) -> (usize, usize, usize) {
    let specs = block_specs();
    let cut = specs.len().saturating_sub(blocks);
    let mut size = same_output_size(IMAGE_SIZE, 2);
    let mut channels = STEM_CHANNELS;
    for spec in specs.iter().take(cut) {
        size = same_output_size(size, spec.stride);
        channels = spec.out_channels;
    }
    (channels, size, size)
}

/// Multiply-accumulates of one forward pass over a 224×224 image: of the whole network
/// (stem, blocks and head convolution; about 0.39·10⁹) when `blocks` is `None`, else of the
/// last `blocks` blocks and the head convolution (the part fine-tuning runs; its backward pass
/// costs about twice as much again).
pub fn forward_macs(blocks: Option<usize>) -> u64 {
    let specs = block_specs();
    let first = blocks.map_or(0, |b| specs.len().saturating_sub(b));
    let mut size = same_output_size(IMAGE_SIZE, 2) as u64;
    let mut macs = if blocks.is_none() {
        size * size * 3 * STEM_CHANNELS as u64 * 9
    } else {
        0
    };
    for (index, spec) in specs.iter().enumerate() {
        let out = same_output_size(size as usize, spec.stride) as u64;
        if index >= first {
            let (c_in, mid) = (spec.in_channels as u64, spec.mid_channels() as u64);
            let k = spec.kernel as u64;
            if spec.expand_ratio != 1 {
                macs += size * size * c_in * mid;
            }
            macs += out * out * mid * (k * k + spec.out_channels as u64);
        }
        size = out;
    }
    macs + size * size * (HEAD_IN_CHANNELS * EMBEDDING_DIM) as u64
}

/// Checks a block count: 1..=[`MAX_TRAIN_BLOCKS`].
pub fn check_blocks(blocks: usize) -> Result<(), TailWeightsError> {
    if (1..=MAX_TRAIN_BLOCKS).contains(&blocks) {
        Ok(())
    } else {
        Err(TailWeightsError(format!(
            "{blocks} blocks; between 1 and {MAX_TRAIN_BLOCKS} can be fine-tuned"
        )))
    }
}

impl TailWeights {
    /// The pretrained tail of `model` (read back asynchronously, so it works on WebGPU).
    ///
    /// # Errors
    /// A block count outside 1..=[`MAX_TRAIN_BLOCKS`] (as [`ComputeError::Execution`]), or a
    /// failed read.
    pub async fn pretrained(
        model: &EfficientNetLite0,
        blocks: usize,
    ) -> Result<Self, ComputeError> {
        check_blocks(blocks).map_err(|e| ComputeError::Execution(e.to_string()))?;
        let first = model.blocks.len().saturating_sub(blocks);
        let convs = model.blocks[first..]
            .iter()
            .flat_map(MbConvBlock::convs)
            .chain([&model.head]);
        let values = read_convs(convs).await?;
        let tensors = tail_tensor_shapes(blocks)
            .into_iter()
            .zip(values)
            .map(|((name, shape), v)| (name, shape, v))
            .collect();
        let weights = Self { blocks, tensors };
        weights
            .check()
            .map_err(|e| ComputeError::Execution(e.to_string()))?;
        Ok(weights)
    }

    /// Checks names, shapes, lengths and that every value is finite.
    ///
    /// # Errors
    /// [`TailWeightsError`] naming the first tensor that does not fit.
    pub fn check(&self) -> Result<(), TailWeightsError> {
        check_blocks(self.blocks)?;
        let expected = tail_tensor_shapes(self.blocks);
        if expected.len() != self.tensors.len() {
            return Err(TailWeightsError(format!(
                "expected {} tensors, found {}",
                expected.len(),
                self.tensors.len()
            )));
        }
        for ((name, shape), (got_name, got_shape, values)) in expected.iter().zip(&self.tensors) {
            if name != got_name || shape != got_shape {
                return Err(TailWeightsError(format!(
                    "expected {name} {shape:?}, found {got_name} {got_shape:?}"
                )));
            }
            if values.len() != shape.iter().product::<usize>() {
                return Err(TailWeightsError(format!(
                    "{name} has {} values for shape {shape:?}",
                    values.len()
                )));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(TailWeightsError(format!("{name} has non-finite values")));
            }
        }
        Ok(())
    }
}

/// Each convolution's weight then bias, read back in order.
async fn read_convs<'a>(
    convs: impl IntoIterator<Item = &'a SameConv2d>,
) -> Result<Vec<Vec<f32>>, ComputeError> {
    let mut values = Vec::new();
    for conv in convs {
        values.push(read_f32(conv.weight.val()).await?);
        values.push(read_f32(conv.bias.val()).await?);
    }
    Ok(values)
}

/// The last blocks and the head convolution as a Burn module.
#[derive(burn::module::Module, Debug)]
pub struct Tail {
    /// The fine-tuned blocks, in network order.
    pub blocks: Vec<MbConvBlock>,
    /// The 1×1 head convolution 320 → 1280 (+ ReLU6).
    pub head: SameConv2d,
}

impl Tail {
    /// Builds the module from host weights on `device` (an autodiff device to train it).
    ///
    /// # Errors
    /// The weights do not fit ([`TailWeights::check`]).
    pub fn from_weights(weights: &TailWeights, device: &Device) -> Result<Self, TailWeightsError> {
        weights.check()?;
        let mut tensors = weights.tensors.iter();
        let mut conv = |stride: usize, groups: usize| -> Result<SameConv2d, TailWeightsError> {
            match (tensors.next(), tensors.next()) {
                (Some(w), Some(b)) => Ok(SameConv2d {
                    weight: Param::from_tensor(Tensor::from_data(
                        TensorData::new(w.2.clone(), w.1.clone()),
                        device,
                    )),
                    bias: Param::from_tensor(Tensor::from_data(
                        TensorData::new(b.2.clone(), b.1.clone()),
                        device,
                    )),
                    stride,
                    groups,
                }),
                _ => Err(TailWeightsError("too few tensors".into())),
            }
        };
        let mut blocks = Vec::new();
        for (_, spec) in tail_specs(weights.blocks) {
            let expand = if spec.expand_ratio != 1 {
                Some(conv(1, 1)?)
            } else {
                None
            };
            let depthwise = conv(spec.stride, spec.mid_channels())?;
            let project = conv(1, 1)?;
            blocks.push(MbConvBlock {
                expand,
                depthwise,
                project,
                skip: spec.has_skip(),
            });
        }
        let head = conv(1, 1)?;
        Ok(Self { blocks, head })
    }

    /// Its convolutions in network order, the head convolution last.
    pub fn convs(&self) -> Vec<&SameConv2d> {
        self.blocks
            .iter()
            .flat_map(MbConvBlock::convs)
            .chain([&self.head])
            .collect()
    }

    /// The `[N, 1280]` embedding from cut-point activations `[N, C, H, W]` (see
    /// [`cut_shape`]): the blocks, the head convolution, ReLU6, global average pooling.
    pub fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        global_average_pool(self.forward_feature_map(features))
    }

    /// The last convolutional feature map `[N, 1280, 7, 7]` (for 224×224 images) from
    /// cut-point activations `[N, C, H, W]`: the blocks, the head convolution and ReLU6, before
    /// the pooling of [`Self::forward`] (what Grad-CAM weighs, [`crate::gradcam`]).
    pub fn forward_feature_map(&self, features: Tensor<4>) -> Tensor<4> {
        let mut x = features;
        for block in &self.blocks {
            x = block.forward(x);
        }
        relu6(self.head.forward(x))
    }

    /// Reads the weights back to the host (asynchronously, so it works on WebGPU).
    ///
    /// # Errors
    /// A failed read.
    pub async fn to_weights(&self, blocks: usize) -> Result<TailWeights, ComputeError> {
        let values = read_convs(self.convs()).await?;
        Ok(TailWeights {
            blocks,
            tensors: tail_tensor_shapes(blocks)
                .into_iter()
                .zip(values)
                .map(|((name, shape), v)| (name, shape, v))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_shapes_follow_the_stages() {
        assert_eq!(cut_shape(1), (192, 7, 7));
        assert_eq!(cut_shape(2), (192, 7, 7));
        assert_eq!(cut_shape(5), (112, 14, 14));
        assert_eq!(cut_shape(8), (80, 14, 14));
        assert!(check_blocks(0).is_err() && check_blocks(MAX_TRAIN_BLOCKS + 1).is_err());
        let shapes = tail_tensor_shapes(2);
        assert_eq!(shapes.len(), 6 + 6 + 2);
        assert_eq!(
            shapes[0],
            ("blocks.14.expand.weight".into(), vec![1152, 192, 1, 1])
        );
        assert_eq!(shapes.last().map(|s| s.1.clone()), Some(vec![1280]));
    }

    #[test]
    fn the_tail_costs_a_fraction_of_the_network() {
        let all = forward_macs(None);
        // EfficientNet-Lite0: about 0.4 GMAC at 224×224 (0.39 with the head convolution,
        // without the classifier).
        assert!((350_000_000..420_000_000).contains(&all), "{all}");
        let two = forward_macs(Some(2));
        let eight = forward_macs(Some(8));
        assert!(two < eight && eight < all, "{two} {eight} {all}");
        // Blocks 14–15 and the head: 10.8 + 1.4 + 10.8 (block 14), 10.8 + 0.5 + 18.1 (block
        // 15), 20.1 (head) million.
        assert!((70_000_000..75_000_000).contains(&two), "{two}");
    }

    #[test]
    fn weights_that_do_not_fit_are_refused() {
        let shapes = tail_tensor_shapes(1);
        let mut weights = TailWeights {
            blocks: 1,
            tensors: shapes
                .into_iter()
                .map(|(name, shape)| {
                    let len = shape.iter().product();
                    (name, shape, vec![0.01; len])
                })
                .collect(),
        };
        assert!(weights.check().is_ok());
        let tail = Tail::from_weights(&weights, &Device::flex()).expect("fits");
        assert_eq!(tail.blocks.len(), 1);
        let embedding = tail.forward(Tensor::zeros([2, 192, 7, 7], &Device::flex()));
        assert_eq!(embedding.dims(), [2, EMBEDDING_DIM]);
        weights.tensors[0].2[3] = f32::NAN;
        assert!(weights.check().is_err());
        weights.tensors.pop();
        assert!(Tail::from_weights(&weights, &Device::flex()).is_err());
        weights.blocks = 2;
        assert!(weights.check().is_err());
    }
}
