//! The classifier head trained on top of the frozen backbone's embeddings: `linear` (softmax or
//! logistic regression) or `mlp` (embedding → hidden → ReLU → dropout → classes, the source
//! recipe's `Dense(1024, relu)` head). For two classes the output is either one sigmoid logit
//! (binary cross-entropy, the source recipe) or two softmax logits.
//!
//! Weights are initialised from [`SeededRng`] on the host, not from the backend's generator, so
//! the same seed gives the same head on every backend.

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::readback::{ComputeError, read_f32};
use crate::rng::SeededRng;
use crate::train::limits;

/// The shape of the head.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HeadKind {
    /// One linear layer: softmax (or logistic) regression on the embedding.
    Linear,
    /// embedding → `hidden` units → ReLU → dropout (`dropout` = probability of dropping a unit
    /// during training) → output layer.
    Mlp {
        /// Hidden units (the source recipe uses 1024).
        hidden: usize,
        /// Dropout probability on the hidden units, in `[0, 1)`.
        dropout: f32,
    },
}

/// How the head's logits become class probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// One logit per class, softmax.
    Softmax,
    /// Two classes only: one logit, the sigmoid gives the probability of the second class.
    Sigmoid,
}

/// Everything that fixes the head's tensors' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Linear or MLP.
    pub kind: HeadKind,
    /// Softmax or a single sigmoid.
    pub output: OutputKind,
    /// Length of the input embedding.
    pub input_dim: usize,
    /// Number of classes (at least 2; exactly 2 with [`OutputKind::Sigmoid`]).
    pub num_classes: usize,
}

/// Why a head configuration or a set of weights was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeadError {
    /// Inconsistent configuration.
    #[error("invalid head configuration: {0}")]
    Config(String),
    /// Weights that do not fit the configuration.
    #[error("the head's weights do not fit its configuration: {0}")]
    Weights(String),
}

impl HeadConfig {
    /// Checks the configuration (class count, output kind, sizes, dropout range).
    pub fn validate(&self) -> Result<(), HeadError> {
        if self.num_classes < 2 {
            return Err(HeadError::Config(format!(
                "at least two classes are needed, got {}",
                self.num_classes
            )));
        }
        if self.output == OutputKind::Sigmoid && self.num_classes != 2 {
            return Err(HeadError::Config(format!(
                "a sigmoid output needs exactly two classes, got {}",
                self.num_classes
            )));
        }
        if self.input_dim == 0 {
            return Err(HeadError::Config("the input has no features".into()));
        }
        if let HeadKind::Mlp { hidden, dropout } = self.kind {
            if !limits::HIDDEN_UNITS.contains(&hidden) {
                return Err(HeadError::Config(format!(
                    "hidden units must be {}, got {hidden}",
                    limits::inclusive(&limits::HIDDEN_UNITS)
                )));
            }
            if !limits::DROPOUT.contains(&dropout) {
                return Err(HeadError::Config(format!(
                    "dropout must be {}, got {dropout}",
                    limits::half_open(&limits::DROPOUT)
                )));
            }
        }
        Ok(())
    }

    /// Number of logits the head outputs (1 for a sigmoid, else the class count).
    pub fn output_dim(&self) -> usize {
        match self.output {
            OutputKind::Softmax => self.num_classes,
            OutputKind::Sigmoid => 1,
        }
    }

    /// The names and shapes of the head's tensors, in a fixed order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        let mut input = self.input_dim;
        if let HeadKind::Mlp { hidden, .. } = self.kind {
            shapes.push(("hidden.weight".to_string(), vec![input, hidden]));
            shapes.push(("hidden.bias".to_string(), vec![hidden]));
            input = hidden;
        }
        shapes.push(("output.weight".to_string(), vec![input, self.output_dim()]));
        shapes.push(("output.bias".to_string(), vec![self.output_dim()]));
        shapes
    }
}

/// One fully connected layer: `x · weight + bias`, weight `[in, out]`.
#[derive(Module, Debug)]
pub struct Dense {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl Dense {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.val()) + self.bias.val().unsqueeze::<2>()
    }
}

/// The head as a Burn module (its configuration lives beside it, in [`HeadConfig`]).
#[derive(Module, Debug)]
pub struct Head {
    /// The hidden layer of an MLP head; `None` for a linear head.
    pub hidden: Option<Dense>,
    /// The output layer.
    pub output: Dense,
}

/// The head's tensors on the host, in [`HeadConfig::tensor_shapes`] order: what the model file
/// stores.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadWeights {
    /// `(name, shape, values)` per tensor.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl HeadWeights {
    /// Fresh weights for `config`: uniform in `±1/√fan_in` (PyTorch's default for linear
    /// layers), drawn from `seed`.
    pub fn initial(config: &HeadConfig, seed: u64) -> Result<Self, HeadError> {
        config.validate()?;
        let mut rng = SeededRng::derive(seed, 0x4EAD);
        let tensors = config
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let fan_in = shape[0] as f32;
                let bound = if shape.len() == 2 {
                    1.0 / fan_in.sqrt()
                } else {
                    0.0
                };
                let len: usize = shape.iter().product();
                let values = (0..len).map(|_| rng.uniform(-bound, bound)).collect();
                (name, shape, values)
            })
            .collect();
        Ok(Self { tensors })
    }

    /// Checks that the weights have the names, shapes and lengths `config` needs and only
    /// finite values.
    pub fn check(&self, config: &HeadConfig) -> Result<(), HeadError> {
        config.validate()?;
        let expected = config.tensor_shapes();
        if expected.len() != self.tensors.len() {
            return Err(HeadError::Weights(format!(
                "expected {} tensors, found {}",
                expected.len(),
                self.tensors.len()
            )));
        }
        for ((name, shape), (got_name, got_shape, values)) in expected.iter().zip(&self.tensors) {
            if name != got_name || shape != got_shape {
                return Err(HeadError::Weights(format!(
                    "expected {name} {shape:?}, found {got_name} {got_shape:?}"
                )));
            }
            if values.len() != shape.iter().product::<usize>() {
                return Err(HeadError::Weights(format!(
                    "{name} has {} values for shape {shape:?}",
                    values.len()
                )));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(HeadError::Weights(format!("{name} has non-finite values")));
            }
        }
        Ok(())
    }
}

fn dense_from_host(
    weight: &(String, Vec<usize>, Vec<f32>),
    bias: &(String, Vec<usize>, Vec<f32>),
    device: &Device,
) -> Dense {
    let w = Tensor::<2>::from_data(TensorData::new(weight.2.clone(), weight.1.clone()), device);
    let b = Tensor::<1>::from_data(TensorData::new(bias.2.clone(), bias.1.clone()), device);
    Dense {
        weight: Param::from_tensor(w),
        bias: Param::from_tensor(b),
    }
}

impl Head {
    /// Builds the module from host weights on `device` (an autodiff device to train it, a plain
    /// one to predict).
    pub fn from_weights(
        config: &HeadConfig,
        weights: &HeadWeights,
        device: &Device,
    ) -> Result<Self, HeadError> {
        weights.check(config)?;
        let t = &weights.tensors;
        Ok(match config.kind {
            HeadKind::Linear => Head {
                hidden: None,
                output: dense_from_host(&t[0], &t[1], device),
            },
            HeadKind::Mlp { .. } => Head {
                hidden: Some(dense_from_host(&t[0], &t[1], device)),
                output: dense_from_host(&t[2], &t[3], device),
            },
        })
    }

    /// Logits `[batch, output_dim]` for embeddings `[batch, input_dim]`. `dropout_mask`, when
    /// given (training), multiplies the hidden activations; it is ignored by a linear head.
    pub fn forward(&self, x: Tensor<2>, dropout_mask: Option<Tensor<2>>) -> Tensor<2> {
        let x = match &self.hidden {
            Some(hidden) => {
                let h = relu(hidden.forward(x));
                match dropout_mask {
                    Some(mask) => h * mask,
                    None => h,
                }
            }
            None => x,
        };
        self.output.forward(x)
    }

    /// Reads the weights back to the host (asynchronously, so it works on WebGPU).
    pub async fn to_weights(&self, config: &HeadConfig) -> Result<HeadWeights, ComputeError> {
        let mut layers: Vec<&Dense> = Vec::new();
        if let Some(hidden) = &self.hidden {
            layers.push(hidden);
        }
        layers.push(&self.output);
        let mut values = Vec::new();
        for layer in layers {
            values.push(read_f32(layer.weight.val()).await?);
            values.push(read_f32(layer.bias.val()).await?);
        }
        let shapes = config.tensor_shapes();
        if shapes.len() != values.len() {
            return Err(ComputeError::Execution(
                "the head's layers do not match its configuration".into(),
            ));
        }
        Ok(HeadWeights {
            tensors: shapes
                .into_iter()
                .zip(values)
                .map(|((name, shape), v)| (name, shape, v))
                .collect(),
        })
    }
}

/// Class probabilities `[batch, num_classes]` from logits: softmax, or `[1 − p, p]` for a
/// sigmoid head.
pub fn probabilities(logits: Tensor<2>, output: OutputKind) -> Tensor<2> {
    match output {
        OutputKind::Softmax => softmax(logits, 1),
        OutputKind::Sigmoid => {
            let p = sigmoid(logits);
            Tensor::cat(vec![p.clone().neg() + 1.0, p], 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: HeadKind, output: OutputKind, classes: usize) -> HeadConfig {
        HeadConfig {
            kind,
            output,
            input_dim: 4,
            num_classes: classes,
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(
            config(HeadKind::Linear, OutputKind::Sigmoid, 3)
                .validate()
                .is_err()
        );
        assert!(
            config(HeadKind::Linear, OutputKind::Softmax, 1)
                .validate()
                .is_err()
        );
        let bad_dropout = HeadKind::Mlp {
            hidden: 8,
            dropout: 1.0,
        };
        assert!(
            config(bad_dropout, OutputKind::Softmax, 3)
                .validate()
                .is_err()
        );
        assert!(
            config(HeadKind::Linear, OutputKind::Sigmoid, 2)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn initial_weights_are_seeded_and_shaped() {
        let c = config(
            HeadKind::Mlp {
                hidden: 5,
                dropout: 0.5,
            },
            OutputKind::Softmax,
            3,
        );
        let a = HeadWeights::initial(&c, 1).expect("valid");
        assert_eq!(a, HeadWeights::initial(&c, 1).expect("valid"));
        assert_ne!(a, HeadWeights::initial(&c, 2).expect("valid"));
        a.check(&c).expect("fits");
        let shapes: Vec<_> = a.tensors.iter().map(|t| t.1.clone()).collect();
        assert_eq!(shapes, vec![vec![4, 5], vec![5], vec![5, 3], vec![3]]);
        assert!(a.tensors[0].2.iter().all(|v| v.abs() <= 0.5));
        // Weights for another configuration are refused.
        let linear = config(HeadKind::Linear, OutputKind::Softmax, 3);
        assert!(a.check(&linear).is_err());
        let mut nan = a.clone();
        nan.tensors[1].2[0] = f32::NAN;
        assert!(nan.check(&c).is_err());
    }

    #[test]
    fn forward_computes_x_w_plus_b_and_round_trips() {
        let c = config(HeadKind::Linear, OutputKind::Sigmoid, 2);
        let weights = HeadWeights {
            tensors: vec![
                (
                    "output.weight".into(),
                    vec![4, 1],
                    vec![1.0, -1.0, 0.5, 0.0],
                ),
                ("output.bias".into(), vec![1], vec![0.25]),
            ],
        };
        let device = Device::flex();
        let head = Head::from_weights(&c, &weights, &device).expect("fits");
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 4.0, 9.0, 0.0, 0.0, 0.0, 0.0], [2, 4]),
            &device,
        );
        let logits = pollster::block_on(read_f32(head.forward(x.clone(), None))).expect("reads");
        assert_eq!(logits, vec![1.0 - 2.0 + 2.0 + 0.25, 0.25]);
        let p = pollster::block_on(read_f32(probabilities(head.forward(x, None), c.output)))
            .expect("reads");
        let s = 1.0 / (1.0 + (-1.25f32).exp());
        assert!((p[0] - (1.0 - s)).abs() < 1e-6 && (p[1] - s).abs() < 1e-6);
        let back = pollster::block_on(head.to_weights(&c)).expect("reads");
        assert_eq!(back, weights);
    }
}
