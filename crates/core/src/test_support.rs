//! Test data shared by the unit tests of several modules.

use crate::rng::SeededRng;
use crate::train::LabelledEmbeddings;

/// Gaussian blobs: `n_per_class[c]` items of class `c` in `dim` dimensions, unit noise, and
/// `centre` added to every feature `d` with `d % classes == c`: separable when `centre` is
/// large, overlapping when small.
pub(crate) fn blobs(
    n_per_class: &[usize],
    dim: usize,
    centre: f32,
    seed: u64,
) -> LabelledEmbeddings {
    let mut rng = SeededRng::new(seed);
    let mut data = LabelledEmbeddings::default();
    let classes = n_per_class.len();
    for (class, &n) in n_per_class.iter().enumerate() {
        for _ in 0..n {
            let row: Vec<f32> = (0..dim)
                .map(|d| {
                    let shift = if d % classes == class { centre } else { 0.0 };
                    shift + rng.normal()
                })
                .collect();
            data.embeddings.push(row);
            data.labels.push(class);
        }
    }
    data
}

/// `k` class names: "class 0", "class 1", …
pub(crate) fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("class {i}")).collect()
}
