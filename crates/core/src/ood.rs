//! The out-of-distribution warning: is an image unlike the images the model was trained on?
//!
//! Deep nearest neighbours (Sun, Ming, Zhu and Li, "Out-of-Distribution Detection with Deep
//! Nearest Neighbors", ICML 2022): an image's *OOD distance* is the cosine distance
//! (`1 − cos`, in `0..=2`) from its L2-normalised embedding to its k-th nearest neighbour
//! ([`NEIGHBOURS`]) among reference embeddings kept from the training images. The embedding is
//! the frozen pretrained network's ([`crate::efficientnet::EMBEDDING_DIM`] values), whatever
//! head or fine-tuned tail the model has, so the warning reads the image, not the decision.
//!
//! The threshold is calibrated on the training images' own **out-of-fold** distances: each
//! training image's distance to the references other than itself and, when patient groups
//! are given, other than its patient's images (a new patient's image has no sibling among the
//! references either). The threshold is their [`QUANTILE`] quantile, so by construction about
//! 5 % of new images like the training ones are flagged, and an image farther from the
//! references than 95 % of the training images are is flagged.
//!
//! At most [`MAX_REFERENCES`] references are kept (they travel in the model file:
//! `references × 1280 × 4` bytes, 2.6 MB at most), drawn class by class in turn from a seeded
//! shuffle so that a rare class keeps its images.

use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// The neighbour whose distance is the score (the k of k-th nearest neighbour).
pub const NEIGHBOURS: usize = 5;
/// Most reference embeddings kept.
pub const MAX_REFERENCES: usize = 512;
/// The quantile of the training images' out-of-fold distances taken as the threshold.
pub const QUANTILE: f64 = 0.95;
/// Fewest training images a calibration needs (below it the model gives no warning).
pub const MIN_IMAGES: usize = 2 * NEIGHBOURS;
/// The method's name in a model file.
pub const METHOD: &str = "knn-cosine";

/// Why no OOD reference could be made, or an embedding not scored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OodError {
    /// Too few training images to calibrate on.
    #[error(
        "{0} training images are too few to tell which images are unlike them (at least {MIN_IMAGES} are needed)"
    )]
    TooFew(usize),
    /// An embedding of the wrong length.
    #[error("an embedding has {found} values, the reference has {expected}")]
    Dimension {
        /// Its length.
        found: usize,
        /// The reference's.
        expected: usize,
    },
    /// An embedding with a NaN or infinite value, or all zeros.
    #[error("an embedding is not finite or is all zeros")]
    Degenerate,
    /// The stored reference does not fit its calibration (a damaged model file).
    #[error("the out-of-distribution reference is invalid: {0}")]
    Invalid(String),
}

/// What a model file's header records of its OOD reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OodCalibration {
    /// Always [`METHOD`].
    pub method: String,
    /// The neighbour whose distance is the score.
    pub neighbours: usize,
    /// The quantile of the out-of-fold distances the threshold is.
    pub quantile: f64,
    /// The threshold: a cosine distance in `0..=2`.
    pub threshold: f32,
    /// Reference embeddings stored (rows of the `ood.reference` tensor).
    pub references: usize,
    /// Training images whose out-of-fold distances set the threshold.
    pub calibration_images: usize,
}

/// The OOD reference: L2-normalised embeddings `[references, dim]` (row-major) and their
/// calibration.
#[derive(Clone, Debug, PartialEq)]
pub struct OodReference {
    /// The calibration.
    pub calibration: OodCalibration,
    /// Embedding length.
    pub dim: usize,
    /// `references × dim` values, each row of unit length.
    pub embeddings: Vec<f32>,
}

/// One image's OOD verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OodScore {
    /// Cosine distance to the k-th nearest reference, `0..=2`.
    pub distance: f32,
    /// `distance / threshold`: above 1 is out of distribution (`predict --json`'s
    /// `ood_score`).
    pub score: f32,
    /// `score > 1`.
    pub out_of_distribution: bool,
}

/// `v / |v|`, or `None` for a non-finite or zero vector.
fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// Dot product (eight lanes, so that it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The k-th smallest of `distances` (1-based `k`), `None` when there are fewer.
fn kth_smallest(distances: &mut [f32], k: usize) -> Option<f32> {
    if k == 0 || distances.len() < k {
        return None;
    }
    let (_, kth, _) = distances.select_nth_unstable_by(k - 1, f32::total_cmp);
    Some(*kth)
}

/// Indices of at most `max` of `labels`' items: a seeded shuffle of each class, taken class by
/// class in turn.
fn draw_references(labels: &[usize], max: usize, seed: u64) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in labels.iter().enumerate() {
        per_class[label].push(i);
    }
    let mut rng = SeededRng::derive(seed, 0x00D);
    for members in &mut per_class {
        rng.shuffle(members);
        members.reverse();
    }
    let mut out = Vec::with_capacity(max.min(labels.len()));
    while out.len() < max && per_class.iter().any(|m| !m.is_empty()) {
        for members in &mut per_class {
            if out.len() < max
                && let Some(i) = members.pop()
            {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    out
}

impl OodReference {
    /// Keeps references from `embeddings` (one per training image, `labels[i]` its class,
    /// `groups[i]` its patient when known) and calibrates the threshold on every image's
    /// out-of-fold distance. Deterministic for a `seed`.
    ///
    /// # Errors
    /// [`OodError::TooFew`] under [`MIN_IMAGES`] images (or when no image has
    /// [`NEIGHBOURS`] references outside its own patient); [`OodError::Dimension`] for rows of
    /// different lengths or mismatched labels/groups; [`OodError::Degenerate`] for a
    /// non-finite or zero embedding.
    pub fn fit(
        embeddings: &[Vec<f32>],
        labels: &[usize],
        groups: Option<&[String]>,
        seed: u64,
    ) -> Result<Self, OodError> {
        let n = embeddings.len();
        if n < MIN_IMAGES {
            return Err(OodError::TooFew(n));
        }
        let dim = embeddings[0].len();
        let mismatch = |found: usize| OodError::Dimension { found, expected: n };
        if labels.len() != n {
            return Err(mismatch(labels.len()));
        }
        if let Some(g) = groups
            && g.len() != n
        {
            return Err(mismatch(g.len()));
        }
        let unit: Vec<Vec<f32>> = embeddings
            .iter()
            .map(|e| {
                if e.len() != dim {
                    return Err(OodError::Dimension {
                        found: e.len(),
                        expected: dim,
                    });
                }
                normalised(e).ok_or(OodError::Degenerate)
            })
            .collect::<Result<_, _>>()?;
        let references = draw_references(labels, MAX_REFERENCES, seed);
        let mut out_of_fold: Vec<f32> = Vec::with_capacity(n);
        let mut distances = Vec::with_capacity(references.len());
        for (i, query) in unit.iter().enumerate() {
            distances.clear();
            for &r in &references {
                let same_patient = groups.is_some_and(|g| g[r] == g[i]);
                if r != i && !same_patient {
                    distances.push(1.0 - dot(query, &unit[r]));
                }
            }
            if let Some(d) = kth_smallest(&mut distances, NEIGHBOURS) {
                out_of_fold.push(d);
            }
        }
        if out_of_fold.is_empty() {
            return Err(OodError::TooFew(n));
        }
        out_of_fold.sort_unstable_by(f32::total_cmp);
        let at =
            ((out_of_fold.len() as f64 * QUANTILE).ceil() as usize).clamp(1, out_of_fold.len());
        // A threshold of 0 (every image a copy of the references) would flag any change.
        let threshold = out_of_fold[at - 1].max(1e-6);
        Ok(Self {
            calibration: OodCalibration {
                method: METHOD.into(),
                neighbours: NEIGHBOURS,
                quantile: QUANTILE,
                threshold,
                references: references.len(),
                calibration_images: out_of_fold.len(),
            },
            dim,
            embeddings: references.iter().flat_map(|&r| unit[r].clone()).collect(),
        })
    }

    /// The reference as stored: its calibration and `[references, dim]` values.
    ///
    /// # Errors
    /// [`OodError::Invalid`] when they do not fit together (unknown method, wrong length,
    /// non-finite values or threshold, too few references for its neighbour).
    pub fn from_parts(
        calibration: OodCalibration,
        dim: usize,
        embeddings: Vec<f32>,
    ) -> Result<Self, OodError> {
        let invalid = |m: &str| Err(OodError::Invalid(m.into()));
        if calibration.method != METHOD {
            return invalid("unknown method");
        }
        if calibration.neighbours == 0 || calibration.references < calibration.neighbours {
            return invalid("fewer references than neighbours");
        }
        if Some(embeddings.len()) != calibration.references.checked_mul(dim) || dim == 0 {
            return invalid("its values do not match its shape");
        }
        if !(calibration.threshold.is_finite() && calibration.threshold > 0.0)
            || embeddings.iter().any(|v| !v.is_finite())
        {
            return invalid("it is not finite");
        }
        Ok(Self {
            calibration,
            dim,
            embeddings,
        })
    }

    /// The verdict on one image's embedding (`dim` values).
    ///
    /// # Errors
    /// [`OodError::Dimension`] for another length; [`OodError::Degenerate`] for a non-finite
    /// or zero embedding.
    pub fn score(&self, embedding: &[f32]) -> Result<OodScore, OodError> {
        if embedding.len() != self.dim {
            return Err(OodError::Dimension {
                found: embedding.len(),
                expected: self.dim,
            });
        }
        let query = normalised(embedding).ok_or(OodError::Degenerate)?;
        let mut distances: Vec<f32> = self
            .embeddings
            .chunks_exact(self.dim)
            .map(|r| 1.0 - dot(&query, r))
            .collect();
        let distance = kth_smallest(&mut distances, self.calibration.neighbours)
            .ok_or_else(|| OodError::Invalid("fewer references than neighbours".into()))?
            .max(0.0);
        let score = distance / self.calibration.threshold;
        Ok(OodScore {
            distance,
            score,
            out_of_distribution: score > 1.0,
        })
    }
}

#[cfg(test)]
mod tests;
