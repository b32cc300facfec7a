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

/// Class probabilities of each of `items`, in order (a file that cannot be read or decoded
/// gets its error; a failed device pass is every image's error), advancing `bar`.
pub(crate) fn predict(
    classifier: &ModelClassifier,
    backbone: &mut Backbone,
    items: &[(PathBuf, View)],
    bar: &ProgressBar,
) -> Vec<Result<Vec<f32>, String>> {
    match classifier {
        ModelClassifier::Head(head) => {
            let inputs = backbone.embed(items, &AugmentConfig::default(), bar);
            let ok: Vec<Vec<f32>> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
            let probabilities = pollster::block_on(head.predict(&ok));
            distribute(inputs, probabilities.map_err(|e| e.to_string()))
        }
        ModelClassifier::Tuned(tuned) => {
            let inputs = backbone.cut_features(items, tuned.blocks(), bar);
            let ok: Vec<_> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
            let probabilities = pollster::block_on(tuned.predict(&ok));
            distribute(inputs, probabilities.map_err(|e| e.to_string()))
        }
    }
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
    inputs: Vec<Result<T, String>>,
    probabilities: Result<Vec<Vec<f32>>, String>,
) -> Vec<Result<Vec<f32>, String>> {
    let mut rows = match probabilities {
        Ok(rows) => rows.into_iter(),
        Err(error) => {
            return inputs
                .into_iter()
                .map(|i| i.and(Err(error.clone())))
                .collect();
        }
    };
    inputs
        .into_iter()
        .map(|input| {
            input.and_then(|_| {
                rows.next()
                    .ok_or_else(|| "no prediction was returned".to_string())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_go_back_to_the_inputs_that_worked() {
        let inputs = vec![Ok(1), Err("bad file".to_string()), Ok(2)];
        let out = distribute(inputs.clone(), Ok(vec![vec![0.1, 0.9], vec![0.7, 0.3]]));
        assert_eq!(
            out,
            vec![
                Ok(vec![0.1, 0.9]),
                Err("bad file".to_string()),
                Ok(vec![0.7, 0.3])
            ]
        );
        let failed = distribute(inputs, Err("device lost".into()));
        assert_eq!(failed[0], Err("device lost".to_string()));
        assert_eq!(failed[1], Err("bad file".to_string()));
    }
}
