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
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::efficientnet::tail::{TailWeights, check_blocks};
use crate::metrics::{EvaluationOptions, evaluate};
use crate::threshold::{ThresholdRule, choose_on_roc};
use crate::train::{CancelToken, Progress, TrainError, TrainedHead};

mod classifier;
mod epochs;
pub mod features;
mod run;
#[cfg(test)]
mod tests;

pub use classifier::{ModelClassifier, TunedClassifier};
use classifier::{forward, normalization_tensors, predict_with};
pub use features::{
    CutFeatureStore, CutFeatures, EmbeddingWithActivations, STORED_BLOCKS, advance, cut_cache_key,
    cut_features, cut_features_cached, embed_with_activations,
};
pub use run::{FineTuneRun, fine_tune_run};

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
    /// 2 blocks, 10 epochs of 32 images, head 1e-4 (the source recipe's rate), blocks 1e-5 (a
    /// tenth), weight decay 1e-4, patience 3: set beforehand, not tuned; what they give on
    /// the shared data sets is in `docs/RESULTS.md` ("Fine-tuning the last blocks").
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

/// Fine-tunes `pretrained`'s blocks and `start`'s head together on `train` (cut-point
/// activations of `config.blocks`), keeping the epoch with the lowest validation loss when
/// `validation` has items (epoch 0 being `start` on the pretrained blocks, kept when no epoch
/// beats it: fine-tuning never ends worse on the validation items than the head alone; without
/// validation, the last epoch), until done, early-stopped or `cancel`led; with two
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
