//! A whole project as one file (`.mtproject`), for moving work between browsers and machines.
//!
//! The file is a zip archive (stored, not compressed: embeddings and JPEGs do not compress):
//! - `manifest.json`: format and version, backbone and preprocessing ids, class names, one entry
//!   per image (original name, class, whether it has a thumbnail) and the app's settings;
//! - `embeddings.f32`: the images' embeddings, little-endian `f32`, one row per image, in the
//!   manifest's order;
//! - `views.f32`: the embeddings of the images' augmented views, rows as above, each image's
//!   `views` rows in the manifest's order, when any image has views (files without it, from
//!   before views existed, read as images without views);
//! - `activations.f16`: the activations kept for fine-tuning
//!   ([`crate::finetune::STORED_BLOCKS`], 31,360 bytes each) of the images whose manifest entry
//!   says `activations`, in the manifest's order (files without it read as images without);
//! - `thumbnails/<n>.jpg`: the n-th image's thumbnail, when it has one;
//! - `model.mtmodel`: the trained model ([`crate::model_file`]), when there is one.
//!
//! Reading checks everything before anything is used: version, ids, counts, shapes, sizes,
//! finite values. The model keeps the class names it was trained with (its own header), which may
//! differ from the project's when a class was renamed or added after training. A bad file is
//! refused with a message and never panics.

use std::io::{Cursor, Read, Write};

use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::efficientnet::EMBEDDING_DIM;
use crate::embeddings::{
    BACKBONE_ID, PREPROCESSING_ID, decode_embedding, encode_embedding, encode_rows,
};
use crate::finetune::{CutFeatures, STORED_BLOCKS};
use crate::model_file::ModelFile;
use crate::train::limits;

/// File name extension of project files.
pub const PROJECT_FILE_EXTENSION: &str = "mtproject";
/// The format version this build writes (and the newest it reads).
pub const PROJECT_FORMAT_VERSION: u32 = 1;
/// Most images a project file may hold (bounds memory on import).
pub const MAX_IMAGES: usize = 200_000;
/// Most classes a project file may hold.
pub const MAX_CLASSES: usize = 10_000;
/// Largest thumbnail accepted, in bytes (ours are a few kB).
pub const MAX_THUMBNAIL_BYTES: u64 = 512 * 1024;
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;
/// Largest model file accepted, in bytes.
pub const MAX_MODEL_BYTES: u64 = 256 * 1024 * 1024;

const MANIFEST: &str = "manifest.json";
const EMBEDDINGS: &str = "embeddings.f32";
const VIEWS: &str = "views.f32";
const ACTIVATIONS: &str = "activations.f16";
/// Most augmented views an image may have.
const MAX_VIEWS: usize = *limits::AUGMENTED_VIEWS.end() as usize;
const MODEL: &str = "model.mtmodel";
const FORMAT: &str = "medtransfer-project";

/// Bytes of one image's stored activations.
fn activation_bytes() -> usize {
    CutFeatures::bytes_per_image(STORED_BLOCKS)
}

fn thumbnail_path(index: usize) -> String {
    format!("thumbnails/{index}.jpg")
}

/// Why a project file could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProjectFileError {
    /// Not a zip archive with a MedTransfer manifest.
    #[error("this is not a MedTransfer project file (.{PROJECT_FILE_EXTENSION})")]
    NotAProjectFile,
    /// Written by a newer MedTransfer.
    #[error(
        "this project file has format version {0}; this MedTransfer reads up to version {PROJECT_FORMAT_VERSION}: update MedTransfer"
    )]
    NewerVersion(u32),
    /// Made with another backbone or preprocessing: its embeddings would not fit.
    #[error("this project was made with {found}, this MedTransfer uses {expected}")]
    Incompatible {
        /// What the file says.
        found: String,
        /// What this build uses.
        expected: String,
    },
    /// Inconsistent or damaged content.
    #[error("this project file is damaged: {0}")]
    Damaged(String),
    /// The project to write is inconsistent (a bug in the caller).
    #[error("cannot write this project: {0}")]
    Invalid(String),
}

fn damaged(message: impl Into<String>) -> ProjectFileError {
    ProjectFileError::Damaged(message.into())
}

/// One image of a project file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestImage {
    /// The original file name.
    pub name: String,
    /// Index into the manifest's classes.
    pub class: usize,
    /// Whether `thumbnails/<index>.jpg` exists.
    pub thumbnail: bool,
    /// Rows of `views.f32` that are this image's augmented views (absent: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub views: usize,
    /// Whether `activations.f16` holds this image's activations for fine-tuning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activations: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectManifest {
    /// Always `medtransfer-project`.
    pub format: String,
    /// [`PROJECT_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Which program wrote it.
    pub created_by: String,
    /// [`BACKBONE_ID`] of the embeddings.
    pub backbone: String,
    /// [`PREPROCESSING_ID`] of the embeddings.
    pub preprocessing: String,
    /// Length of each embedding.
    pub embedding_dim: usize,
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The images, in the order of `embeddings.f32`.
    pub images: Vec<ManifestImage>,
    /// The app's settings (opaque to the core).
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Whether `model.mtmodel` exists.
    pub has_model: bool,
}

/// One image of a project: name, class, thumbnail and embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectImage {
    /// The original file name.
    pub name: String,
    /// Index into the project's classes.
    pub class: usize,
    /// A small JPEG, when there is one.
    pub thumbnail: Option<Vec<u8>>,
    /// The backbone's embedding ([`EMBEDDING_DIM`] values).
    pub embedding: Vec<f32>,
    /// The embeddings of its augmented views ([`EMBEDDING_DIM`] values each; at most
    /// [`limits::AUGMENTED_VIEWS`]' end of them).
    pub views: Vec<Vec<f32>>,
    /// Its activations for fine-tuning ([`STORED_BLOCKS`]), when it has them.
    pub activations: Option<CutFeatures>,
}

/// A project read from or to be written to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectArchive {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Labelled images with their embeddings.
    pub images: Vec<ProjectImage>,
    /// The app's settings (opaque to the core).
    pub settings: serde_json::Value,
    /// The trained model file's bytes, when there is one (checked on read). Its header names
    /// the classes it was trained with, which may differ from [`ProjectArchive::classes`].
    pub model: Option<Vec<u8>>,
}

impl ProjectArchive {
    /// The project file's bytes.
    pub fn to_bytes(&self, created_by: &str) -> Result<Vec<u8>, ProjectFileError> {
        let invalid = |m: String| ProjectFileError::Invalid(m);
        if let Some((i, image)) = self.images.iter().enumerate().find(|(_, im)| {
            im.embedding.len() != EMBEDDING_DIM
                || im.class >= self.classes.len()
                || im.views.len() > MAX_VIEWS
                || im.views.iter().any(|v| v.len() != EMBEDDING_DIM)
                || im
                    .activations
                    .as_ref()
                    .is_some_and(|a| 2 * a.values.len() != activation_bytes())
        }) {
            return Err(invalid(format!(
                "image {i} ({}) has class {} of {}, {} features and {} views, or activations of \
                 another length",
                image.name,
                image.class,
                self.classes.len(),
                image.embedding.len(),
                image.views.len()
            )));
        }
        let manifest = ProjectManifest {
            format: FORMAT.into(),
            format_version: PROJECT_FORMAT_VERSION,
            created_by: created_by.into(),
            backbone: BACKBONE_ID.into(),
            preprocessing: PREPROCESSING_ID.into(),
            embedding_dim: EMBEDDING_DIM,
            classes: self.classes.clone(),
            images: self
                .images
                .iter()
                .map(|im| ManifestImage {
                    name: im.name.clone(),
                    class: im.class,
                    thumbnail: im.thumbnail.is_some(),
                    views: im.views.len(),
                    activations: im.activations.is_some(),
                })
                .collect(),
            settings: self.settings.clone(),
            has_model: self.model.is_some(),
        };
        let write_error = |e: &dyn std::fmt::Display| invalid(format!("zip: {e}"));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let mut add = |name: &str, bytes: &[u8]| -> Result<(), ProjectFileError> {
            zip.start_file(name, options).map_err(|e| write_error(&e))?;
            zip.write_all(bytes).map_err(|e| write_error(&e))
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| write_error(&e))?;
        add(MANIFEST, &json)?;
        let embeddings: Vec<u8> = self
            .images
            .iter()
            .flat_map(|im| encode_embedding(&im.embedding))
            .collect();
        add(EMBEDDINGS, &embeddings)?;
        let views: Vec<u8> = self
            .images
            .iter()
            .flat_map(|im| encode_rows(&im.views))
            .collect();
        if !views.is_empty() {
            add(VIEWS, &views)?;
        }
        let activations: Vec<u8> = self
            .images
            .iter()
            .filter_map(|im| im.activations.as_ref())
            .flat_map(CutFeatures::to_bytes)
            .collect();
        if !activations.is_empty() {
            add(ACTIVATIONS, &activations)?;
        }
        for (i, image) in self.images.iter().enumerate() {
            if let Some(thumbnail) = &image.thumbnail {
                add(&thumbnail_path(i), thumbnail)?;
            }
        }
        if let Some(model) = &self.model {
            add(MODEL, model)?;
        }
        Ok(zip.finish().map_err(|e| write_error(&e))?.into_inner())
    }

    /// Reads and checks a project file. Never panics on any input; what it reads out of the
    /// archive is at most four times the file's size in total (and within the limits above).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProjectFileError> {
        let mut zip =
            ZipArchive::new(Cursor::new(bytes)).map_err(|_| ProjectFileError::NotAProjectFile)?;
        // Everything read out of the archive together is at most four times the archive's size
        // (room for compressed entries): entries that share their bytes (a crafted file)
        // cannot multiply the memory it takes without bound.
        let mut budget = (bytes.len() as u64).saturating_mul(4);
        let zip = &mut Reader {
            zip: &mut zip,
            budget: &mut budget,
        };
        let manifest_bytes = read_entry(zip, MANIFEST, MAX_MANIFEST_BYTES)?
            .ok_or(ProjectFileError::NotAProjectFile)?;
        let manifest: ProjectManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| damaged(format!("its manifest is not valid: {e}")))?;
        if manifest.format != FORMAT {
            return Err(ProjectFileError::NotAProjectFile);
        }
        if manifest.format_version > PROJECT_FORMAT_VERSION {
            return Err(ProjectFileError::NewerVersion(manifest.format_version));
        }
        if manifest.format_version == 0 {
            return Err(damaged("format version 0 does not exist"));
        }
        if manifest.backbone != BACKBONE_ID {
            return Err(ProjectFileError::Incompatible {
                found: manifest.backbone,
                expected: BACKBONE_ID.into(),
            });
        }
        if manifest.preprocessing != PREPROCESSING_ID {
            return Err(ProjectFileError::Incompatible {
                found: format!("preprocessing {}", manifest.preprocessing),
                expected: format!("preprocessing {PREPROCESSING_ID}"),
            });
        }
        if manifest.embedding_dim != EMBEDDING_DIM {
            return Err(ProjectFileError::Incompatible {
                found: format!("{}-value embeddings", manifest.embedding_dim),
                expected: format!("{EMBEDDING_DIM}-value embeddings"),
            });
        }
        if manifest.classes.is_empty() || manifest.classes.len() > MAX_CLASSES {
            return Err(damaged(format!(
                "it has {} classes (1 to {MAX_CLASSES} allowed)",
                manifest.classes.len()
            )));
        }
        if manifest.images.len() > MAX_IMAGES {
            return Err(damaged(format!(
                "it lists {} images (at most {MAX_IMAGES})",
                manifest.images.len()
            )));
        }
        if let Some((i, image)) = manifest
            .images
            .iter()
            .enumerate()
            .find(|(_, im)| im.class >= manifest.classes.len() || im.views > MAX_VIEWS)
        {
            return Err(damaged(format!(
                "image {i} ({}) has class {} of {} and {} augmented views (at most {MAX_VIEWS})",
                image.name,
                image.class,
                manifest.classes.len(),
                image.views
            )));
        }
        let row_bytes = EMBEDDING_DIM * 4;
        // In u64: on wasm32 the largest counts allowed overflow a usize.
        let expected = manifest.images.len() as u64 * row_bytes as u64;
        let embeddings = read_entry(zip, EMBEDDINGS, expected)?
            .ok_or_else(|| damaged("its embeddings are missing"))?;
        if embeddings.len() as u64 != expected {
            return Err(damaged(format!(
                "its embeddings have {} bytes, {} images need {expected}",
                embeddings.len(),
                manifest.images.len()
            )));
        }
        let view_rows: u64 = manifest.images.iter().map(|im| im.views as u64).sum();
        let expected = view_rows * row_bytes as u64;
        let views = match read_entry(zip, VIEWS, expected)? {
            None if view_rows > 0 => return Err(damaged("its augmented views are missing")),
            None => Vec::new(),
            Some(views) if views.len() as u64 != expected => {
                return Err(damaged(format!(
                    "its augmented views have {} bytes, {view_rows} views need {expected}",
                    views.len()
                )));
            }
            Some(views) => views,
        };
        let mut view_rows = views.chunks_exact(row_bytes);
        let block = activation_bytes();
        let with_activations = manifest.images.iter().filter(|im| im.activations).count() as u64;
        let expected = with_activations * block as u64;
        let activations = match read_entry(zip, ACTIVATIONS, expected)? {
            None if with_activations > 0 => return Err(damaged("its activations are missing")),
            None => Vec::new(),
            Some(bytes) if bytes.len() as u64 != expected => {
                return Err(damaged(format!(
                    "its activations have {} bytes, {with_activations} images need {expected}",
                    bytes.len()
                )));
            }
            Some(bytes) => bytes,
        };
        let mut activation_blocks = activations.chunks_exact(block);
        let mut images = Vec::with_capacity(manifest.images.len());
        for (i, (entry, row)) in manifest
            .images
            .into_iter()
            .zip(embeddings.chunks_exact(row_bytes))
            .enumerate()
        {
            // Rows have the right length, so `None` means a value that is not finite.
            let Some(embedding) = decode_embedding(row) else {
                return Err(damaged(format!(
                    "the embedding of image {i} ({}) is not finite",
                    entry.name
                )));
            };
            let thumbnail = if entry.thumbnail {
                let thumb = read_entry(zip, &thumbnail_path(i), MAX_THUMBNAIL_BYTES)?
                    .ok_or_else(|| damaged(format!("the thumbnail of image {i} is missing")))?;
                if !(thumb.starts_with(&[0xFF, 0xD8]) || thumb.starts_with(b"\x89PNG")) {
                    return Err(damaged(format!(
                        "the thumbnail of image {i} is not a JPEG or PNG"
                    )));
                }
                Some(thumb)
            } else {
                None
            };
            let views = view_rows
                .by_ref()
                .take(entry.views)
                .map(|row| {
                    decode_embedding(row).ok_or_else(|| {
                        damaged(format!(
                            "an augmented view of image {i} ({}) is not finite",
                            entry.name
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            // A block that is not finite leaves the image without activations (it can still
            // be trained on, only not fine-tuned).
            let activations = if entry.activations {
                activation_blocks
                    .next()
                    .and_then(|b| CutFeatures::from_bytes(b, STORED_BLOCKS))
            } else {
                None
            };
            images.push(ProjectImage {
                name: entry.name,
                class: entry.class,
                thumbnail,
                embedding,
                views,
                activations,
            });
        }
        let model = if manifest.has_model {
            let model = read_entry(zip, MODEL, MAX_MODEL_BYTES)?
                .ok_or_else(|| damaged("its model is missing"))?;
            let parsed = ModelFile::from_bytes(&model)
                .map_err(|e| damaged(format!("its model cannot be used: {e}")))?;
            if parsed.header.head.input_dim != EMBEDDING_DIM {
                return Err(damaged(format!(
                    "its model takes {} features, the project's embeddings have {EMBEDDING_DIM}",
                    parsed.header.head.input_dim
                )));
            }
            Some(model)
        } else {
            None
        };
        Ok(Self {
            classes: manifest.classes,
            images,
            settings: manifest.settings,
            model,
        })
    }
}

/// The archive being read, with how many bytes may still be read out of it.
struct Reader<'a, 'b> {
    zip: &'a mut ZipArchive<Cursor<&'b [u8]>>,
    budget: &'a mut u64,
}

/// An entry's bytes, `None` when absent; refuses entries larger than `limit` or than what is
/// left of the reader's budget.
fn read_entry(
    reader: &mut Reader<'_, '_>,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ProjectFileError> {
    let limit = limit.min(*reader.budget);
    let mut file = match reader.zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(damaged(format!("{name}: {e}"))),
    };
    if file.size() > limit {
        return Err(damaged(format!(
            "{name} has {} bytes, more than the {limit} allowed",
            file.size()
        )));
    }
    let mut out = Vec::new();
    // `take` bounds the read even if the declared size lies.
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| damaged(format!("{name}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(damaged(format!(
            "{name} is larger than the {limit} bytes allowed"
        )));
    }
    *reader.budget -= out.len() as u64;
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
