//! The model in use in the worker: core's [`ModelClassifier`] fed from an image's embedding,
//! or (a fine-tuned model) from its activations moved from the stored cut to the model's.

use medtransfer_core::ComputeDevice;
use medtransfer_core::efficientnet::EfficientNetLite0;
use medtransfer_core::finetune::{
    EmbeddingWithActivations, ModelClassifier, STORED_BLOCKS, advance,
};

/// The class probabilities of one image from its embedding and stored activations.
///
/// # Errors
/// The device failed, as the page should read it.
pub(super) async fn predict(
    classifier: &ModelClassifier,
    model: &EfficientNetLite0,
    image: EmbeddingWithActivations,
    device: &ComputeDevice,
) -> Result<Vec<f32>, String> {
    let rows = match classifier {
        ModelClassifier::Head(head) => head.predict(&[image.embedding]).await,
        ModelClassifier::Tuned(tuned) => {
            let activations = advance(
                model,
                &[image.activations],
                STORED_BLOCKS,
                tuned.blocks(),
                &device.device,
            )
            .await
            .map_err(|e| e.to_string())?;
            tuned.predict(&activations).await
        }
    }
    .map_err(|e| e.to_string())?;
    rows.into_iter()
        .next()
        .ok_or_else(|| "no prediction was returned".to_string())
}
