//! A whole project as one file (`.mtproject`), for moving work between browsers and machines.
//!
//! The file is a zip archive (stored, not compressed: embeddings and JPEGs do not compress):
//! - `manifest.json`: format and version, backbone and preprocessing ids, class names, one entry
//!   per image (original name, class, whether it has a thumbnail) and the app's settings;
//! - `embeddings.f32`: the images' embeddings, little-endian `f32`, one row per image, in the
//!   manifest's order;
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
use crate::embeddings::{BACKBONE_ID, PREPROCESSING_ID, decode_embedding, encode_embedding};
use crate::model_file::ModelFile;

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
const MODEL: &str = "model.mtmodel";
const FORMAT: &str = "medtransfer-project";

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
        if let Some((i, image)) =
            self.images.iter().enumerate().find(|(_, im)| {
                im.embedding.len() != EMBEDDING_DIM || im.class >= self.classes.len()
            })
        {
            return Err(invalid(format!(
                "image {i} ({}) has class {} of {} and {} features",
                image.name,
                image.class,
                self.classes.len(),
                image.embedding.len()
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
            .find(|(_, im)| im.class >= manifest.classes.len())
        {
            return Err(damaged(format!(
                "image {i} ({}) has class {}, but there are {} classes",
                image.name,
                image.class,
                manifest.classes.len()
            )));
        }
        let row_bytes = EMBEDDING_DIM * 4;
        let expected = (manifest.images.len() * row_bytes) as u64;
        let embeddings = read_entry(zip, EMBEDDINGS, expected)?
            .ok_or_else(|| damaged("its embeddings are missing"))?;
        if embeddings.len() as u64 != expected {
            return Err(damaged(format!(
                "its embeddings have {} bytes, {} images need {expected}",
                embeddings.len(),
                manifest.images.len()
            )));
        }
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
            images.push(ProjectImage {
                name: entry.name,
                class: entry.class,
                thumbnail,
                embedding,
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
mod tests {
    use super::*;

    fn embedding(seed: f32) -> Vec<f32> {
        (0..EMBEDDING_DIM).map(|i| seed + i as f32 * 1e-3).collect()
    }

    fn sample() -> ProjectArchive {
        ProjectArchive {
            classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
            images: vec![
                ProjectImage {
                    name: "a (1).jpeg".into(),
                    class: 0,
                    thumbnail: Some(vec![0xFF, 0xD8, 1, 2, 3]),
                    embedding: embedding(0.5),
                },
                ProjectImage {
                    name: "b.png".into(),
                    class: 1,
                    thumbnail: None,
                    embedding: embedding(-2.0),
                },
            ],
            settings: serde_json::json!({"epochs": 7}),
            model: None,
        }
    }

    #[test]
    fn round_trips() {
        let project = sample();
        let bytes = project.to_bytes("test").expect("write");
        assert_eq!(ProjectArchive::from_bytes(&bytes), Ok(project));
    }

    /// A linear two-class model on the real embedding size, trained "with" `classes`.
    fn model_bytes(classes: &[&str]) -> Vec<u8> {
        use crate::head::{HeadConfig, HeadKind, HeadWeights, OutputKind};
        use crate::train::{FeatureNormalization, LossKind, StopReason, TrainConfig, TrainedHead};
        let config = HeadConfig {
            kind: HeadKind::Linear,
            output: OutputKind::Sigmoid,
            input_dim: EMBEDDING_DIM,
            num_classes: 2,
        };
        let trained = TrainedHead {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            config,
            weights: HeadWeights::initial(&config, 1).expect("valid"),
            normalization: FeatureNormalization {
                mean: vec![0.0; EMBEDDING_DIM],
                std: vec![1.0; EMBEDDING_DIM],
            },
            train_config: TrainConfig::default(),
            loss: LossKind::BinaryCrossEntropy,
            class_weights: vec![1.0, 1.0],
            history: Vec::new(),
            kept_epoch: 1,
            stop_reason: StopReason::Completed,
            validation: None,
            threshold: None,
        };
        ModelFile::from_trained(&trained, "test").to_bytes()
    }

    #[test]
    fn a_model_keeps_its_class_names_after_classes_were_renamed_or_added() {
        let project = ProjectArchive {
            classes: vec!["normal".into(), "pneumonia".into(), "covid".into()],
            model: Some(model_bytes(&["NORMAL", "PNEUMONIA"])),
            ..sample()
        };
        let back = ProjectArchive::from_bytes(&project.to_bytes("test").expect("write"))
            .expect("a model trained before a rename is kept");
        let model =
            ModelFile::from_bytes(back.model.as_deref().expect("model kept")).expect("model reads");
        assert_eq!(model.header.classes, ["NORMAL", "PNEUMONIA"]);
        assert_eq!(back.classes, ["normal", "pneumonia", "covid"]);
    }

    #[test]
    fn refuses_what_is_not_a_project() {
        assert_eq!(
            ProjectArchive::from_bytes(b"hello"),
            Err(ProjectFileError::NotAProjectFile)
        );
        assert_eq!(
            ProjectArchive::from_bytes(&[]),
            Err(ProjectFileError::NotAProjectFile)
        );
    }

    /// Rewrites the archive with its manifest changed by `edit`.
    fn with_manifest(edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let bytes = sample().to_bytes("test").expect("write");
        let mut zip = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
        let mut out = ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..zip.len() {
            let mut file = zip.by_index(i).expect("entry");
            let name = file.name().expect("entry name").to_string();
            let mut content = Vec::new();
            file.read_to_end(&mut content).expect("read");
            if name == MANIFEST {
                let mut json: serde_json::Value = serde_json::from_slice(&content).expect("json");
                edit(&mut json);
                content = serde_json::to_vec(&json).expect("json");
            }
            out.start_file(name, SimpleFileOptions::default())
                .expect("start");
            out.write_all(&content).expect("write");
        }
        out.finish().expect("finish").into_inner()
    }

    #[test]
    fn refuses_newer_versions_other_backbones_and_bad_shapes() {
        let newer = with_manifest(|m| m["format_version"] = 2.into());
        assert_eq!(
            ProjectArchive::from_bytes(&newer),
            Err(ProjectFileError::NewerVersion(2))
        );
        let other = with_manifest(|m| m["backbone"] = "resnet18".into());
        assert!(matches!(
            ProjectArchive::from_bytes(&other),
            Err(ProjectFileError::Incompatible { .. })
        ));
        let dim = with_manifest(|m| m["embedding_dim"] = 512.into());
        assert!(matches!(
            ProjectArchive::from_bytes(&dim),
            Err(ProjectFileError::Incompatible { .. })
        ));
        let class = with_manifest(|m| m["images"][1]["class"] = 5.into());
        let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&class) else {
            panic!("a class out of range must be refused");
        };
        assert!(message.contains("class 5"), "{message}");
        let extra = with_manifest(|m| {
            let mut third = m["images"][0].clone();
            third["thumbnail"] = false.into();
            m["images"].as_array_mut().expect("images").push(third);
        });
        let Err(ProjectFileError::Damaged(message)) = ProjectArchive::from_bytes(&extra) else {
            panic!("an embedding count mismatch must be refused");
        };
        assert!(message.contains("embeddings"), "{message}");
        let model = with_manifest(|m| m["has_model"] = true.into());
        assert_eq!(
            ProjectArchive::from_bytes(&model),
            Err(damaged("its model is missing"))
        );
    }

    #[test]
    fn refuses_non_finite_embeddings_and_inconsistent_projects() {
        let mut project = sample();
        project.images[1].embedding[3] = f32::NAN;
        let bytes = project.to_bytes("test").expect("write");
        assert!(matches!(
            ProjectArchive::from_bytes(&bytes),
            Err(ProjectFileError::Damaged(_))
        ));
        let mut project = sample();
        project.images[0].embedding.pop();
        assert!(matches!(
            project.to_bytes("test"),
            Err(ProjectFileError::Invalid(_))
        ));
    }

    #[test]
    fn entries_cannot_read_more_than_the_budget() {
        // A crafted file can point many entries at the same stored bytes; the reader's budget
        // (the file's size) caps what all entries together may read.
        let mut project = sample();
        let mut thumb = vec![0x11; 4000];
        thumb[..2].copy_from_slice(&[0xFF, 0xD8]);
        project.images[0].thumbnail = Some(thumb);
        let bytes = project.to_bytes("test").expect("write");
        let read = ProjectArchive::from_bytes(&bytes).expect("a normal file reads");
        assert_eq!(read.images[0].thumbnail, project.images[0].thumbnail);
        let mut budget = 100u64;
        let mut zip = ZipArchive::new(Cursor::new(bytes.as_slice())).expect("zip");
        let mut reader = Reader {
            zip: &mut zip,
            budget: &mut budget,
        };
        assert!(
            read_entry(&mut reader, &thumbnail_path(0), MAX_THUMBNAIL_BYTES).is_err(),
            "an entry larger than what is left of the budget is refused"
        );
    }

    #[test]
    fn truncated_files_are_refused_without_panicking() {
        let bytes = sample().to_bytes("test").expect("write");
        for cut in (0..bytes.len()).step_by(97) {
            let _ = ProjectArchive::from_bytes(&bytes[..cut]);
        }
        for i in (0..bytes.len()).step_by(61) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x5A;
            let _ = ProjectArchive::from_bytes(&flipped);
        }
    }
}
