//! A model file ready to predict: a head on the frozen backbone's embeddings, or a fine-tuned
//! model whose tuned last blocks run on the frozen part's cut-point activations. `eval` and
//! `predict` use it alike.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use medtransfer_core::ComputeDevice;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::efficientnet::EMBEDDING_DIM;
use medtransfer_core::embeddings::View;
use medtransfer_core::finetune::TunedClassifier;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::train::Classifier;

use crate::backbone::Backbone;

/// What computes a model file's class probabilities.
pub(crate) enum Predictor {
    /// The head on the embeddings.
    Head(Box<Classifier>),
    /// The tuned tail and head on the cut-point activations of this many blocks.
    Tuned(Box<TunedClassifier>, usize),
}

impl Predictor {
    /// Reads and checks a model file and builds its predictor on `device`.
    pub(crate) fn open(path: &Path, device: &ComputeDevice) -> Result<(ModelFile, Self), String> {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let model = ModelFile::from_bytes(&bytes).map_err(|e| at(&e))?;
        if model.header.head.input_dim != EMBEDDING_DIM {
            return Err(format!(
                "{}: the head expects {} features, the backbone gives {EMBEDDING_DIM}",
                path.display(),
                model.header.head.input_dim
            ));
        }
        let predictor = match &model.tail {
            Some(tail) => Self::Tuned(
                Box::new(
                    TunedClassifier::new(
                        tail,
                        &model.header.head,
                        &model.weights,
                        &model.normalization,
                        &device.device,
                    )
                    .map_err(|e| at(&e))?,
                ),
                tail.blocks,
            ),
            None => Self::Head(Box::new(
                Classifier::new(
                    &model.header.head,
                    &model.weights,
                    &model.normalization,
                    &device.device,
                )
                .map_err(|e| at(&e))?,
            )),
        };
        Ok((model, predictor))
    }

    /// Class probabilities of each of `items`, in order (a file that cannot be read or
    /// decoded gets its error; a failed device pass is every image's error), advancing `bar`.
    pub(crate) fn predict(
        &self,
        backbone: &mut Backbone,
        items: &[(PathBuf, View)],
        bar: &ProgressBar,
    ) -> Vec<Result<Vec<f32>, String>> {
        match self {
            Self::Head(classifier) => {
                let inputs = backbone.embed(items, &AugmentConfig::default(), bar);
                let ok: Vec<Vec<f32>> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
                let probabilities = pollster::block_on(classifier.predict(&ok));
                distribute(inputs, probabilities.map_err(|e| e.to_string()))
            }
            Self::Tuned(classifier, blocks) => {
                let inputs = backbone.cut_features(items, *blocks, bar);
                let ok: Vec<_> = inputs.iter().filter_map(|r| r.clone().ok()).collect();
                let probabilities = pollster::block_on(classifier.predict(&ok));
                distribute(inputs, probabilities.map_err(|e| e.to_string()))
            }
        }
    }

    /// What the images go through first, for progress bars.
    pub(crate) fn stage(&self) -> &'static str {
        match self {
            Self::Head(_) => "embedding",
            Self::Tuned(..) => "activations",
        }
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
