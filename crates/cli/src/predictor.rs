//! A model file's classifier as `eval` and `predict` use it: a head on the frozen network's
//! embeddings, or a fine-tuned model whose tuned last blocks run on the frozen part's cut-point
//! activations (core's [`ModelClassifier`]), fed from files through the cache.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use medtransfer_core::ComputeDevice;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::embeddings::View;
use medtransfer_core::finetune::ModelClassifier;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::ood::{OodReference, OodScore};

use crate::backbone::Backbone;

/// Reads and checks a model file and builds its classifier on `device`.
pub(crate) fn open(
    path: &Path,
    device: &ComputeDevice,
) -> Result<(ModelFile, ModelClassifier), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = ModelFile::from_bytes(&bytes).map_err(|e| at(&e))?;
    let classifier = ModelClassifier::from_file(&model, &device.device).map_err(|e| at(&e))?;
    Ok((model, classifier))
}

/// One image's prediction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Predicted {
    /// One probability per class.
    pub probabilities: Vec<f32>,
    /// Whether it is unlike the training images, when the model has an OOD reference.
    pub ood: Option<OodScore>,
}

/// The prediction of each of `items`, in order (a file that cannot be read or decoded gets its
/// error; a failed device pass is every image's error), advancing `bar`. With an OOD
/// `reference`, each is scored on the frozen network's embedding (for a fine-tuned model, a
/// second pass over the images, read from the cache when they are in it).
pub(crate) fn predict(
    classifier: &ModelClassifier,
    reference: Option<&OodReference>,
    backbone: &mut Backbone,
    items: &[(PathBuf, View)],
    bar: &ProgressBar,
) -> Vec<Result<Predicted, String>> {
    let (probabilities, embeddings) = match classifier {
        ModelClassifier::Head(head) => {
            let inputs = backbone.embed(items, &AugmentConfig::default(), bar);
            let ok: Vec<Vec<f32>> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
            let probabilities = pollster::block_on(head.predict(&ok));
            let probabilities = distribute(&inputs, probabilities.map_err(|e| e.to_string()));
            (probabilities, reference.map(|_| inputs))
        }
        ModelClassifier::Tuned(tuned) => {
            let inputs = backbone.cut_features(items, tuned.blocks(), bar);
            let ok: Vec<_> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
            let probabilities = pollster::block_on(tuned.predict(&ok));
            let probabilities = distribute(&inputs, probabilities.map_err(|e| e.to_string()));
            let embeddings = reference.map(|_| {
                bar.set_position(0);
                backbone.embed(items, &AugmentConfig::default(), bar)
            });
            (probabilities, embeddings)
        }
    };
    let mut embeddings = embeddings.map(Vec::into_iter);
    probabilities
        .into_iter()
        .map(|probabilities| {
            let embedding = embeddings.as_mut().and_then(Iterator::next);
            let probabilities = probabilities?;
            let ood = match (reference, embedding) {
                (Some(reference), Some(embedding)) => Some(
                    reference
                        .score(&embedding?)
                        .map_err(|e| format!("out-of-distribution check: {e}"))?,
                ),
                _ => None,
            };
            Ok(Predicted { probabilities, ood })
        })
        .collect()
}

/// What the images go through first, for progress bars.
pub(crate) fn stage(classifier: &ModelClassifier) -> &'static str {
    match classifier.tuned_blocks() {
        None => "embedding",
        Some(_) => "activations",
    }
}

/// Hands the probabilities of the inputs that worked back to them, in order.
fn distribute<T>(
    inputs: &[Result<T, String>],
    probabilities: Result<Vec<Vec<f32>>, String>,
) -> Vec<Result<Vec<f32>, String>> {
    let mut rows = match probabilities {
        Ok(rows) => rows.into_iter(),
        Err(error) => {
            return inputs
                .iter()
                .map(|i| match i {
                    Ok(_) => Err(error.clone()),
                    Err(e) => Err(e.clone()),
                })
                .collect();
        }
    };
    inputs
        .iter()
        .map(|input| match input {
            Ok(_) => rows
                .next()
                .ok_or_else(|| "no prediction was returned".to_string()),
            Err(e) => Err(e.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_go_back_to_the_inputs_that_worked() {
        let inputs = vec![Ok(1), Err("bad file".to_string()), Ok(2)];
        let out = distribute(&inputs, Ok(vec![vec![0.1, 0.9], vec![0.7, 0.3]]));
        assert_eq!(
            out,
            vec![
                Ok(vec![0.1, 0.9]),
                Err("bad file".to_string()),
                Ok(vec![0.7, 0.3])
            ]
        );
        let failed = distribute(&inputs, Err("device lost".into()));
        assert_eq!(failed[0], Err("device lost".to_string()));
        assert_eq!(failed[1], Err("bad file".to_string()));
    }
}
