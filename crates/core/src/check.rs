//! The data check: what in a labelled image set would mislead training or its figures.
//!
//! Four findings, each naming its images and what to do (see [`Finding::advice`]):
//! - **exact duplicates** ([`duplicates`]): files with the same content (SHA-256), inside one
//!   class (an image counted twice, and across a split a copy of a training image in
//!   validation) or across classes (a *label conflict*: one image, two labels);
//! - **near-duplicates**: different files whose frozen embeddings have a cosine similarity of
//!   at least [`NEAR_DUPLICATE_COSINE`], or whose 256-bit difference hashes differ in at most
//!   [`NEAR_DUPLICATE_BITS`] bits under one of the 8 rotations and mirrorings while their
//!   embeddings are at least [`NEAR_DUPLICATE_HASH_COSINE`] alike (a re-encoded or resized
//!   copy, the same photograph from two sources, or the next frame of a series). Training,
//!   which has only the embeddings, uses the first rule. [`split_groups`] turns both kinds into groups that the splitter keeps
//!   on one side of a train/validation split or a fold;
//! - **label suspects** ([`neighbours`]): images whose [`NEIGHBOURS`] nearest images by
//!   embedding all carry one other label (the k-nearest-neighbour rule for label noise,
//!   Wilson 1972's edited nearest neighbour): candidates for a labelling error;
//! - **shortcuts** ([`shortcuts`]): whether a property that says nothing of anatomy (pixel
//!   size, aspect ratio, file format and extension, the share of near-black pixels of a border)
//!   predicts the class on its own: the cross-validated balanced accuracy of a lookup table on
//!   that property, against chance (`1 / classes`).
//!
//! Core only computes: the CLI (`medtransfer check`) and the page read files, embed them and
//! show the findings.

use serde::{Deserialize, Serialize};

pub mod duplicates;
pub mod facts;
pub mod neighbours;
pub mod shortcuts;

pub use duplicates::{
    NEAR_DUPLICATE_BITS, NEAR_DUPLICATE_COSINE, NEAR_DUPLICATE_HASH_COSINE, near_duplicate_pairs,
    split_groups,
};
pub use facts::ImageFacts;
pub use neighbours::NEIGHBOURS;
pub use shortcuts::{Property, SHORTCUT_MARGIN};

/// Why the data could not be checked.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// Inputs of different lengths.
    #[error("{what} has {found} entries for {expected} images")]
    Length {
        /// Which input.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The number of images.
        expected: usize,
    },
    /// A label not below the number of classes.
    #[error("an image has label {label}, but there are {classes} classes")]
    Label {
        /// The label.
        label: usize,
        /// Classes given.
        classes: usize,
    },
}

/// One finding of the check. Items are indices into the checked images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Files with the same content.
    ExactDuplicate {
        /// The files, in input order (two or more).
        items: Vec<usize>,
        /// Their classes, in input order of first appearance.
        classes: Vec<usize>,
    },
    /// Two different files that are nearly the same image: embeddings with a cosine
    /// similarity of at least [`NEAR_DUPLICATE_COSINE`], or perceptual hashes at most
    /// [`NEAR_DUPLICATE_BITS`] apart under some rotation or mirroring with a cosine of at least
    /// [`NEAR_DUPLICATE_HASH_COSINE`].
    NearDuplicate {
        /// The first file.
        a: usize,
        /// The second.
        b: usize,
        /// Cosine similarity of their embeddings, `-1..=1` (`None`: not known).
        cosine: Option<f32>,
        /// Bits (of 256) in which their perceptual hashes differ, under the symmetry that
        /// matches them best (`None`: no facts).
        hash_bits: Option<u32>,
    },
    /// An image whose nearest images all carry one other label.
    LabelSuspect {
        /// The image.
        item: usize,
        /// Its nearest images (most similar first).
        neighbours: Vec<usize>,
        /// The class they all carry.
        neighbours_class: usize,
    },
    /// A property that predicts the class on its own.
    Shortcut(shortcuts::Shortcut),
}

impl Finding {
    /// What the user should do about it, in words (`classes`: the class names).
    pub fn advice(&self, classes: &[String], labels: &[usize]) -> String {
        let name = |c: usize| classes.get(c).map_or("?", String::as_str);
        match self {
            Finding::ExactDuplicate { classes: in_classes, .. } if in_classes.len() > 1 => {
                let names: Vec<&str> = in_classes.iter().map(|&c| name(c)).collect();
                format!(
                    "Label conflict: the same image is filed under {}. Keep it in the right class only.",
                    names.join(" and ")
                )
            }
            Finding::ExactDuplicate { .. } => "The same image more than once: keep one copy (the others weigh it extra; the splitter keeps them on one side).".into(),
            Finding::NearDuplicate { a, b, .. } => {
                let conflict = match (labels.get(*a), labels.get(*b)) {
                    (Some(x), Some(y)) if x != y => format!(
                        " They are filed under {} and {}: check which is right.",
                        name(*x),
                        name(*y)
                    ),
                    _ => String::new(),
                };
                format!(
                    "Nearly the same image (a re-encoded or resized copy, or the next frame): the splitter keeps them on one side; delete one unless they are separate acquisitions.{conflict}"
                )
            }
            Finding::LabelSuspect { item, neighbours, neighbours_class } => format!(
                "Labelled {}, but its {} most similar images are all {}: check its label.",
                labels.get(*item).map_or("?", |&l| name(l)),
                neighbours.len(),
                name(*neighbours_class)
            ),
            Finding::Shortcut(s) => s.advice(classes),
        }
    }
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataCheck {
    /// Images checked.
    pub images: usize,
    /// Every finding: exact duplicates, near-duplicates, label suspects, then shortcuts.
    pub findings: Vec<Finding>,
    /// Every property's cross-validated score, flagged or not (empty without image facts or
    /// with a class of fewer than [`shortcuts::MIN_PER_CLASS`] images).
    pub properties: Vec<shortcuts::Shortcut>,
}

impl DataCheck {
    /// Checks `labels.len()` images: `embeddings[i]` (the frozen embedding, any length, all the
    /// same) for near-duplicates and label suspects; `facts[i]` (`None`: not known, as for
    /// images whose file is gone) for exact duplicates and shortcuts; `groups[i]` (a patient
    /// id, or `None`) keeps a patient's images in one fold when scoring shortcuts.
    /// Deterministic for a `seed`.
    ///
    /// # Errors
    /// [`CheckError::Length`] when an input's length differs from `labels`';
    /// [`CheckError::Label`] for a label not below `classes`.
    pub fn run(
        classes: usize,
        labels: &[usize],
        embeddings: &[Vec<f32>],
        facts: &[Option<ImageFacts>],
        groups: Option<&[String]>,
        seed: u64,
    ) -> Result<Self, CheckError> {
        let n = labels.len();
        let check = |what: &'static str, found: usize| {
            if found == n {
                Ok(())
            } else {
                Err(CheckError::Length {
                    what,
                    found,
                    expected: n,
                })
            }
        };
        check("embeddings", embeddings.len())?;
        check("facts", facts.len())?;
        if let Some(g) = groups {
            check("groups", g.len())?;
        }
        if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
            return Err(CheckError::Label { label, classes });
        }
        let mut findings = duplicates::exact_duplicates(labels, facts);
        let scan = neighbours::scan(embeddings, NEIGHBOURS);
        findings.extend(scan.near_duplicates(facts, &duplicates::hash_pairs(facts)));
        findings.extend(scan.label_suspects(labels));
        let properties = shortcuts::score_all(classes, labels, facts, groups, seed);
        findings.extend(
            properties
                .iter()
                .filter(|s| s.flagged)
                .cloned()
                .map(Finding::Shortcut),
        );
        Ok(Self {
            images: n,
            findings,
            properties,
        })
    }

    /// For each of the images, the kinds of finding that name it (`"exact_duplicate"`,
    /// `"near_duplicate"`, `"label_suspect"`; shortcuts name no image), each once, in that
    /// order: what the embedding map marks.
    pub fn flags(&self) -> Vec<Vec<&'static str>> {
        let mut flags: Vec<Vec<&'static str>> = vec![Vec::new(); self.images];
        let mut mark = |item: usize, kind: &'static str| {
            if let Some(f) = flags.get_mut(item)
                && !f.contains(&kind)
            {
                f.push(kind);
            }
        };
        for finding in &self.findings {
            match finding {
                Finding::ExactDuplicate { items, .. } => {
                    items.iter().for_each(|&i| mark(i, "exact_duplicate"));
                }
                Finding::NearDuplicate { a, b, .. } => {
                    mark(*a, "near_duplicate");
                    mark(*b, "near_duplicate");
                }
                Finding::LabelSuspect { item, .. } => mark(*item, "label_suspect"),
                Finding::Shortcut(_) => {}
            }
        }
        flags
    }

    /// The pairs of images the splitter should keep together: exact and near-duplicates.
    pub fn duplicate_pairs(&self) -> Vec<(usize, usize)> {
        self.findings
            .iter()
            .flat_map(|f| match f {
                Finding::ExactDuplicate { items, .. } => {
                    items.windows(2).map(|w| (w[0], w[1])).collect()
                }
                Finding::NearDuplicate { a, b, .. } => vec![(*a, *b)],
                _ => Vec::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
