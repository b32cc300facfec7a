//! The EfficientNet-Lite0 network, inference form: every BatchNorm is folded into the
//! convolution before it (done once, when the weights are converted), so each layer is a
//! convolution with a bias followed by ReLU6 or nothing.
//!
//! Architecture of `efficientnet-lite-pytorch` 0.1.0 for `efficientnet-lite0`: TF "SAME"
//! padding on every convolution, ReLU6, no squeeze-excitation, 16 MBConv blocks, a 1×1 head to
//! 1280 channels, global average pooling (the embedding) and a linear layer to 1000 logits.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::relu6;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Device, Tensor};

use super::{EMBEDDING_DIM, IMAGE_CHANNELS, NUM_CLASSES, same_padding};

/// One MBConv block of the network, as its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Depthwise kernel size (3 or 5).
    pub kernel: usize,
    /// Depthwise stride (1 or 2).
    pub stride: usize,
    /// Expansion ratio of the 1×1 expand convolution; 1 means the block has none.
    pub expand_ratio: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl BlockSpec {
    /// Channels inside the block (after expansion, through the depthwise convolution).
    pub const fn mid_channels(&self) -> usize {
        self.in_channels * self.expand_ratio
    }

    /// Whether the block adds its input to its output (stride 1 and unchanged channel count).
    pub const fn has_skip(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// Output channels of the stem convolution.
pub const STEM_CHANNELS: usize = 32;

/// Stages as (repeats, kernel, stride of the first block, expand ratio, output channels).
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// The 16 MBConv blocks of EfficientNet-Lite0 in order (stages expanded into blocks: only the
/// first block of a stage strides or changes the channel count).
pub fn block_specs() -> Vec<BlockSpec> {
    let mut blocks = Vec::with_capacity(16);
    let mut in_channels = STEM_CHANNELS;
    for (repeats, kernel, stride, expand_ratio, out_channels) in STAGES {
        for repeat in 0..repeats {
            blocks.push(BlockSpec {
                kernel,
                stride: if repeat == 0 { stride } else { 1 },
                expand_ratio,
                in_channels,
                out_channels,
            });
            in_channels = out_channels;
        }
    }
    blocks
}

/// Input channels of the head convolution (output of the last block).
pub const HEAD_IN_CHANNELS: usize = 320;

/// A convolution with TF "SAME" padding and a bias (the folded BatchNorm shift).
///
/// Padding depends on the input size, so it is computed per call: symmetric padding is handed to
/// the convolution, asymmetric padding (stride 2 on even sizes) is applied explicitly first and
/// the convolution then runs unpadded.
#[derive(Module, Debug)]
pub struct SameConv2d {
    /// Kernel `[out_channels, in_channels / groups, k, k]`, BatchNorm scale folded in.
    pub weight: Param<Tensor<4>>,
    /// Per-output-channel bias `[out_channels]`: the folded BatchNorm shift.
    pub bias: Param<Tensor<1>>,
    /// Stride in both spatial dimensions.
    pub stride: usize,
    /// Convolution groups: 1 for dense, the channel count for depthwise.
    pub groups: usize,
}

impl SameConv2d {
    /// Wraps already-built parameter tensors.
    pub fn new(weight: Tensor<4>, bias: Tensor<1>, stride: usize, groups: usize) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            stride,
            groups,
        }
    }

    /// Convolves `x` (`[N, C, H, W]`) with TF "SAME" padding: the output is
    /// `[N, out_channels, ceil(H / stride), ceil(W / stride)]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = x.dims();
        let [_, _, kernel_h, kernel_w] = self.weight.dims();
        let vertical = same_padding(height, kernel_h, self.stride);
        let horizontal = same_padding(width, kernel_w, self.stride);
        let symmetric = vertical.0 == vertical.1 && horizontal.0 == horizontal.1;
        let (x, padding) = if symmetric {
            (x, [vertical, horizontal])
        } else {
            (
                x.pad([vertical, horizontal], PadMode::Constant(0.0)),
                [(0, 0), (0, 0)],
            )
        };
        let options = ConvOptions::new_with_padding(
            [self.stride, self.stride],
            padding,
            [1, 1],
            self.groups.max(1),
        );
        conv2d(x, self.weight.val(), Some(self.bias.val()), options)
    }
}

/// One MBConv block without squeeze-excitation: optional 1×1 expansion + ReLU6, depthwise k×k +
/// ReLU6, 1×1 projection (linear), plus the input when [`BlockSpec::has_skip`].
#[derive(Module, Debug)]
pub struct MbConvBlock {
    /// The 1×1 expansion (absent when the expand ratio is 1, i.e. in the first block).
    pub expand: Option<SameConv2d>,
    /// The depthwise k×k convolution (groups = channels), carrying the block's stride.
    pub depthwise: SameConv2d,
    /// The 1×1 projection to the block's output channels (no activation).
    pub project: SameConv2d,
    /// Whether the input is added to the output (identity skip).
    pub skip: bool,
}

impl MbConvBlock {
    /// Its convolutions in order: the expansion (when it has one), depthwise, projection.
    pub fn convs(&self) -> Vec<&SameConv2d> {
        self.expand
            .iter()
            .chain([&self.depthwise, &self.project])
            .collect()
    }

    /// Runs the block on `[N, C_in, H, W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = match &self.expand {
            Some(expand) => relu6(expand.forward(input.clone())),
            None => input.clone(),
        };
        let x = relu6(self.depthwise.forward(x));
        let x = self.project.forward(x);
        if self.skip { x + input } else { x }
    }
}

/// Global average pooling: `[N, C, H, W]` → `[N, C]`, each channel's mean over its `H × W`
/// positions.
pub fn global_average_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// What [`EfficientNetLite0::forward`] returns for a batch.
#[derive(Debug, Clone)]
pub struct EfficientNetOutput {
    /// `[N, 1280]` pooled features after the head's ReLU6: what a new classifier trains on.
    pub embedding: Tensor<2>,
    /// `[N, 1000]` ImageNet-1k logits (before softmax).
    pub logits: Tensor<2>,
}

/// The input tensor does not have the shape the network accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "EfficientNet-Lite0 expects input [N, 3, H, W] with N, H, W ≥ 1 (224×224 for the trained \
     accuracy), got {dims:?}"
)]
pub struct InputShapeError {
    /// The offending shape.
    pub dims: [usize; 4],
}

/// Pretrained EfficientNet-Lite0 with BatchNorm folded into its convolutions.
///
/// Build it with [`crate::efficientnet::load_from_bytes`]. It is fully convolutional, so any
/// `H×W` runs, but the pretrained weights expect `[N, 3, 224, 224]` inputs normalised as
/// `(x − 127) / 128` (see [`crate::preprocess`]).
#[derive(Module, Debug)]
pub struct EfficientNetLite0 {
    /// 3×3 stride-2 convolution 3→32 (+ ReLU6).
    pub stem: SameConv2d,
    /// The 16 MBConv blocks.
    pub blocks: Vec<MbConvBlock>,
    /// 1×1 convolution 320→1280 (+ ReLU6), before global average pooling.
    pub head: SameConv2d,
    /// The ImageNet classifier 1280→1000 (weight stored `[1280, 1000]`, Burn's layout).
    pub fc: Linear,
}

impl EfficientNetLite0 {
    /// Checks that `dims` is a shape the network accepts (`[N, 3, H, W]`, none zero), so that
    /// callers holding user-made tensors can fail cleanly instead of panicking in a kernel.
    pub fn check_input_dims(dims: [usize; 4]) -> Result<(), InputShapeError> {
        let [n, c, h, w] = dims;
        if n == 0 || c != IMAGE_CHANNELS || h == 0 || w == 0 {
            Err(InputShapeError { dims })
        } else {
            Ok(())
        }
    }

    /// The `[N, 1280]` embedding of a `[N, 3, H, W]` batch: stem, blocks, head, ReLU6 and global
    /// average pooling. Panics (inside Burn) if the input does not have 3 channels; see
    /// [`Self::check_input_dims`].
    pub fn forward_embedding(&self, x: Tensor<4>) -> Tensor<2> {
        global_average_pool(self.forward_feature_map(x))
    }

    /// The last convolutional feature map `[N, 1280, H/32, W/32]` (7×7 for 224×224) of a
    /// `[N, 3, H, W]` batch: stem, blocks, head convolution and ReLU6, before the pooling that
    /// makes the embedding (what Grad-CAM weighs, [`crate::gradcam`]).
    pub fn forward_feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = relu6(self.stem.forward(x));
        for block in &self.blocks {
            x = block.forward(x);
        }
        relu6(self.head.forward(x))
    }

    /// The activations `[N, C, H, W]` after the stem and the first `blocks` blocks of a
    /// `[N, 3, H, W]` batch: the frozen part when the rest is fine-tuned
    /// ([`super::tail::Tail`]). `blocks` past the last block runs them all.
    pub fn forward_cut(&self, x: Tensor<4>, blocks: usize) -> Tensor<4> {
        let mut x = relu6(self.stem.forward(x));
        for block in self.blocks.iter().take(blocks) {
            x = block.forward(x);
        }
        x
    }

    /// Runs blocks `range` on activations `[N, C, H, W]` (the output of the block before
    /// `range.start`), e.g. to move cut-point activations to a later cut.
    pub fn forward_blocks(&self, x: Tensor<4>, range: std::ops::Range<usize>) -> Tensor<4> {
        let end = range.end.min(self.blocks.len());
        let start = range.start.min(end);
        self.blocks[start..end]
            .iter()
            .fold(x, |x, block| block.forward(x))
    }

    /// The `[N, 1280]` embedding from the activations after the first `blocks` blocks: the
    /// remaining blocks, the head, ReLU6, global average pooling.
    pub fn embedding_from_cut(&self, x: Tensor<4>, blocks: usize) -> Tensor<2> {
        let x = self.forward_blocks(x, blocks..self.blocks.len());
        global_average_pool(relu6(self.head.forward(x)))
    }

    /// The last convolutional feature map `[N, 1280, 7, 7]` (for 224×224 images) from the
    /// activations before block `first` `[N, C, H, W]`: the remaining blocks, the head
    /// convolution and ReLU6 (Grad-CAM from the activations the page keeps).
    pub fn feature_map_from(&self, x: Tensor<4>, first: usize) -> Tensor<4> {
        relu6(
            self.head
                .forward(self.forward_blocks(x, first..self.blocks.len())),
        )
    }

    /// ImageNet logits `[N, 1000]` from embeddings `[N, 1280]` (the pretrained linear head).
    pub fn logits_from_embedding(&self, embedding: Tensor<2>) -> Tensor<2> {
        self.fc.forward(embedding)
    }

    /// ImageNet logits `[N, 1000]` of a `[N, 3, H, W]` batch.
    pub fn forward_logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.logits_from_embedding(self.forward_embedding(x))
    }

    /// Embedding and logits of a `[N, 3, H, W]` batch in one pass.
    pub fn forward(&self, x: Tensor<4>) -> EfficientNetOutput {
        let embedding = self.forward_embedding(x);
        let logits = self.logits_from_embedding(embedding.clone());
        EfficientNetOutput { embedding, logits }
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.stem.weight.device()
    }

    /// Length of the embedding ([`EMBEDDING_DIM`]).
    pub const fn embedding_dim(&self) -> usize {
        EMBEDDING_DIM
    }

    /// Number of classes of the pretrained head ([`NUM_CLASSES`]).
    pub const fn num_classes(&self) -> usize {
        NUM_CLASSES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn block_specs_match_lite0() {
        let blocks = block_specs();
        assert_eq!(blocks.len(), 16);
        assert_eq!(
            blocks[0],
            BlockSpec {
                kernel: 3,
                stride: 1,
                expand_ratio: 1,
                in_channels: 32,
                out_channels: 16
            }
        );
        assert!(!blocks[0].has_skip());
        assert_eq!(blocks[1].stride, 2);
        assert_eq!(blocks[1].mid_channels(), 96);
        assert!(blocks[2].has_skip());
        // Stage 5 (k5, s1, 80→112): first block changes channels, so no skip.
        assert_eq!((blocks[8].kernel, blocks[8].stride), (5, 1));
        assert!(!blocks[8].has_skip());
        assert_eq!(blocks[15].out_channels, HEAD_IN_CHANNELS);
        let strides: usize = blocks.iter().map(|b| b.stride).product();
        assert_eq!(strides * 2, 32, "total downsampling is 32 (224 → 7)");
    }

    #[test]
    fn input_shape_check() {
        assert!(EfficientNetLite0::check_input_dims([2, 3, 224, 224]).is_ok());
        assert!(EfficientNetLite0::check_input_dims([1, 1, 224, 224]).is_err());
        assert!(EfficientNetLite0::check_input_dims([0, 3, 224, 224]).is_err());
        assert!(EfficientNetLite0::check_input_dims([1, 3, 0, 224]).is_err());
    }

    /// A SAME convolution with a kernel of ones counts, at each output position, the input
    /// positions inside the window, which pins down exactly where the padding went.
    #[test]
    fn same_conv_pads_asymmetrically_like_tensorflow() {
        let device = Device::flex();
        let conv = SameConv2d::new(
            Tensor::ones([1, 1, 3, 3], &device),
            Tensor::zeros([1], &device),
            2,
            1,
        );
        let x = Tensor::<4>::ones([1, 1, 4, 4], &device);
        let y = conv.forward(x);
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        let values = pollster::block_on(crate::readback::read_f32(y)).expect("read back");
        // Padding (0 before, 1 after): windows rows/cols {0,1,2} and {2,3,pad}.
        assert_eq!(values, vec![9.0, 6.0, 6.0, 4.0]);

        // Stride 1, 5×5 on 3×3: padding (2, 2), every window sees all 9 inputs at the centre.
        let conv = SameConv2d::new(
            Tensor::ones([1, 1, 5, 5], &device),
            Tensor::ones([1], &device),
            1,
            1,
        );
        let y = conv.forward(Tensor::<4>::ones([1, 1, 3, 3], &device));
        assert_eq!(y.dims(), [1, 1, 3, 3]);
        let values = pollster::block_on(crate::readback::read_f32(y)).expect("read back");
        assert_eq!(values, vec![10.0; 9], "bias 1 + 9 ones");
    }

    #[test]
    fn depthwise_same_conv_keeps_channels_apart() {
        let device = Device::flex();
        // Channel 0 kernel all 1, channel 1 kernel all 2.
        let kernel: Vec<f32> = [1.0f32; 9].into_iter().chain([2.0; 9]).collect();
        let weight = Tensor::<4>::from_data(TensorData::new(kernel, [2, 1, 3, 3]), &device);
        let conv = SameConv2d::new(weight, Tensor::zeros([2], &device), 2, 2);
        let x = Tensor::<4>::ones([1, 2, 3, 3], &device);
        let y = conv.forward(x);
        assert_eq!(y.dims(), [1, 2, 2, 2]);
        let values = pollster::block_on(crate::readback::read_f32(y)).expect("read back");
        // 3×3 stride 2 on 3: padding (1, 1), symmetric; windows span rows/cols {-1,0,1} and
        // {1,2,3}, so each covers 2×2 real inputs.
        assert_eq!(values, vec![4.0, 4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0]);
    }
}
