//! The trained model as one self-describing file, written by the CLI and exported/imported by
//! the browser app.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! b"MEDTRANSFER-MODEL\n"           magic (18 bytes)
//! u32                              format version (FORMAT_VERSION)
//! u64                              header length H
//! H bytes                          header: UTF-8 JSON (ModelHeader)
//! f32 × (sum of tensor lengths)    tensors, in the header's order
//! 32 bytes                         SHA-256 of everything before
//! ```
//!
//! Version 3 adds a fine-tuned model: the header's `fine_tuning` settings and, after the head
//! and its standardisation, the tuned last blocks and head convolution (`tail.blocks.14.…`,
//! `tail.head.bias`, see [`crate::efficientnet::tail`]). A head-only model is still written as
//! version 2, so builds from before fine-tuning read it.
//!
//! Version 4 adds the out-of-distribution reference: the header's `ood` calibration and, last,
//! the `ood.reference` tensor `[references, 1280]` (unit-length frozen embeddings of training
//! images, see [`crate::ood`]). A file is written with the lowest version that holds what it
//! has; every version up to 4 is read (a file without the reference gives no OOD warning).
//!
//! The JSON header names the backbone and preprocessing the head expects, the class names, the
//! head's configuration and tensor shapes, the training settings and seed, the validation
//! metrics and the history, so the file explains itself to a person and to a program.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::efficientnet::tail::{TailWeights, check_blocks, tail_tensor_shapes};
use crate::embeddings::{BACKBONE_ID, PREPROCESSING_ID};
use crate::finetune::{FineTuneConfig, FineTuned};
use crate::head::{HeadConfig, HeadWeights};
use crate::metrics::Evaluation;
use crate::ood::{OodCalibration, OodReference};
use crate::recipe::Search;
use crate::threshold::Threshold;
use crate::train::{
    EpochSummary, FeatureNormalization, LossKind, StopReason, TrainConfig, TrainedHead,
};

/// The first bytes of every model file.
pub const MAGIC: &[u8; 18] = b"MEDTRANSFER-MODEL\n";
/// The newest format version this build writes (for a model with an OOD reference) and reads.
pub const FORMAT_VERSION: u32 = 4;
/// The version of a fine-tuned model without an OOD reference.
const FINE_TUNED_VERSION: u32 = 3;
/// The version of a head-only model file (unchanged since before fine-tuning).
const HEAD_ONLY_VERSION: u32 = 2;
/// Usual file extension.
pub const MODEL_FILE_EXTENSION: &str = "mtmodel";
/// Largest header accepted (a header is a few hundred kilobytes at most).
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// Not a model file at all.
    #[error("this is not a MedTransfer model file")]
    NotAModelFile,
    /// Written by a newer MedTransfer.
    #[error(
        "this model file has format version {0}; this MedTransfer reads up to version {FORMAT_VERSION} (update MedTransfer)"
    )]
    NewerVersion(u32),
    /// Cut short or altered.
    #[error("the model file is damaged: {0}")]
    Damaged(String),
    /// Trained on another backbone or preprocessing.
    #[error("the model was trained on {found}, but this MedTransfer provides {expected}")]
    Incompatible {
        /// What the file needs.
        found: String,
        /// What this build has.
        expected: String,
    },
}

/// One tensor's place in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Name (`hidden.weight`, `normalization.mean`, ...).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// The JSON header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// Always `"medtransfer-model"`.
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The program that wrote it, e.g. `medtransfer 0.1.0`.
    pub created_by: String,
    /// [`BACKBONE_ID`] of the embeddings the head was trained on.
    pub backbone: String,
    /// [`PREPROCESSING_ID`] of those embeddings.
    pub preprocessing: String,
    /// Class names in output order.
    pub classes: Vec<String>,
    /// The head's shape.
    pub head: HeadConfig,
    /// The loss it was trained with.
    pub loss: LossKind,
    /// The loss weight of each class.
    pub class_weights: Vec<f32>,
    /// The training settings (seed included).
    pub training: TrainConfig,
    /// The epoch whose weights are stored.
    pub kept_epoch: usize,
    /// Why training ended.
    pub stop_reason: StopReason,
    /// Per-epoch history.
    pub history: Vec<EpochSummary>,
    /// Metrics on the validation data, when there was any.
    pub validation: Option<Evaluation>,
    /// Two classes: the decision threshold every prediction uses (version 2; absent: argmax).
    #[serde(default)]
    pub threshold: Option<Threshold>,
    /// The automatic recipe's search that chose the head: every candidate's cross-validated
    /// score and the winner's out-of-fold metrics (version 2; absent for a hand-set recipe).
    /// Its per-item out-of-fold probabilities are not stored.
    #[serde(default)]
    pub search: Option<Search>,
    /// The fine-tuning of the backbone's last blocks (version 3; absent: the backbone is the
    /// pretrained one and the head reads its embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuning: Option<FineTuneConfig>,
    /// The out-of-distribution reference's calibration (version 4; absent: no OOD warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodCalibration>,
    /// The tensors that follow the header, in order.
    pub tensors: Vec<TensorEntry>,
}

/// A model read from or to be written to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The header.
    pub header: ModelHeader,
    /// The head's weights.
    pub weights: HeadWeights,
    /// The feature standardisation.
    pub normalization: FeatureNormalization,
    /// The fine-tuned last blocks and head convolution, when [`ModelHeader::fine_tuning`] is set.
    pub tail: Option<TailWeights>,
    /// The out-of-distribution reference, when [`ModelHeader::ood`] is set.
    pub ood: Option<OodReference>,
}

/// Prefix of the tail's tensor names in the file.
const TAIL_PREFIX: &str = "tail.";
/// The OOD reference's tensor.
const OOD_REFERENCE: &str = "ood.reference";

const MEAN: &str = "normalization.mean";
const STD: &str = "normalization.std";

impl ModelFile {
    /// The model file of a finished training run.
    pub fn from_trained(trained: &TrainedHead, created_by: &str) -> Self {
        let mut tensors: Vec<TensorEntry> = trained
            .weights
            .tensors
            .iter()
            .map(|(name, shape, _)| TensorEntry {
                name: name.clone(),
                shape: shape.clone(),
            })
            .collect();
        let dim = trained.normalization.mean.len();
        tensors.push(TensorEntry {
            name: MEAN.into(),
            shape: vec![dim],
        });
        tensors.push(TensorEntry {
            name: STD.into(),
            shape: vec![dim],
        });
        Self {
            header: ModelHeader {
                format: "medtransfer-model".into(),
                format_version: HEAD_ONLY_VERSION,
                created_by: created_by.into(),
                backbone: BACKBONE_ID.into(),
                preprocessing: PREPROCESSING_ID.into(),
                classes: trained.classes.clone(),
                head: trained.config,
                loss: trained.loss,
                class_weights: trained.class_weights.clone(),
                training: trained.train_config.clone(),
                kept_epoch: trained.kept_epoch,
                stop_reason: trained.stop_reason,
                history: trained.history.clone(),
                validation: trained.validation.clone(),
                threshold: trained.threshold,
                search: None,
                fine_tuning: None,
                ood: None,
                tensors,
            },
            weights: trained.weights.clone(),
            normalization: trained.normalization.clone(),
            tail: None,
            ood: None,
        }
    }

    /// The model file of a fine-tuned model (version [`FORMAT_VERSION`]): its head as
    /// [`Self::from_trained`] writes it, the fine-tuning settings and the tuned tail.
    pub fn from_fine_tuned(tuned: &FineTuned, created_by: &str) -> Self {
        let mut file = Self::from_trained(&tuned.head, created_by);
        file.header.format_version = FINE_TUNED_VERSION;
        file.header.fine_tuning = Some(tuned.config.clone());
        file.header.tensors.extend(
            tuned
                .tail
                .tensors
                .iter()
                .map(|(name, shape, _)| TensorEntry {
                    name: format!("{TAIL_PREFIX}{name}"),
                    shape: shape.clone(),
                }),
        );
        file.tail = Some(tuned.tail.clone());
        file
    }

    /// The same file recording the automatic recipe's `search` (without its per-item
    /// out-of-fold probabilities).
    pub fn with_search(mut self, search: &Search) -> Self {
        self.header.search = Some(search.without_probabilities());
        self
    }

    /// The same file with the out-of-distribution `reference` (version [`FORMAT_VERSION`]),
    /// replacing any it had.
    pub fn with_ood(mut self, reference: OodReference) -> Self {
        self.header.tensors.retain(|t| t.name != OOD_REFERENCE);
        self.header.tensors.push(TensorEntry {
            name: OOD_REFERENCE.into(),
            shape: vec![reference.calibration.references, reference.dim],
        });
        self.header.ood = Some(reference.calibration.clone());
        self.ood = Some(reference);
        self.header.format_version = self.version();
        self
    }

    /// The lowest format version that holds what the file has.
    fn version(&self) -> u32 {
        if self.ood.is_some() {
            FORMAT_VERSION
        } else if self.tail.is_some() {
            FINE_TUNED_VERSION
        } else {
            HEAD_ONLY_VERSION
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data structs to JSON cannot fail; fall back to an empty header
        // would make an unreadable file, so the header is built from known-good types only.
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version().to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, _, values) in &self.weights.tensors {
            out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        for values in [&self.normalization.mean, &self.normalization.std] {
            out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        for (_, _, values) in self.tail.iter().flat_map(|t| &t.tensors) {
            out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        if let Some(reference) = &self.ood {
            out.extend(reference.embeddings.iter().flat_map(|v| v.to_le_bytes()));
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Reads and checks a model file: magic, version, checksum, header, backbone and
    /// preprocessing, tensor names, shapes and values. Never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelFileError> {
        let damaged = |m: &str| ModelFileError::Damaged(m.to_string());
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelFileError::NotAModelFile);
        }
        let rest = &bytes[MAGIC.len()..];
        let version = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| damaged("it ends before its version"))?;
        if version > FORMAT_VERSION {
            return Err(ModelFileError::NewerVersion(version));
        }
        if version == 0 {
            return Err(damaged("format version 0 does not exist"));
        }
        if bytes.len() < MAGIC.len() + 12 + 32 {
            return Err(damaged("it is too short"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(damaged(
                "its checksum does not match (the file was cut short or altered)",
            ));
        }
        let header_len = rest
            .get(4..12)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| damaged("it ends before its header"))?;
        let header_start = MAGIC.len() + 12;
        if header_len > MAX_HEADER_BYTES || header_len > (body.len() - header_start) as u64 {
            return Err(damaged("its header length is impossible"));
        }
        let header_end = header_start + header_len as usize;
        let header: ModelHeader = serde_json::from_slice(&body[header_start..header_end])
            .map_err(|e| ModelFileError::Damaged(format!("its header is not valid: {e}")))?;
        if header.format != "medtransfer-model" {
            return Err(ModelFileError::NotAModelFile);
        }
        if header.backbone != BACKBONE_ID {
            return Err(ModelFileError::Incompatible {
                found: header.backbone,
                expected: BACKBONE_ID.into(),
            });
        }
        if header.preprocessing != PREPROCESSING_ID {
            return Err(ModelFileError::Incompatible {
                found: format!("preprocessing {}", header.preprocessing),
                expected: format!("preprocessing {PREPROCESSING_ID}"),
            });
        }
        if header.classes.len() != header.head.num_classes {
            return Err(damaged("its class names do not match its head"));
        }
        if let Some(t) = &header.threshold
            && (header.head.num_classes != 2 || !(0.0..=1.0).contains(&t.value))
        {
            return Err(damaged(
                "its decision threshold is not a probability of a two-class model",
            ));
        }
        let tail_blocks = match &header.fine_tuning {
            Some(_) if version < FINE_TUNED_VERSION => {
                return Err(damaged(
                    "its header describes a fine-tuned model, which needs format version 3",
                ));
            }
            Some(tuning) => {
                check_blocks(tuning.blocks).map_err(|e| ModelFileError::Damaged(e.to_string()))?;
                Some(tuning.blocks)
            }
            None => None,
        };
        if header.ood.is_some() && version < FORMAT_VERSION {
            return Err(damaged(
                "its header has an out-of-distribution reference, which needs format version 4",
            ));
        }
        let ood_shape = header.ood.as_ref().map(|c| {
            (
                OOD_REFERENCE.to_string(),
                vec![c.references, header.head.input_dim],
            )
        });
        let tail_shapes = tail_blocks.map(tail_tensor_shapes).unwrap_or_default();
        let expected: Vec<(String, Vec<usize>)> = header
            .head
            .tensor_shapes()
            .into_iter()
            .chain([
                (MEAN.to_string(), vec![header.head.input_dim]),
                (STD.to_string(), vec![header.head.input_dim]),
            ])
            .chain(
                tail_shapes
                    .iter()
                    .map(|(name, shape)| (format!("{TAIL_PREFIX}{name}"), shape.clone())),
            )
            .chain(ood_shape.clone())
            .collect();
        let listed: Vec<(String, Vec<usize>)> = header
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        if listed != expected {
            return Err(damaged("its tensors do not match its head configuration"));
        }
        let mut payload = &body[header_end..];
        let mut tensors = Vec::new();
        for (name, shape) in expected {
            let len = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            let bytes_len = len
                .and_then(|l| l.checked_mul(4))
                .filter(|&b| b <= payload.len())
                .ok_or_else(|| ModelFileError::Damaged(format!("tensor {name} is cut short")))?;
            let (this, next) = payload.split_at(bytes_len);
            payload = next;
            let values: Vec<f32> = this
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push((name, shape, values));
        }
        if !payload.is_empty() {
            return Err(damaged("it has unexpected bytes after its tensors"));
        }
        let ood = match (header.ood.clone(), ood_shape) {
            (Some(calibration), Some(_)) => {
                let values = tensors.pop().map(|t| t.2).unwrap_or_default();
                Some(
                    OodReference::from_parts(calibration, header.head.input_dim, values)
                        .map_err(|e| ModelFileError::Damaged(e.to_string()))?,
                )
            }
            _ => None,
        };
        let tail_tensors = tensors.split_off(tensors.len() - tail_shapes.len());
        let tail = match tail_blocks {
            Some(blocks) => {
                let tail = TailWeights {
                    blocks,
                    tensors: tail_shapes
                        .into_iter()
                        .zip(tail_tensors)
                        .map(|((name, shape), (_, _, values))| (name, shape, values))
                        .collect(),
                };
                tail.check()
                    .map_err(|e| ModelFileError::Damaged(e.to_string()))?;
                Some(tail)
            }
            None => None,
        };
        let std = tensors.pop().map(|t| t.2).unwrap_or_default();
        let mean = tensors.pop().map(|t| t.2).unwrap_or_default();
        let normalization = FeatureNormalization { mean, std };
        if !normalization.is_valid_for(header.head.input_dim) {
            return Err(damaged("its feature normalisation is invalid"));
        }
        let weights = HeadWeights { tensors };
        weights
            .check(&header.head)
            .map_err(|e| ModelFileError::Damaged(e.to_string()))?;
        Ok(Self {
            header,
            weights,
            normalization,
            tail,
            ood,
        })
    }
}

#[cfg(test)]
mod tests;
