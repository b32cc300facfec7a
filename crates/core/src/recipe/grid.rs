//! The grid of the automatic recipe: its candidates, their training settings and how a user
//! reads them, and the grid for a set of items (see [`super`]'s notes).

use super::*;

/// scikit-learn's inverse penalty C of the linear candidates (λ = 1 / (C·n)), ascending: the
/// strongest penalty first.
pub const INVERSE_PENALTIES: [f64; 13] = [
    1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2, 0.1, 0.3162, 1.0, 3.162, 10.0, 31.62, 100.0,
];
/// Most L-BFGS iterations of a linear candidate.
pub const LINEAR_ITERATIONS: usize = 200;
/// One point of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "head")]
pub enum Candidate {
    /// Logistic regression on the standardised embeddings, fitted by L-BFGS.
    Linear {
        /// scikit-learn's inverse penalty C; λ = 1 / (C·n) for n training rows.
        c: f64,
        /// Inverse-frequency class weights or none.
        class_weights: ClassWeighting,
        /// Trained on the items' augmented views too ([`search`]'s `views`), each view a row
        /// with its item's label.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        augmented: bool,
    },
    /// An MLP trained by the epoch loop with these settings (all epochs: no validation inside
    /// a fold to stop early on).
    Mlp {
        /// The settings.
        train: TrainConfig,
    },
}

impl Candidate {
    /// The training settings for `n` training rows (items, plus their views for an augmented
    /// candidate) and `seed`.
    pub fn config_for(&self, n: usize, seed: u64) -> TrainConfig {
        match self {
            Self::Linear {
                c, class_weights, ..
            } => TrainConfig {
                head: HeadKind::Linear,
                optimizer: OptimizerKind::Lbfgs,
                weight_decay: (1.0 / (c * n.max(1) as f64)).min(limits::L2_PENALTY.end * 0.999),
                epochs: LINEAR_ITERATIONS,
                class_weights: *class_weights,
                patience: None,
                seed,
                ..TrainConfig::default()
            },
            Self::Mlp { train } => TrainConfig {
                seed,
                ..train.clone()
            },
        }
    }

    /// As a user reads it: "linear, C = 0.01, class weights on, augmented views".
    pub fn describe(&self) -> String {
        match self {
            Self::Linear {
                c,
                class_weights,
                augmented,
            } => format!(
                "linear, C = {c}{}{}",
                match class_weights {
                    ClassWeighting::On => ", class weights on",
                    ClassWeighting::Off | ClassWeighting::Auto => "",
                },
                if *augmented { ", augmented views" } else { "" }
            ),
            Self::Mlp { train } => match train.head {
                HeadKind::Mlp { hidden, dropout } => format!(
                    "MLP {hidden} (dropout {dropout}), lr {}, weight decay {}, {} epochs",
                    train.learning_rate, train.weight_decay, train.epochs
                ),
                HeadKind::Linear => format!("linear, lr {}", train.learning_rate),
            },
        }
    }
}

/// The grid for `items` (see the module's notes); with `views`, every linear candidate also
/// trained on the augmented views.
pub fn candidates(items: &LabelledEmbeddings, num_classes: usize, views: bool) -> Vec<Candidate> {
    let weights = class_weights_for(&items.labels, num_classes, ClassWeighting::Auto);
    let imbalanced = weights.iter().any(|&w| w != 1.0);
    let mut grid = Vec::new();
    let weightings: &[ClassWeighting] = if imbalanced {
        &[ClassWeighting::Off, ClassWeighting::On]
    } else {
        &[ClassWeighting::Off]
    };
    for augmented in [false, true].into_iter().take(1 + usize::from(views)) {
        for &class_weights in weightings {
            for &c in &INVERSE_PENALTIES {
                grid.push(Candidate::Linear {
                    c,
                    class_weights,
                    augmented,
                });
            }
        }
    }
    grid.push(Candidate::Mlp {
        train: TrainConfig::default(),
    });
    grid
}
