//! Fine-tuning the backbone's last blocks together with the head ("linear probe, then
//! fine-tune": Kumar et al., *Fine-Tuning can Distort Pretrained Features and Underperform
//! Out-of-Distribution*, ICLR 2022): the head is first fitted on the frozen embeddings by the
//! usual recipe, then the last `N` MBConv blocks, the 1×1 head convolution and the head train
//! together with Burn's autodiff, the pretrained blocks at a lower learning rate than the head.
//!
//! The frozen part of the network runs once per image ([`features::cut_features`], cached by
//! the shells as f16 beside the embeddings), so an epoch costs only the tail's forward and
//! backward pass. BatchNorm is folded into every convolution, so there are no batch statistics
//! to keep or freeze.
//!
//! - [`FineTuneConfig`]: the settings; [`fine_tune`]: the epoch loop from a trained head;
//! - [`fine_tune_run`]: a whole run (hold out validation, fit the head by the run's recipe on
//!   the rest, fine-tune with early stopping on the validation items, choose the threshold);
//! - [`TunedClassifier`]: a tuned tail and head put on a device to predict.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::efficientnet::tail::{Tail, TailWeights, check_blocks};
use crate::head::{Head, HeadConfig, HeadWeights, OutputKind, probabilities};
use crate::metrics::{EvaluationOptions, evaluate};
use crate::readback::{ComputeError, read_f32};
use crate::run::{Run, RunConfig, Validation, pick, run};
use crate::split::stratified_split;
use crate::threshold::{ThresholdRule, choose_on_roc};
use crate::train::{
    CancelToken, FeatureNormalization, LabelledEmbeddings, Progress, TrainError, TrainedHead,
};

mod epochs;
pub mod features;
#[cfg(test)]
mod tests;

pub use features::{
    CutFeatureStore, CutFeatures, EmbeddingWithActivations, STORED_BLOCKS, advance, cut_cache_key,
    cut_features, cut_features_cached, embed_with_activations,
};

/// The regularisation of a fine-tuning run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunePenalty {
    /// AdamW's decoupled weight decay towards zero on both groups
    /// ([`FineTuneConfig::weight_decay`]).
    #[default]
    Decay,
    /// The head keeps the L2 penalty λ its recipe chose (a linear head fitted by L-BFGS:
    /// λ/2 ‖W‖² added to the loss, as in its own fit), and the blocks are held towards their
    /// pretrained weights by the same λ (λ/2 ‖θ − θ₀‖², "L2-SP": Li, Grandvalet and Davoine,
    /// *Explicit Inductive Bias for Transfer Learning with Convolutional Networks*, ICML 2018);
    /// no decoupled decay. With another head, the same as `Decay`.
    Recipe,
}

/// Settings of a fine-tuning run (after the head's own fit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FineTuneConfig {
    /// The last blocks trained, 1..=[`crate::efficientnet::MAX_TRAIN_BLOCKS`] (0 is head-only
    /// training and never reaches this module).
    pub blocks: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// AdamW's learning rate for the head (cosine decay to 0 over the planned steps).
    pub head_learning_rate: f64,
    /// AdamW's learning rate for the pretrained blocks and head convolution (same decay).
    pub backbone_learning_rate: f64,
    /// AdamW's decoupled weight decay (towards zero), both groups, with [`TunePenalty::Decay`].
    pub weight_decay: f64,
    /// How the weights are held back from fitting the training images too closely.
    #[serde(default)]
    pub penalty: TunePenalty,
    /// Stop after this many epochs without a lower validation loss.
    pub patience: Option<usize>,
}

impl Default for FineTuneConfig {
    /// 2 blocks, 10 epochs of 32 images, head 1e-4, blocks 1e-5, weight decay 1e-4,
    /// patience 3 (chosen on the chest X-ray training split's validation side: `docs/RESULTS.md`).
    fn default() -> Self {
        Self {
            blocks: 2,
            epochs: 10,
            batch_size: 32,
            head_learning_rate: 1e-4,
            backbone_learning_rate: 1e-5,
            weight_decay: 1e-4,
            penalty: TunePenalty::Decay,
            patience: Some(3),
        }
    }
}

impl FineTuneConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), TrainError> {
        check_blocks(self.blocks).map_err(|e| TrainError::Config(e.to_string()))?;
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 1.0;
        if !(1..=1000).contains(&self.epochs) {
            return Err(TrainError::Config(format!(
                "fine-tuning epochs must be 1 to 1000, got {}",
                self.epochs
            )));
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(TrainError::Config(format!(
                "the fine-tuning batch size must be 1 to 4096, got {}",
                self.batch_size
            )));
        }
        if !rate_ok(self.head_learning_rate) || !rate_ok(self.backbone_learning_rate) {
            return Err(TrainError::Config(format!(
                "fine-tuning learning rates must be in (0, 1], got {} and {}",
                self.head_learning_rate, self.backbone_learning_rate
            )));
        }
        if !(self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay)) {
            return Err(TrainError::Config(format!(
                "the fine-tuning weight decay must be in [0, 1], got {}",
                self.weight_decay
            )));
        }
        if self.patience == Some(0) {
            return Err(TrainError::Config(
                "a patience of 0 epochs stops at once".into(),
            ));
        }
        Ok(())
    }
}

/// Cut-point activations with their class labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CutDataset {
    /// One entry per item, of the run's block count.
    pub features: Vec<CutFeatures>,
    /// The class index of each item.
    pub labels: Vec<usize>,
}

impl CutDataset {
    /// The items at `indices` (each within the set).
    pub fn pick(&self, indices: &[usize]) -> Self {
        Self {
            features: indices.iter().map(|&i| self.features[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// A fine-tuned model: the tail and the head trained with it.
#[derive(Clone, Debug, PartialEq)]
pub struct FineTuned {
    /// The tuned last blocks and head convolution.
    pub tail: TailWeights,
    /// The tuned head with its normalisation (that of the frozen embeddings it started from),
    /// the fine-tuning's history, kept epoch, stop reason, validation figures and threshold.
    pub head: TrainedHead,
    /// The settings used.
    pub config: FineTuneConfig,
}

/// A tuned tail and head on a device, ready to predict from cut-point activations.
pub struct TunedClassifier {
    tail: Tail,
    head: Head,
    config: HeadConfig,
    blocks: usize,
    normalization: (Tensor<2>, Tensor<2>),
    device: Device,
}

/// `(mean, 1 / std)` as `[1, dim]` tensors.
fn normalization_tensors(
    normalization: &FeatureNormalization,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let dim = normalization.mean.len();
    let inverse: Vec<f32> = normalization.std.iter().map(|s| 1.0 / s).collect();
    (
        Tensor::from_data(
            TensorData::new(normalization.mean.clone(), [1, dim]),
            device,
        ),
        Tensor::from_data(TensorData::new(inverse, [1, dim]), device),
    )
}

/// Logits `[N, classes]` of cut-point activations `[N, C, H, W]`.
fn forward(
    tail: &Tail,
    head: &Head,
    (mean, inverse_std): &(Tensor<2>, Tensor<2>),
    x: Tensor<4>,
) -> Tensor<2> {
    let embedding = tail.forward(x);
    head.forward((embedding - mean.clone()) * inverse_std.clone(), None)
}

/// Images per forward pass when predicting (bounded GPU buffers).
const PREDICT_PASS: usize = 64;

impl TunedClassifier {
    /// Puts `tail` and the head of `head_weights` on `device` (a plain, non-autodiff device).
    ///
    /// # Errors
    /// [`TrainError::Head`] or [`TrainError::Config`] when the weights do not fit.
    pub fn new(
        tail: &TailWeights,
        config: &HeadConfig,
        head_weights: &HeadWeights,
        normalization: &FeatureNormalization,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let device = device.clone().without_autodiff();
        if !normalization.is_valid_for(config.input_dim) {
            return Err(TrainError::Data(
                "the feature standardisation does not fit the head".into(),
            ));
        }
        Ok(Self {
            tail: Tail::from_weights(tail, &device)
                .map_err(|e| TrainError::Config(e.to_string()))?,
            head: Head::from_weights(config, head_weights, &device)?,
            config: *config,
            blocks: tail.blocks,
            normalization: normalization_tensors(normalization, &device),
            device,
        })
    }

    /// Class probabilities `[items][classes]` of cut-point activations of this tail's block
    /// count (rows summing to 1), read back asynchronously.
    ///
    /// # Errors
    /// [`ComputeError`] when the device fails or an item has the wrong number of values.
    pub async fn predict(&self, items: &[CutFeatures]) -> Result<Vec<Vec<f32>>, ComputeError> {
        predict_with(
            &self.tail,
            &self.head,
            &self.normalization,
            self.config.output,
            self.config.num_classes,
            self.blocks,
            items,
            &self.device,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
async fn predict_with(
    tail: &Tail,
    head: &Head,
    normalization: &(Tensor<2>, Tensor<2>),
    output: OutputKind,
    num_classes: usize,
    blocks: usize,
    items: &[CutFeatures],
    device: &Device,
) -> Result<Vec<Vec<f32>>, ComputeError> {
    let expected = CutFeatures::bytes_per_image(blocks) / 2;
    if let Some(bad) = items.iter().position(|f| f.values.len() != expected) {
        return Err(ComputeError::Execution(format!(
            "item {bad} has {} cut-point values, expected {expected}",
            items[bad].values.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PREDICT_PASS) {
        let rows: Vec<&CutFeatures> = chunk.iter().collect();
        let x = features::batch_tensor(&rows, blocks, device);
        let p = probabilities(forward(tail, head, normalization, x), output);
        let flat = read_f32(p).await?;
        if flat.len() != chunk.len() * num_classes {
            return Err(ComputeError::Execution(format!(
                "read back {} probabilities for {} items",
                flat.len(),
                chunk.len()
            )));
        }
        out.extend(flat.chunks(num_classes).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Fine-tunes `pretrained`'s blocks and `start`'s head together on `train` (cut-point
/// activations of `config.blocks`), keeping the epoch with the lowest validation loss when
/// `validation` has items (else the last), until done, early-stopped or `cancel`led; with two
/// classes and validation items, the threshold is chosen on the kept model's validation
/// predictions by `threshold` (without validation: argmax). The loss and class weights are
/// `start`'s; an MLP head trains without dropout. `progress` hears [`TrainEvent`]s as for a
/// head.
///
/// # Errors
/// [`TrainError::Config`] for settings out of range or a tail of another block count;
/// [`TrainError::Data`] for empty or inconsistent data or a diverged loss;
/// [`TrainError::Cancelled`] when stopped before the first epoch ended; device failures.
#[allow(clippy::too_many_arguments)]
pub async fn fine_tune(
    start: &TrainedHead,
    pretrained: &TailWeights,
    train: &CutDataset,
    validation: Option<&CutDataset>,
    config: &FineTuneConfig,
    threshold: ThresholdRule,
    seed: u64,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<FineTuned, TrainError> {
    config.validate()?;
    if pretrained.blocks != config.blocks {
        return Err(TrainError::Config(format!(
            "the tail has {} blocks but the settings fine-tune {}",
            pretrained.blocks, config.blocks
        )));
    }
    let expected = CutFeatures::bytes_per_image(config.blocks) / 2;
    for (name, set) in
        std::iter::once(("training", train)).chain(validation.map(|v| ("validation", v)))
    {
        if set.features.len() != set.labels.len() {
            return Err(TrainError::Data(format!(
                "{name}: {} items but {} labels",
                set.features.len(),
                set.labels.len()
            )));
        }
        if let Some(bad) = set.features.iter().position(|f| f.values.len() != expected) {
            return Err(TrainError::Data(format!(
                "{name} item {bad} has {} cut-point values, expected {expected}",
                set.features[bad].values.len()
            )));
        }
        if let Some(&bad) = set.labels.iter().find(|&&l| l >= start.classes.len()) {
            return Err(TrainError::Data(format!(
                "{name} has label {bad} but there are {} classes",
                start.classes.len()
            )));
        }
    }
    if train.labels.is_empty() {
        return Err(TrainError::Data("there are no training items".into()));
    }
    let validation = validation.filter(|v| !v.labels.is_empty());
    let outcome = epochs::Loop::new(start, pretrained, train, validation, config, seed, device)?
        .run(cancel, progress)
        .await?;
    let valid_device = device.clone().without_autodiff();
    let tail = outcome.tail.valid();
    let head = outcome.head.valid();
    let tail_weights = tail.to_weights(config.blocks).await?;
    let head_weights = head.to_weights(&start.config).await?;
    let mut tuned = TrainedHead {
        weights: head_weights,
        history: outcome.history,
        kept_epoch: outcome.kept_epoch,
        stop_reason: outcome.stop_reason,
        validation: None,
        threshold: None,
        ..start.clone()
    };
    if let Some(v) = validation {
        let normalization = normalization_tensors(&start.normalization, &valid_device);
        let probs = predict_with(
            &tail,
            &head,
            &normalization,
            start.config.output,
            start.classes.len(),
            config.blocks,
            &v.features,
            &valid_device,
        )
        .await?;
        let evaluation = evaluate(
            &probs,
            &v.labels,
            &start.classes,
            &EvaluationOptions {
                seed,
                ..EvaluationOptions::default()
            },
        )?;
        if start.classes.len() == 2 {
            tuned.threshold = evaluation
                .roc
                .first()
                .and_then(|curve| choose_on_roc(curve, threshold));
        }
        tuned.validation = Some(evaluation);
    }
    Ok(FineTuned {
        tail: tail_weights,
        head: tuned,
        config: config.clone(),
    })
}

/// A [`Progress`] for a run on the subset `items` of the caller's items: the indices it is
/// asked about (the subset's) are the caller's `items[i]`, and the augmented views it hands
/// back are re-indexed into the subset (views of items outside it are dropped).
struct Subset<'a, P> {
    inner: &'a mut P,
    items: &'a [usize],
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
    cut: &[CutFeatures],
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
    let all = CutDataset {
        features: cut.to_vec(),
        labels: items.labels.clone(),
    };
    let tuned = fine_tune(
        &head_run.trained,
        pretrained,
        &all.pick(&split.train),
        Some(&all.pick(&split.validation)),
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
