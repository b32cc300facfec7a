//! The model in use in the worker: core's [`ModelClassifier`] fed from an image's embedding,
//! or (a fine-tuned model) from its activations moved from the stored cut to the model's; and
//! the model file's out-of-distribution reference, which reads the frozen embedding either way;
//! and its Grad-CAM heat maps, from the same stored activations.

use medtransfer_core::ComputeDevice;
use medtransfer_core::efficientnet::EfficientNetLite0;
use medtransfer_core::finetune::{
    CutFeatures, EmbeddingWithActivations, ModelClassifier, STORED_BLOCKS, advance,
};
use medtransfer_core::gradcam::{Explainer, Heatmap};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::ood::OodReference;

use crate::protocol::ImagePrediction;

/// A trained model put to use: its classifier, its OOD reference and its explainer.
pub(super) struct ModelInUse {
    classifier: ModelClassifier,
    reference: Option<OodReference>,
    /// `None` when the file's head cannot be explained (predictions still work).
    explainer: Option<Explainer>,
}

impl ModelInUse {
    /// The model of `file` on `device`.
    ///
    /// # Errors
    /// The file's classifier does not fit the backbone, as the page should read it.
    pub(super) fn from_file(file: ModelFile, device: &ComputeDevice) -> Result<Self, String> {
        let classifier =
            ModelClassifier::from_file(&file, &device.device).map_err(|e| e.to_string())?;
        let explainer = Explainer::from_file(&file, &device.device).ok();
        Ok(Self {
            classifier,
            reference: file.ood,
            explainer,
        })
    }
}

/// The Grad-CAM of each of `classes` for one image, from its activations at the cut before
/// the last `blocks` blocks (the stored [`STORED_BLOCKS`], or those a tuned model was fed).
///
/// # Errors
/// The model has no explainer, a class is not the model's, or the device failed, as the page
/// should read it.
pub(super) async fn explain(
    in_use: &ModelInUse,
    model: &EfficientNetLite0,
    (activations, blocks): (&CutFeatures, usize),
    classes: impl IntoIterator<Item = usize>,
) -> Result<Vec<Heatmap>, String> {
    let explainer = in_use
        .explainer
        .as_ref()
        .ok_or("this model cannot be explained")?;
    let map = explainer
        .feature_map_from_activations(model, activations, blocks)
        .await
        .map_err(|e| e.to_string())?;
    explainer
        .explain_classes(&map, classes)
        .map_err(|e| e.to_string())
}

/// The Grad-CAM of every class for one predicted image; empty when there is none (the
/// prediction does not depend on it).
async fn heatmaps(
    in_use: &ModelInUse,
    model: &EfficientNetLite0,
    activations: (&CutFeatures, usize),
) -> Vec<Heatmap> {
    let classes = in_use.explainer.as_ref().map_or(0, Explainer::classes);
    if classes == 0 {
        return Vec::new();
    }
    explain(in_use, model, activations, 0..classes)
        .await
        .unwrap_or_else(|error| {
            web_sys::console::warn_1(&format!("no heat map: {error}").into());
            Vec::new()
        })
}

/// The class probabilities of one image from its embedding and stored activations, and its
/// OOD score when the model has a reference.
///
/// # Errors
/// The device failed, as the page should read it.
pub(super) async fn predict(
    in_use: &ModelInUse,
    model: &EfficientNetLite0,
    image: EmbeddingWithActivations,
    device: &ComputeDevice,
) -> Result<ImagePrediction, String> {
    // A degenerate embedding (all zeros) gets no score rather than failing the prediction.
    let ood = in_use
        .reference
        .as_ref()
        .and_then(|r| r.score(&image.embedding).ok());
    // The heat maps start from the activations the classifier takes: a tuned model's frozen
    // blocks past the stored cut run once, for both.
    let (rows, heatmaps) = match &in_use.classifier {
        ModelClassifier::Head(head) => (
            head.predict(&[image.embedding]).await,
            heatmaps(in_use, model, (&image.activations, STORED_BLOCKS)).await,
        ),
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
            let heatmaps = match activations.first() {
                Some(first) => heatmaps(in_use, model, (first, tuned.blocks())).await,
                None => Vec::new(),
            };
            (tuned.predict(&activations).await, heatmaps)
        }
    };
    let rows = rows.map_err(|e| e.to_string())?;
    let probabilities = rows
        .into_iter()
        .next()
        .ok_or_else(|| "no prediction was returned".to_string())?;
    Ok(ImagePrediction {
        probabilities,
        ood,
        ood_calibration_images: in_use
            .reference
            .as_ref()
            .map_or(0, |r| r.calibration.calibration_images),
        heatmaps,
    })
}
