//! Train/validation splits of a labelled image set.
//!
//! The split is stratified (every class keeps about the same share of its items in validation)
//! and, optionally, grouped: all images of one group — typically one patient, recognised from the
//! file name by a user-given regular expression — land on the same side, so that validation
//! measures generalisation to unseen patients rather than to unseen photos of known ones.
//! It is deterministic given the seed, natively and in the browser alike.

use std::collections::{BTreeMap, HashMap};

use regex_lite::Regex;
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// The random stream (see [`SeededRng::derive`]) the split draws from, so that other uses of
/// the same user seed (weights, shuffling, augmentation) do not change which items are held out.
pub const SPLIT_STREAM: u64 = 0x5350_4C49_5400_0001;

/// Why a split could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// The group pattern is not a valid regular expression (the payload says why).
    #[error("invalid group pattern {0}")]
    BadPattern(String),
    /// The validation fraction is not strictly between 0 and 1.
    #[error("the validation fraction must be strictly between 0 and 1, got {0}")]
    BadFraction(f64),
    /// A class has too few items to put at least one in validation and keep one for training.
    #[error(
        "class {class} has only {count} item(s); each class needs at least 2 items, one to \
         train on and one to check the model on (a validation split or a cross-validation fold)"
    )]
    TooFewItems {
        /// The class index (label).
        class: usize,
        /// How many items carry that label.
        count: usize,
    },
    /// With groups: a class has too few groups (groups whose majority label it is) to put at
    /// least one in validation and keep one for training.
    #[error(
        "class {class} has only {count} group(s) (groups whose majority label is {class}); \
         each class needs at least 2 groups, one to train on and one to check the model on"
    )]
    TooFewGroups {
        /// The class index (label).
        class: usize,
        /// How many groups have that class as their majority label.
        count: usize,
    },
    /// Cross-validation needs at least 2 folds.
    #[error("cross-validation needs at least 2 folds, got {0}")]
    BadFolds(usize),
    /// The number of group keys differs from the number of labels.
    #[error("got {groups} group keys for {labels} labelled items; there must be one key per item")]
    GroupCountMismatch {
        /// Number of labels given.
        labels: usize,
        /// Number of group keys given.
        groups: usize,
    },
}

impl SplitError {
    /// The message with each class named by `classes` (its name, in label order) rather than
    /// by its 0-based label: what a user reads ("the class “COVID” has only 1 item(s)…").
    pub fn with_class_names(&self, classes: &[String]) -> String {
        let name = |class: usize| {
            classes.get(class).map_or_else(
                || format!("class {class}"),
                |n| format!("the class \u{201c}{n}\u{201d}"),
            )
        };
        match self {
            Self::TooFewItems { class, count } => format!(
                "{} has only {count} item(s); each class needs at least 2 items, one to train \
                 on and one to check the model on (a validation split or a cross-validation \
                 fold)",
                name(*class)
            ),
            Self::TooFewGroups { class, count } => format!(
                "{} has only {count} group(s) (groups whose majority label it is); each class \
                 needs at least 2 groups, one to train on and one to check the model on",
                name(*class)
            ),
            other => other.to_string(),
        }
    }
}

/// How items are grouped so that no group (e.g. one patient) straddles train and validation:
/// a regular expression applied to each file name.
#[derive(Debug, Clone)]
pub struct GroupPattern {
    regex: Regex,
}

impl GroupPattern {
    /// Compiles a user-given regular expression (`regex_lite` syntax).
    ///
    /// The group key of a file name is the first capture group if the pattern has one and it
    /// matched (non-empty), else the whole match; a name that does not match (or matches only the
    /// empty string) is its own group. A bad pattern is an error, never a panic.
    pub fn new(pattern: &str) -> Result<Self, SplitError> {
        Regex::new(pattern)
            .map(|regex| Self { regex })
            .map_err(|err| SplitError::BadPattern(format!("{pattern:?}: {err}")))
    }

    /// The pattern as given, e.g. for saving it with a trained model.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// The group key of `file_name` (see [`GroupPattern::new`]); a non-matching name is
    /// returned unchanged, so it forms a group of its own.
    pub fn key(&self, file_name: &str) -> String {
        if let Some(caps) = self.regex.captures(file_name) {
            let group = caps.get(1).map(|m| m.as_str()).filter(|s| !s.is_empty());
            let whole = caps.get(0).map(|m| m.as_str()).filter(|s| !s.is_empty());
            if let Some(key) = group.or(whole) {
                return key.to_owned();
            }
        }
        file_name.to_owned()
    }
}

/// A train/validation split: indices into the input, each list sorted ascending, together
/// covering every input index exactly once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Indices of the items used for training.
    pub train: Vec<usize>,
    /// Indices of the items held out for validation.
    pub validation: Vec<usize>,
}

/// A unit that is assigned whole: one item, or all items of one group.
struct Unit {
    items: Vec<usize>,
}

/// Stratified split: for each class (each label value that occurs), about
/// `validation_fraction` (strictly between 0 and 1) of its items go to validation — rounded to
/// nearest, but at least 1 and at most `count − 1` per class. Deterministic given `seed` (it
/// draws from `SeededRng::derive(seed, SPLIT_STREAM)`) and the order of the input.
///
/// With `groups` (one key per item), groups are assigned whole. A group's class for
/// stratification is its majority label (ties → lowest label), and a class's item count is the
/// total size of its groups. Per class, its groups (in order of first appearance) are shuffled
/// and moved to validation one by one until the class's validation item count reaches its
/// target; the group that reaches or passes it is the last one moved, and never all groups of a
/// class are moved.
///
/// Errors: a fraction outside (0, 1); a key count that differs from the label count; a class
/// with fewer than 2 items (or, grouped, fewer than 2 groups) — the message names the class.
/// An empty input gives an empty split.
pub fn stratified_split(
    labels: &[usize],
    groups: Option<&[String]>,
    validation_fraction: f64,
    seed: u64,
) -> Result<Split, SplitError> {
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(SplitError::BadFraction(validation_fraction));
    }

    let mut by_class = class_units(labels, groups)?;

    let mut rng = SeededRng::derive(seed, SPLIT_STREAM);
    let mut in_validation = vec![false; labels.len()];
    for units in by_class.values_mut() {
        let total: usize = units.iter().map(|u| u.items.len()).sum();
        let target = validation_target(total, validation_fraction);
        rng.shuffle(units);
        let mut moved = 0usize;
        // Never the last unit: at least one group of each class stays in training.
        for unit in units.iter().take(units.len().saturating_sub(1)) {
            if moved >= target {
                break;
            }
            for &index in &unit.items {
                if let Some(flag) = in_validation.get_mut(index) {
                    *flag = true;
                }
            }
            moved += unit.items.len();
        }
    }

    let (validation, train): (Vec<usize>, Vec<usize>) =
        (0..labels.len()).partition(|&i| in_validation.get(i).copied().unwrap_or(false));
    Ok(Split { train, validation })
}

/// The fewest units (items, or with `groups` groups, classed by majority label) any class has:
/// the most folds a stratified cross-validation can deal every class into.
///
/// Errors: those of [`stratified_folds`] for the same input (a class with fewer than 2
/// units, a key count that differs from the label count).
pub fn smallest_class_units(
    labels: &[usize],
    groups: Option<&[String]>,
) -> Result<usize, SplitError> {
    Ok(class_units(labels, groups)?
        .values()
        .map(Vec::len)
        .min()
        .unwrap_or(0))
}

/// The units (an item, or all items of one group) of each class, in order of first appearance
/// (classes ascending). Errors: a key count that differs from the label count; a class with
/// fewer than 2 units.
fn class_units(
    labels: &[usize],
    groups: Option<&[String]>,
) -> Result<BTreeMap<usize, Vec<Unit>>, SplitError> {
    let mut by_class: BTreeMap<usize, Vec<Unit>> = BTreeMap::new();
    match groups {
        None => {
            for (index, &label) in labels.iter().enumerate() {
                by_class
                    .entry(label)
                    .or_default()
                    .push(Unit { items: vec![index] });
            }
            for (&class, units) in &by_class {
                if units.len() < 2 {
                    return Err(SplitError::TooFewItems {
                        class,
                        count: units.len(),
                    });
                }
            }
        }
        Some(keys) => {
            if keys.len() != labels.len() {
                return Err(SplitError::GroupCountMismatch {
                    labels: labels.len(),
                    groups: keys.len(),
                });
            }
            let mut slot_of_key: HashMap<&str, usize> = HashMap::new();
            let mut members: Vec<Vec<usize>> = Vec::new();
            for (index, key) in keys.iter().enumerate() {
                let slot = *slot_of_key.entry(key.as_str()).or_insert_with(|| {
                    members.push(Vec::new());
                    members.len() - 1
                });
                if let Some(list) = members.get_mut(slot) {
                    list.push(index);
                }
            }
            for items in members {
                let class = majority_label(labels, &items);
                by_class.entry(class).or_default().push(Unit { items });
            }
            // Every label that occurs must own at least 2 groups.
            let mut present: Vec<usize> = labels.to_vec();
            present.sort_unstable();
            present.dedup();
            for class in present {
                let count = by_class.get(&class).map_or(0, Vec::len);
                if count < 2 {
                    return Err(SplitError::TooFewGroups { class, count });
                }
            }
        }
    }
    Ok(by_class)
}

/// The random stream [`stratified_folds`] draws from (see [`SeededRng::derive`]).
pub const FOLD_STREAM: u64 = 0x464F_4C44_5300_0001;

/// Stratified `k`-fold assignment for cross-validation: the fold (`0..k`) of each item. Per
/// class, its units (items, or with `groups` whole groups, classed by majority label as in
/// [`stratified_split`]) are shuffled and dealt to the folds in turn, each class starting where
/// the previous one stopped, so every fold gets about `1/k` of every class and a class's units
/// never all land in one fold. Deterministic given `seed` (it draws from
/// `SeededRng::derive(seed, FOLD_STREAM)`) and the order of the input.
///
/// Errors: `k < 2` ([`SplitError::BadFolds`]); a key count that differs from the label count;
/// a class with fewer than 2 items (or, grouped, groups), named by its label.
pub fn stratified_folds(
    labels: &[usize],
    groups: Option<&[String]>,
    k: usize,
    seed: u64,
) -> Result<Vec<usize>, SplitError> {
    if k < 2 {
        return Err(SplitError::BadFolds(k));
    }
    let mut by_class = class_units(labels, groups)?;
    let mut rng = SeededRng::derive(seed, FOLD_STREAM);
    let mut fold_of = vec![0usize; labels.len()];
    let mut next = 0usize;
    for units in by_class.values_mut() {
        rng.shuffle(units);
        for unit in units.iter() {
            for &index in &unit.items {
                if let Some(slot) = fold_of.get_mut(index) {
                    *slot = next % k;
                }
            }
            next += 1;
        }
    }
    Ok(fold_of)
}

/// The number of a class's `count` items that should go to validation: `count × fraction`
/// rounded to nearest, kept within `1..=count − 1` (for `count ≥ 2`).
fn validation_target(count: usize, fraction: f64) -> usize {
    let ideal = (count as f64 * fraction).round();
    // `as` saturates; the fraction is in (0, 1), so `ideal` is within 0..=count.
    let ideal = ideal as usize;
    ideal.clamp(1, count.saturating_sub(1).max(1))
}

/// The most frequent label among `items` (ties → the lowest label).
fn majority_label(labels: &[usize], items: &[usize]) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for &index in items {
        if let Some(&label) = labels.get(index) {
            *counts.entry(label).or_default() += 1;
        }
    }
    let mut best: Option<(usize, usize)> = None;
    // Ascending labels, replaced only on a strictly larger count: ties keep the lowest label.
    for (label, count) in counts {
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((label, count));
        }
    }
    best.map_or(0, |(label, _)| label)
}

#[cfg(test)]
mod tests;
