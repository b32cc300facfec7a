//! A whole fine-tuning run ([`fine_tune_run`]): hold out validation, fit the head by the run's
//! recipe on the rest, fine-tune, and the [`Progress`] adapter that lets the head's run see
//! only the training side.

use burn::tensor::Device;

use super::{CutDataset, CutFeatures, FineTuneConfig, FineTuned, fine_tune};
use crate::efficientnet::tail::TailWeights;
use crate::run::{Run, RunConfig, Validation, pick, run};
use crate::split::stratified_split;
use crate::train::{CancelToken, LabelledEmbeddings, Progress, TrainError};

/// A [`Progress`] for a run on the subset `items` of the caller's items: the indices it is
/// asked about (the subset's) are the caller's `items[i]`, and the augmented views it hands
/// back are re-indexed into the subset (views of items outside it are dropped).
pub(super) struct Subset<'a, P> {
    pub(super) inner: &'a mut P,
    pub(super) items: &'a [usize],
}

impl<P: Progress> Subset<'_, P> {
    fn outer(&self, subset: &[usize]) -> Vec<usize> {
        subset
            .iter()
            .filter_map(|&i| self.items.get(i).copied())
            .collect()
    }
}

impl<P: Progress> Progress for Subset<'_, P> {
    fn event(&mut self, event: &crate::train::TrainEvent) {
        self.inner.event(event);
    }

    fn between_epochs(&mut self) -> impl std::future::Future<Output = ()> {
        self.inner.between_epochs()
    }

    fn search(&mut self, event: &crate::recipe::SearchEvent) {
        self.inner.search(event);
    }

    fn extra_training(&mut self, train: &[usize], validation: &[usize]) -> LabelledEmbeddings {
        let (train, validation) = (self.outer(train), self.outer(validation));
        self.inner.extra_training(&train, &validation)
    }

    fn augmented_views(&mut self, items: &[usize]) -> Vec<(usize, Vec<f32>)> {
        let outer = self.outer(items);
        let position: std::collections::HashMap<usize, usize> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, &o)| (o, i))
            .collect();
        self.inner
            .augmented_views(&outer)
            .into_iter()
            .filter_map(|(item, view)| position.get(&item).map(|&i| (i, view)))
            .collect()
    }
}

/// A finished fine-tuning run.
#[derive(Clone, Debug, PartialEq)]
pub struct FineTuneRun {
    /// The head's run on the training side (its search, when automatic), before fine-tuning:
    /// its `trained` is the frozen-backbone head, evaluated on the validation items.
    pub head_run: Run,
    /// The fine-tuned model.
    pub tuned: FineTuned,
}

/// A whole fine-tuning run on `items` (embeddings and labels) and their cut-point activations
/// `cut` (same order, of `tune.blocks`): holds out `config.validation_share` of each class
/// (whole groups with `groups`), fits the head on the rest by `config`'s recipe (evaluated on
/// the held-out items), then fine-tunes `pretrained` and that head with early stopping on the
/// held-out items, whose figures and (two classes) threshold the tuned model carries.
///
/// # Errors
/// [`TrainError::Config`] when the validation share is 0 (fine-tuning needs held-out items to
/// stop on) or a setting is out of range; [`TrainError::Split`] when a class has too few items
/// or groups; [`TrainError::Data`] when `cut` does not match `items`; those of
/// [`crate::run::run`] and [`fine_tune`].
#[allow(clippy::too_many_arguments)]
pub async fn fine_tune_run(
    classes: &[String],
    items: &LabelledEmbeddings,
    cut: Vec<CutFeatures>,
    groups: Option<&[String]>,
    pretrained: &TailWeights,
    config: &RunConfig,
    tune: &FineTuneConfig,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<FineTuneRun, TrainError> {
    tune.validate()?;
    if cut.len() != items.labels.len() || items.embeddings.len() != items.labels.len() {
        return Err(TrainError::Data(format!(
            "{} embeddings, {} cut-point activations and {} labels",
            items.embeddings.len(),
            cut.len(),
            items.labels.len()
        )));
    }
    if config.validation_share.is_nan() || config.validation_share <= 0.0 {
        return Err(TrainError::Config(
            "fine-tuning the blocks needs a validation share above 0 (its early stopping and \
             figures come from the held-out images)"
                .into(),
        ));
    }
    let split = stratified_split(
        &items.labels,
        groups,
        config.validation_share,
        config.train.seed,
    )
    .map_err(|error| TrainError::Split {
        error,
        classes: classes.to_vec(),
    })?;
    let train_groups: Option<Vec<String>> =
        groups.map(|g| split.train.iter().map(|&i| g[i].clone()).collect());
    let train_items = pick(items, &split.train);
    let held_out = pick(items, &split.validation);
    let mut head_run = run(
        classes,
        &train_items,
        Validation::Given {
            set: &held_out,
            groups: train_groups.as_deref(),
        },
        config,
        device,
        cancel,
        &mut Subset {
            inner: &mut *progress,
            items: &split.train,
        },
    )
    .await?;
    head_run.train_items = split.train.clone();
    head_run.validation_items = split.validation.clone();
    // Each item's activations move to its side of the split (no copy of the whole set).
    let mut cut: Vec<Option<CutFeatures>> = cut.into_iter().map(Some).collect();
    let mut side = |indices: &[usize]| CutDataset {
        features: indices.iter().filter_map(|&i| cut[i].take()).collect(),
        labels: indices.iter().map(|&i| items.labels[i]).collect(),
    };
    let (train_side, validation_side) = (side(&split.train), side(&split.validation));
    let tuned = fine_tune(
        &head_run.trained,
        pretrained,
        &train_side,
        Some(&validation_side),
        tune,
        config.threshold,
        config.train.seed,
        device,
        cancel,
        progress,
    )
    .await?;
    Ok(FineTuneRun { head_run, tuned })
}
