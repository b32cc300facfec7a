//! The pretrained EfficientNet-Lite0 image classifier: the frozen feature extractor that
//! MedTransfer fine-tunes on top of.
//!
//! - [`model`]: the network (architecture of `efficientnet-lite-pytorch` 0.1.0,
//!   `efficientnet-lite0`) with BatchNorm folded into its convolutions, giving a 1280-d
//!   embedding and 1000 ImageNet logits per image;
//! - [`weights`]: converting the published PyTorch checkpoint (native only) into one burnpack
//!   file, and loading that file from bytes (everywhere, including the browser);
//! - [`labels`]: the ImageNet-1k class names and top-k predictions;
//! - [`cpu`]: the same network on MedTransfer's own CPU kernels, which the CPU path runs;
//! - [`tail`]: the last blocks and the head convolution as a trainable module (fine-tuning).
//!
//! Inputs are NCHW `[N, 3, 224, 224]` tensors made by [`crate::preprocess`].

pub mod cpu;
pub mod labels;
pub mod model;
pub mod tail;
pub mod weights;

pub use labels::{ImageNetLabels, LabelsError, Prediction, top_k_predictions};
pub use model::{BlockSpec, EfficientNetLite0, EfficientNetOutput, InputShapeError, block_specs};
pub use tail::{MAX_TRAIN_BLOCKS, Tail, TailWeights, TailWeightsError, cut_shape, forward_macs};
pub use weights::{ConversionSummary, WeightsError, check_weights, load_from_bytes};
#[cfg(not(target_arch = "wasm32"))]
pub use weights::{convert_pytorch_weights, convert_pytorch_weights_to_bytes};

/// Side length of the square images the network was trained on.
pub const IMAGE_SIZE: usize = 224;
/// Number of colour channels the network expects (RGB).
pub const IMAGE_CHANNELS: usize = 3;
/// Length of the pooled feature vector (the embedding a new classifier head is trained on).
pub const EMBEDDING_DIM: usize = 1280;
/// Number of ImageNet-1k classes the pretrained head predicts.
pub const NUM_CLASSES: usize = 1000;
/// BatchNorm epsilon of the TensorFlow-trained weights (PyTorch's default 1e-5 would be wrong).
pub const BN_EPS: f64 = 1e-3;

/// File name `scripts/fetch-weights.sh` gives the PyTorch checkpoint inside `weights/`.
pub const PYTORCH_WEIGHTS_FILE_NAME: &str = "efficientnet-lite0.pth";
/// File name for the converted (BatchNorm-folded burnpack) weights inside `weights/`.
pub const CONVERTED_WEIGHTS_FILE_NAME: &str = "efficientnet-lite0.bpk";
/// File name `scripts/fetch-weights.sh` gives the ImageNet label list inside `weights/`.
pub const LABELS_FILE_NAME: &str = "imagenet-labels.json";

/// TensorFlow "SAME" padding for one spatial dimension, as `(before, after)`.
///
/// The output size is `ceil(input / stride)`; the total padding is
/// `max((output − 1)·stride + kernel − input, 0)`, of which the smaller half goes before and
/// the rest after. With stride 2 on an even size this is asymmetric (e.g. 0 before, 1 after
/// for a 3×3 kernel on 224), which is why PyTorch's symmetric `padding=` cannot express it.
/// `stride` must be at least 1 (a stride of 0 is treated as 1).
pub const fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let stride = if stride == 0 { 1 } else { stride };
    let output = input.div_ceil(stride);
    let needed = if output == 0 {
        0
    } else {
        (output - 1) * stride + kernel
    };
    let total = needed.saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Output size of a TF "SAME" convolution along one dimension: `ceil(input / stride)`.
pub const fn same_output_size(input: usize, stride: usize) -> usize {
    let stride = if stride == 0 { 1 } else { stride };
    input.div_ceil(stride)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // Stride 1 keeps the size and pads symmetrically for odd kernels.
        assert_eq!(same_padding(112, 3, 1), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        // Stride 2 on even sizes: asymmetric, the extra row/column after.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(112, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 2), (1, 2));
        // Stride 2 on odd sizes: symmetric.
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        assert_eq!(same_padding(9, 5, 2), (2, 2));
        // 1×1 convolutions never pad.
        assert_eq!(same_padding(7, 1, 1), (0, 0));
        assert_eq!(same_padding(8, 1, 2), (0, 0));
        // Degenerate sizes do not underflow.
        assert_eq!(same_padding(0, 3, 2), (0, 0));
        assert_eq!(same_padding(1, 5, 2), (2, 2));
        assert_eq!(same_padding(5, 3, 0), (1, 1));
    }

    #[test]
    fn same_output_size_is_ceil_division() {
        assert_eq!(same_output_size(224, 2), 112);
        assert_eq!(same_output_size(7, 2), 4);
        assert_eq!(same_output_size(7, 1), 7);
        // The padded input always covers exactly the output positions.
        for input in 1..40 {
            for kernel in [1, 3, 5] {
                for stride in [1, 2] {
                    let (before, after) = same_padding(input, kernel, stride);
                    let padded = input + before + after;
                    let out = (padded - kernel) / stride + 1;
                    assert_eq!(
                        out,
                        same_output_size(input, stride),
                        "{input} {kernel} {stride}"
                    );
                    assert!(after == before || after == before + 1);
                }
            }
        }
    }
}
