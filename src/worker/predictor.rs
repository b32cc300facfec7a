//! The model in use in the worker: a head on the embeddings, or a fine-tuned model whose tuned
//! last blocks run on the image's activations (moved from the stored cut to its own).

use medtransfer_core::ComputeDevice;
use medtransfer_core::efficientnet::{EMBEDDING_DIM, EfficientNetLite0};
use medtransfer_core::finetune::{
    EmbeddingWithActivations, STORED_BLOCKS, TunedClassifier, advance,
};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::train::Classifier;

/// What computes the class probabilities of an image.
pub(super) enum Predictor {
    /// The head on the embedding.
    Head(Box<Classifier>),
    /// The tuned tail (of this many blocks) and head on the activations.
    Tuned(Box<TunedClassifier>, usize),
}

impl Predictor {
    /// The predictor of a model file, on `device`.
    ///
    /// # Errors
    /// The file's head does not take this network's embeddings, or its weights do not fit.
    pub(super) fn from_file(file: &ModelFile, device: &ComputeDevice) -> Result<Self, String> {
        if file.header.head.input_dim != EMBEDDING_DIM {
            return Err(format!(
                "the model takes {} features, the network gives {EMBEDDING_DIM}",
                file.header.head.input_dim
            ));
        }
        Ok(match &file.tail {
            Some(tail) => Self::Tuned(
                Box::new(
                    TunedClassifier::new(
                        tail,
                        &file.header.head,
                        &file.weights,
                        &file.normalization,
                        &device.device,
                    )
                    .map_err(|e| e.to_string())?,
                ),
                tail.blocks,
            ),
            None => Self::Head(Box::new(
                Classifier::new(
                    &file.header.head,
                    &file.weights,
                    &file.normalization,
                    &device.device,
                )
                .map_err(|e| e.to_string())?,
            )),
        })
    }

    /// The class probabilities of one image from its embedding and stored activations.
    ///
    /// # Errors
    /// The device failed, as the page should read it.
    pub(super) async fn predict(
        &self,
        model: &EfficientNetLite0,
        image: EmbeddingWithActivations,
        device: &ComputeDevice,
    ) -> Result<Vec<f32>, String> {
        let rows = match self {
            Self::Head(classifier) => classifier.predict(&[image.embedding]).await,
            Self::Tuned(classifier, blocks) => {
                let activations = advance(
                    model,
                    &[image.activations],
                    STORED_BLOCKS,
                    *blocks,
                    &device.device,
                )
                .await
                .map_err(|e| e.to_string())?;
                classifier.predict(&activations).await
            }
        }
        .map_err(|e| e.to_string())?;
        rows.into_iter()
            .next()
            .ok_or_else(|| "no prediction was returned".to_string())
    }
}
