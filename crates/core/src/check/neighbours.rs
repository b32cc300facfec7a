//! Nearest neighbours by embedding: near-duplicates and label suspects from one scan.

use std::collections::BTreeMap;

use super::duplicates::NEAR_DUPLICATE_HASH_COSINE;
use super::facts::hash_distance;
use super::{Finding, ImageFacts, NEAR_DUPLICATE_COSINE};

/// Neighbours a label suspect's verdict rests on (all of them must carry one other label).
pub const NEIGHBOURS: usize = 5;

/// The result of one all-pairs scan of cosine similarities.
pub(super) struct Scan {
    /// Per image, its nearest others as (cosine, index), most similar first (at most `k`).
    nearest: Vec<Vec<(f32, usize)>>,
    /// Pairs `(a, b, cosine)` with `a < b` and cosine ≥ [`NEAR_DUPLICATE_COSINE`].
    close: Vec<(usize, usize, f32)>,
    /// The unit-length embeddings (`None`: degenerate).
    units: Vec<Option<Vec<f32>>>,
}

/// `v / |v|`, or `None` for a non-finite, empty or zero vector.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// Dot product in eight lanes (so that it vectorises).
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

/// Keeps `list` the `k` most similar, most similar first.
fn offer(list: &mut Vec<(f32, usize)>, k: usize, candidate: (f32, usize)) {
    if k == 0 {
        return;
    }
    if list.len() == k && list.last().is_some_and(|last| last.0 >= candidate.0) {
        return;
    }
    let at = list.partition_point(|e| e.0 >= candidate.0);
    list.insert(at, candidate);
    list.truncate(k);
}

/// Scans every pair of `embeddings` (an image with a degenerate embedding, or one of another
/// length than the first, takes part in no pair) keeping each image's `k` nearest.
pub(super) fn scan(embeddings: &[Vec<f32>], k: usize) -> Scan {
    let dim = embeddings.first().map_or(0, Vec::len);
    let units: Vec<Option<Vec<f32>>> = embeddings
        .iter()
        .map(|e| if e.len() == dim { unit(e) } else { None })
        .collect();
    let n = units.len();
    let mut nearest = vec![Vec::with_capacity(k + 1); n];
    let mut close = Vec::new();
    for i in 0..n {
        let Some(a) = &units[i] else { continue };
        for j in i + 1..n {
            let Some(b) = &units[j] else { continue };
            let cosine = dot(a, b);
            offer(&mut nearest[i], k, (cosine, j));
            offer(&mut nearest[j], k, (cosine, i));
            if cosine >= NEAR_DUPLICATE_COSINE {
                close.push((i, j, cosine));
            }
        }
    }
    Scan {
        nearest,
        close,
        units,
    }
}

impl Scan {
    /// The close pairs `(a, b)`, `a < b`.
    pub(super) fn close_pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.close.iter().map(|&(a, b, _)| (a, b))
    }

    /// Cosine similarity of two images' embeddings (`None` when either is degenerate).
    fn cosine(&self, a: usize, b: usize) -> Option<f32> {
        match (self.units.get(a)?, self.units.get(b)?) {
            (Some(x), Some(y)) => Some(dot(x, y).min(1.0)),
            _ => None,
        }
    }

    /// Each close pair, and each pair of `hash_pairs` (`(a, b, bits)`, `a < b`) whose
    /// embeddings are at least [`NEAR_DUPLICATE_HASH_COSINE`] alike (or unknown), as one
    /// [`Finding::NearDuplicate`] in pair order, except pairs of the same content (reported as
    /// exact duplicates).
    pub(super) fn near_duplicates(
        &self,
        facts: &[Option<ImageFacts>],
        hash_pairs: &[(usize, usize, u32)],
    ) -> Vec<Finding> {
        let hash = |i: usize| {
            facts
                .get(i)
                .and_then(Option::as_ref)
                .map(|f| &f.content_hash)
        };
        let mut pairs: BTreeMap<(usize, usize), Option<u32>> = self
            .close
            .iter()
            .filter(|&&(a, b, _)| hash(a).is_none() || hash(a) != hash(b))
            .map(|&(a, b, _)| ((a, b), None))
            .collect();
        for &(a, b, bits) in hash_pairs {
            if self
                .cosine(a, b)
                .is_none_or(|c| c >= NEAR_DUPLICATE_HASH_COSINE)
            {
                pairs.insert((a, b), Some(bits));
            }
        }
        pairs
            .into_iter()
            .map(|((a, b), hash_bits)| {
                let facts_of = |i: usize| facts.get(i).and_then(Option::as_ref);
                let hash_bits = hash_bits.or_else(|| {
                    let (fa, fb) = (facts_of(a)?, facts_of(b)?);
                    [hash_distance(fa, fb), hash_distance(fb, fa)]
                        .into_iter()
                        .flatten()
                        .min()
                });
                Finding::NearDuplicate {
                    a,
                    b,
                    cosine: self.cosine(a, b),
                    hash_bits,
                }
            })
            .collect()
    }

    /// Each image whose full list of nearest images all carry one label other than its own,
    /// as a [`Finding::LabelSuspect`].
    pub(super) fn label_suspects(&self, labels: &[usize]) -> Vec<Finding> {
        self.nearest
            .iter()
            .enumerate()
            .filter_map(|(i, near)| {
                let first = labels[near.first()?.1];
                let unanimous =
                    near.len() == NEIGHBOURS && near.iter().all(|&(_, j)| labels[j] == first);
                (unanimous && first != labels[i]).then(|| Finding::LabelSuspect {
                    item: i,
                    neighbours: near.iter().map(|&(_, j)| j).collect(),
                    neighbours_class: first,
                })
            })
            .collect()
    }
}
