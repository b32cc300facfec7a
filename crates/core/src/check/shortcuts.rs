//! Shortcuts: properties that say nothing of anatomy yet predict the class.
//!
//! Each [`Property`] maps an image's [`ImageFacts`] to a key (`400×400`, `JPEG .jpeg`, …). A
//! lookup table (each key's most frequent class, classes weighted by the inverse of their
//! size so that a rare class can win its keys; an unseen key gets the largest class) is scored
//! by stratified [`FOLDS`]-fold cross-validation (grouped by patient when groups are known).
//! Its balanced accuracy is compared with chance, `1 / classes`; a property at least
//! [`SHORTCUT_MARGIN`] above chance is flagged when a permutation test (Ojala and Garriga,
//! "Permutation tests for studying classifier performance", JMLR 2010: the same folds on
//! [`PERMUTATIONS`] shuffles of the labels) puts its p-value at most [`MAX_P_VALUE`], so that
//! a small set's lucky score is not called a shortcut.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImageFacts;
use crate::rng::SeededRng;
use crate::split::stratified_folds;

/// Folds of the cross-validation.
pub const FOLDS: usize = 5;
/// Fewest images with facts a class needs for the properties to be scored.
pub const MIN_PER_CLASS: usize = FOLDS;
/// Balanced accuracy above chance from which a property is flagged as a shortcut.
pub const SHORTCUT_MARGIN: f64 = 0.15;
/// Label permutations of the permutation test.
pub const PERMUTATIONS: usize = 199;
/// The permutation test's p-value at or below which a property can be flagged.
pub const MAX_P_VALUE: f64 = 0.01;
/// The permutations' random stream.
const PERMUTATION_STREAM: u64 = 0x5C;
/// Keys shown as examples of a property.
const EXAMPLES: usize = 4;
/// Width of a [`Property::DarkShare`] bin.
const DARK_BIN: f32 = 0.05;

/// A property of an image file that should not decide its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Property {
    /// Width × height in pixels.
    PixelSize,
    /// Width / height, to two decimals.
    AspectRatio,
    /// The format sniffed from the content and the file name's extension.
    FileFormat,
    /// The share of near-black pixels (a black border), in bins of 0.05.
    DarkShare,
    /// Pixel size and file format together.
    SizeAndFormat,
}

impl Property {
    /// Every property, in the order reported.
    pub const ALL: [Property; 5] = [
        Property::PixelSize,
        Property::AspectRatio,
        Property::FileFormat,
        Property::DarkShare,
        Property::SizeAndFormat,
    ];

    /// The property in words.
    pub fn describe(self) -> &'static str {
        match self {
            Property::PixelSize => "pixel size",
            Property::AspectRatio => "aspect ratio",
            Property::FileFormat => "file format and extension",
            Property::DarkShare => "share of near-black (border) pixels",
            Property::SizeAndFormat => "pixel size with file format",
        }
    }

    /// The key of an image under this property.
    pub fn key(self, f: &ImageFacts) -> String {
        let size = format!("{}×{}", f.width, f.height);
        let format = if f.extension.is_empty() {
            f.format.clone()
        } else {
            format!("{} .{}", f.format, f.extension)
        };
        match self {
            Property::PixelSize => size,
            Property::AspectRatio => format!("{:.2}", f.width as f32 / f.height.max(1) as f32),
            Property::FileFormat => format,
            Property::DarkShare => {
                let bin =
                    ((f.dark_share / DARK_BIN).floor() as u32).min((1.0 / DARK_BIN) as u32 - 1);
                format!(
                    "{:.2}–{:.2} near-black",
                    bin as f32 * DARK_BIN,
                    (bin + 1) as f32 * DARK_BIN
                )
            }
            Property::SizeAndFormat => format!("{size} {format}"),
        }
    }
}

/// How well one property predicts the class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortcut {
    /// The property.
    pub property: Property,
    /// Out-of-fold balanced accuracy of the lookup table, `0..=1`.
    pub balanced_accuracy: f64,
    /// Chance: `1 / classes`.
    pub chance: f64,
    /// The permutation test's p-value: the share of [`PERMUTATIONS`] label shuffles (plus
    /// the labels themselves) whose lookup table scores at least as well.
    pub p_value: f64,
    /// `balanced_accuracy ≥ chance + SHORTCUT_MARGIN` and `p_value ≤ MAX_P_VALUE`.
    pub flagged: bool,
    /// Images scored (those with facts).
    pub images: usize,
    /// The most frequent keys with their images per class (class order), most frequent first.
    pub examples: Vec<(String, Vec<usize>)>,
}

impl Shortcut {
    /// What to do, in words (`classes`: the class names).
    pub fn advice(&self, classes: &[String]) -> String {
        let examples: Vec<String> = self
            .examples
            .iter()
            .map(|(key, counts)| {
                let parts: Vec<String> = counts
                    .iter()
                    .enumerate()
                    .filter(|&(_, &n)| n > 0)
                    .map(|(c, n)| format!("{} {n}", classes.get(c).map_or("?", String::as_str)))
                    .collect();
                format!("{key}: {}", parts.join(", "))
            })
            .collect();
        format!(
            "The {} alone predicts the class (balanced accuracy {:.2} out of fold, chance {:.2}; {}). A model can learn it instead of the anatomy: bring every class from the same sources, resize and crop them alike, and compare your model's figures with this one.",
            self.property.describe(),
            self.balanced_accuracy,
            self.chance,
            examples.join("; ")
        )
    }
}

/// Scores every property on the images with facts; empty when a class has fewer than
/// [`MIN_PER_CLASS`] of them (or the folds cannot be made).
pub(super) fn score_all(
    classes: usize,
    labels: &[usize],
    facts: &[Option<ImageFacts>],
    groups: Option<&[String]>,
    seed: u64,
) -> Vec<Shortcut> {
    let known: Vec<(usize, &ImageFacts)> = facts
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.as_ref().map(|f| (i, f)))
        .collect();
    let y: Vec<usize> = known.iter().map(|&(i, _)| labels[i]).collect();
    let mut per_class = vec![0usize; classes];
    for &label in &y {
        per_class[label] += 1;
    }
    if classes < 2 || per_class.iter().any(|&n| n < MIN_PER_CLASS) {
        return Vec::new();
    }
    let g: Option<Vec<String>> = groups.map(|g| known.iter().map(|&(i, _)| g[i].clone()).collect());
    let Ok(fold_of) = stratified_folds(&y, g.as_deref(), FOLDS, seed) else {
        return Vec::new();
    };
    Property::ALL
        .iter()
        .map(|&property| {
            let keys: Vec<String> = known.iter().map(|(_, f)| property.key(f)).collect();
            score(property, classes, &keys, &y, &fold_of, seed)
        })
        .collect()
}

/// Out-of-fold balanced accuracy of the lookup table from key ids `keys` (`0..n_keys`) to
/// labels `y`, on the folds `fold_of`.
fn lookup_accuracy(
    classes: usize,
    n_keys: usize,
    keys: &[usize],
    y: &[usize],
    fold_of: &[usize],
) -> f64 {
    let n = y.len();
    let mut correct = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    let mut counts = vec![0usize; n_keys * classes];
    for fold in 0..FOLDS {
        counts.fill(0);
        let mut sizes = vec![0usize; classes];
        for i in (0..n).filter(|&i| fold_of[i] != fold) {
            counts[keys[i] * classes + y[i]] += 1;
            sizes[y[i]] += 1;
        }
        let largest = (0..classes)
            .max_by_key(|&c| (sizes[c], std::cmp::Reverse(c)))
            .unwrap_or(0);
        for i in (0..n).filter(|&i| fold_of[i] == fold) {
            let row = &counts[keys[i] * classes..(keys[i] + 1) * classes];
            let predicted = if row.iter().all(|&k| k == 0) {
                largest
            } else {
                // Each class's count over its size, so that a rare class can win its keys;
                // ties go to the lower class index.
                let w = |c: usize| row[c] as f64 / sizes[c].max(1) as f64;
                (0..classes)
                    .max_by(|&a, &b| w(a).total_cmp(&w(b)).then(b.cmp(&a)))
                    .unwrap_or(largest)
            };
            total[y[i]] += 1;
            correct[y[i]] += usize::from(predicted == y[i]);
        }
    }
    let recalls: Vec<f64> = (0..classes)
        .filter(|&c| total[c] > 0)
        .map(|c| correct[c] as f64 / total[c] as f64)
        .collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

fn score(
    property: Property,
    classes: usize,
    keys: &[String],
    y: &[usize],
    fold_of: &[usize],
    seed: u64,
) -> Shortcut {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    let key_ids: Vec<usize> = keys
        .iter()
        .map(|k| {
            let next = ids.len();
            *ids.entry(k.as_str()).or_insert(next)
        })
        .collect();
    let balanced_accuracy = lookup_accuracy(classes, ids.len(), &key_ids, y, fold_of);
    // The permutation test: how often shuffled labels score as well.
    let mut rng = SeededRng::derive(seed, PERMUTATION_STREAM);
    let mut shuffled = y.to_vec();
    let as_good = (0..PERMUTATIONS)
        .filter(|_| {
            rng.shuffle(&mut shuffled);
            lookup_accuracy(classes, ids.len(), &key_ids, &shuffled, fold_of) >= balanced_accuracy
        })
        .count();
    let p_value = (1 + as_good) as f64 / (1 + PERMUTATIONS) as f64;
    let chance = 1.0 / classes as f64;
    let mut counts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, &label) in keys.iter().zip(y) {
        counts.entry(k.as_str()).or_insert_with(|| vec![0; classes])[label] += 1;
    }
    let mut examples: Vec<(String, Vec<usize>)> = counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    examples.sort_by_key(|(k, v)| (std::cmp::Reverse(v.iter().sum::<usize>()), k.clone()));
    examples.truncate(EXAMPLES);
    Shortcut {
        property,
        balanced_accuracy,
        chance,
        p_value,
        flagged: balanced_accuracy >= chance + SHORTCUT_MARGIN && p_value <= MAX_P_VALUE,
        images: y.len(),
        examples,
    }
}
