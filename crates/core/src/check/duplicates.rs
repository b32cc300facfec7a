//! Exact duplicates (same file content) and the groups the splitter keeps together.

use std::collections::HashMap;

use super::facts::hash_distance;
use super::{Finding, ImageFacts};

/// Cosine similarity of two frozen embeddings from which two different files count as
/// near-duplicates.
pub const NEAR_DUPLICATE_COSINE: f32 = 0.99;
/// Most bits (of 256) in which two files' perceptual hashes may differ, under some rotation or
/// mirroring, for them to count as near-duplicates when their embeddings are also at least
/// [`NEAR_DUPLICATE_HASH_COSINE`] alike. A resized or re-encoded copy differs in a few bits, but
/// a hash alone is not enough: distinct images with one dominant structure (a fundus
/// photograph's black disc) can share most of theirs (docs/RESULTS.md).
pub const NEAR_DUPLICATE_BITS: u32 = 6;
/// The cosine similarity two files with nearly the same hash need as well (a copy resized to
/// 90% keeps about 0.98; distinct chest X-rays rarely pass 0.95 with their most similar other).
pub const NEAR_DUPLICATE_HASH_COSINE: f32 = 0.97;

/// Pairs `(a, b, bits)`, `a < b`, of different content whose hashes differ in at most
/// [`NEAR_DUPLICATE_BITS`] under some symmetry.
pub(super) fn hash_pairs(facts: &[Option<ImageFacts>]) -> Vec<(usize, usize, u32)> {
    let mut out = Vec::new();
    for (a, fa) in facts.iter().enumerate() {
        let Some(fa) = fa else { continue };
        for (b, fb) in facts.iter().enumerate().skip(a + 1) {
            let Some(fb) = fb else { continue };
            if fa.content_hash == fb.content_hash {
                continue;
            }
            let bits = [hash_distance(fa, fb), hash_distance(fb, fa)]
                .into_iter()
                .flatten()
                .min();
            if let Some(bits) = bits.filter(|&d| d <= NEAR_DUPLICATE_BITS) {
                out.push((a, b, bits));
            }
        }
    }
    out
}

/// Sets of two or more images with the same content hash, each as a [`Finding::ExactDuplicate`]
/// (in the order of their first image).
pub(super) fn exact_duplicates(labels: &[usize], facts: &[Option<ImageFacts>]) -> Vec<Finding> {
    let mut by_hash: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        if let Some(f) = f {
            let items = by_hash.entry(&f.content_hash).or_default();
            if items.is_empty() {
                order.push(f.content_hash.as_str());
            }
            items.push(i);
        }
    }
    order
        .into_iter()
        .filter_map(|hash| {
            let items = by_hash.remove(hash)?;
            (items.len() > 1).then(|| {
                let mut classes: Vec<usize> = Vec::new();
                for &i in &items {
                    if !classes.contains(&labels[i]) {
                        classes.push(labels[i]);
                    }
                }
                Finding::ExactDuplicate { items, classes }
            })
        })
        .collect()
}

/// One group key per image for the splitter: images joined by `pairs` (duplicates), or
/// sharing a key of `base` (a patient id), get the same key, so that a split or a fold never
/// separates them. A key is the first base key of its group (or `dup-N`, N its first image,
/// when there is no base).
pub fn split_groups(n: usize, base: Option<&[String]>, pairs: &[(usize, usize)]) -> Vec<String> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    fn join(parent: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (root(parent, a), root(parent, b));
        // The smaller index stays the root, so keys do not depend on the pairs' order.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
    if let Some(base) = base {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, key) in base.iter().enumerate().take(n) {
            let f = *first.entry(key).or_insert(i);
            join(&mut parent, f, i);
        }
    }
    for &(a, b) in pairs {
        if a < n && b < n {
            join(&mut parent, a, b);
        }
    }
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            match base {
                Some(base) if r < base.len() => base[r].clone(),
                _ => format!("dup-{r}"),
            }
        })
        .collect()
}

/// The pairs `(a, b)`, `a < b`, of `embeddings` with a cosine similarity of at least
/// [`NEAR_DUPLICATE_COSINE`] (copies of one file included: their embeddings are the same), for
/// [`split_groups`] when only embeddings are at hand (training).
pub fn near_duplicate_pairs(embeddings: &[Vec<f32>]) -> Vec<(usize, usize)> {
    super::neighbours::scan(embeddings, 0)
        .close_pairs()
        .collect()
}
