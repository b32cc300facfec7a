//! Reading a folder-per-class image set from disk, and the on-disk embedding cache.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use medtransfer_core::dataset_folder::{is_os_junk, layout_of_folder};
use medtransfer_core::embeddings::{
    EmbeddingStore, decode_embedding, encode_embedding, key_file_name,
};
use medtransfer_core::finetune::CutFeatureStore;

/// One image file and its class.
#[derive(Clone, Debug)]
pub struct LabelledFile {
    /// Where it is.
    pub path: PathBuf,
    /// Index into the class list.
    pub label: usize,
    /// Where it is inside its class folder (`subset_b/img_009.png`), as on disk.
    pub in_class: PathBuf,
}

/// A file of the folder that is not used, and why (shown to the user; OS junk is not listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Why it is not used.
    pub reason: String,
}

/// A folder whose sub-folders are the classes, read by the one rule of
/// [`medtransfer_core::dataset_folder`]: operating-system junk (`__MACOSX/`, `._*`,
/// `.DS_Store`, `Thumbs.db`, `desktop.ini`, hidden files) is ignored silently, nested folders
/// belong to their class, loose files next to the class folders are ignored, and class names
/// are compared in Unicode NFC. Files are listed whatever their name or extension, because the
/// format is recognised from the content when the file is decoded
/// ([`medtransfer_core::formats`]); a file that is not a supported image is reported then.
/// Symbolic links are followed; a dangling link, or a link to a file that is already listed,
/// is skipped with a reason.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    /// Class names: the sub-folder names in NFC, sorted.
    pub classes: Vec<String>,
    /// Every file, class by class, each class's files sorted by path.
    pub files: Vec<LabelledFile>,
    /// Files left out with a reason (dangling or duplicate links), sorted by path.
    pub skipped: Vec<SkippedFile>,
}

impl FolderDataset {
    /// Lists `root`. Errors (with a message saying what is expected) when it is not a folder or
    /// has no class sub-folder with a file in it.
    pub fn open(root: &Path) -> Result<Self, String> {
        if !root.is_dir() {
            return Err(format!(
                "cannot read the folder {}: {}",
                root.display(),
                match fs::metadata(root) {
                    Ok(_) => "it is not a folder".to_string(),
                    Err(e) => e.to_string(),
                }
            ));
        }
        let walk = walk_tree(root);
        let entries = walk.files.into_iter().map(|(parts, path)| {
            let in_class: PathBuf = parts.iter().skip(1).collect();
            let label = parts
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            (label, (path, in_class))
        });
        let layout = layout_of_folder(entries);
        if layout.classes.is_empty() {
            return Err(format!(
                "{} has no sub-folders with files: put each class's images in its own sub-folder \
                 (e.g. {0}/NORMAL/*.jpeg, {0}/PNEUMONIA/*.jpeg)",
                root.display()
            ));
        }
        let files = layout
            .files
            .into_iter()
            .map(|f| LabelledFile {
                path: f.item.0,
                label: f.class,
                in_class: f.item.1,
            })
            .collect();
        Ok(Self {
            classes: layout.classes,
            files,
            skipped: walk.skipped,
        })
    }
}

/// What [`walk_tree`] found.
#[derive(Default)]
pub struct Walk {
    /// Each file's path components below the root (as on disk) and its full path.
    pub files: Vec<(Vec<OsString>, PathBuf)>,
    /// Dangling links and links to files already listed.
    pub skipped: Vec<SkippedFile>,
}

/// Every file under `root`, recursively, except OS junk
/// ([`medtransfer_core::dataset_folder::is_os_junk`]). Symbolic links are followed (a link to a
/// folder already walked, e.g. a loop, is not walked again); a dangling link, and a link to a
/// file that is listed through another path, is skipped with a reason. Sorted by path.
pub fn walk_tree(root: &Path) -> Walk {
    let mut walk = Walk::default();
    let mut links = Vec::new();
    let mut seen_dirs = HashSet::new();
    if let Ok(dir) = fs::canonicalize(root) {
        seen_dirs.insert(dir);
    }
    walk_dir(root, &mut Vec::new(), &mut walk, &mut links, &mut seen_dirs);
    // Links last, so a link is the one left out when it points at a listed file (the files'
    // real paths are only looked up when there are links).
    let mut seen_files: HashSet<PathBuf> = if links.is_empty() {
        HashSet::new()
    } else {
        walk.files
            .iter()
            .filter_map(|(_, path)| fs::canonicalize(path).ok())
            .collect()
    };
    links.sort();
    for (parts, path) in links {
        match fs::canonicalize(&path) {
            Ok(target) if !seen_files.insert(target.clone()) => walk.skipped.push(SkippedFile {
                reason: format!("a link to {}, which is already included", target.display()),
                path,
            }),
            _ => walk.files.push((parts, path)),
        }
    }
    walk.files.sort();
    walk.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    walk
}

fn walk_dir(
    dir: &Path,
    parts: &mut Vec<OsString>,
    walk: &mut Walk,
    links: &mut Vec<(Vec<OsString>, PathBuf)>,
    seen_dirs: &mut HashSet<PathBuf>,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if is_os_junk(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let Ok(meta) = fs::metadata(&path) else {
            if is_link {
                let target = fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                walk.skipped.push(SkippedFile {
                    path,
                    reason: format!("a dangling link: its target {target} does not exist"),
                });
            }
            continue;
        };
        parts.push(name);
        if meta.is_dir() {
            if fs::canonicalize(&path).is_ok_and(|real| seen_dirs.insert(real)) {
                walk_dir(&path, parts, walk, links, seen_dirs);
            }
        } else if meta.is_file() {
            let found = (parts.clone(), path);
            if is_link {
                links.push(found);
            } else {
                walk.files.push(found);
            }
        }
        parts.pop();
    }
}

/// Embeddings cached as one small file each under a folder (safe to delete at any time).
pub struct DiskEmbeddingStore {
    dir: PathBuf,
}

impl DiskEmbeddingStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.path_with(key, "f32")
    }

    fn path_with(&self, key: &str, extension: &str) -> PathBuf {
        let name = key_file_name(key);
        self.dir
            .join(&name[..2])
            .join(format!("{name}.{extension}"))
    }

    /// Writes `bytes` under `path`: to a temporary name, then renamed, so a crash never leaves
    /// a half-written entry under the real name (a failure only means it is computed again).
    fn write(path: &Path, bytes: &[u8]) {
        let Some(parent) = path.parent() else {
            return;
        };
        if fs::create_dir_all(parent).is_err() {
            return;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, bytes).is_ok() && fs::rename(&tmp, path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Cut-point activations for fine-tuning beside the embeddings, as `.f16` files.
impl CutFeatureStore for DiskEmbeddingStore {
    fn get_cut(&mut self, key: &str) -> Option<Vec<u8>> {
        fs::read(self.path_with(key, "f16")).ok()
    }

    fn put_cut(&mut self, key: &str, bytes: &[u8]) {
        Self::write(&self.path_with(key, "f16"), bytes);
    }
}

impl EmbeddingStore for DiskEmbeddingStore {
    fn get(&mut self, key: &str) -> Option<Vec<f32>> {
        fs::read(self.path(key))
            .ok()
            .and_then(|b| decode_embedding(&b))
    }

    fn put(&mut self, key: &str, embedding: &[f32]) {
        Self::write(&self.path(key), &encode_embedding(embedding));
    }
}

/// The default cache folder: `$MEDTRANSFER_CACHE`, else `$XDG_CACHE_HOME/medtransfer/embeddings`,
/// else `~/.cache/medtransfer/embeddings`, else a folder in the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MEDTRANSFER_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("medtransfer").join("embeddings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_classes_and_files_and_caches_embeddings() {
        let root = std::env::temp_dir().join(format!("mt-dataset-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (class, files) in [
            ("b", vec!["2.png", "1.png", ".hidden"]),
            ("a", vec!["x.jpg", "scan.dcm", "slice.tiff", "IM0001"]),
        ] {
            let dir = root.join(class);
            fs::create_dir_all(dir.join("nested")).expect("mkdir");
            for f in files {
                fs::write(dir.join(f), b"x").expect("write");
            }
        }
        fs::write(root.join("b/nested/3.png"), b"x").expect("write");
        let data = FolderDataset::open(&root).expect("opens");
        assert_eq!(data.classes, vec!["a", "b"]);
        let counts: Vec<usize> = (0..2)
            .map(|c| data.files.iter().filter(|f| f.label == c).count())
            .collect();
        assert_eq!(counts, vec![4, 3]);
        let names: Vec<String> = data
            .files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "a/IM0001",
                "a/scan.dcm",
                "a/slice.tiff",
                "a/x.jpg",
                "b/1.png",
                "b/2.png",
                "b/nested/3.png"
            ]
        );
        assert!(FolderDataset::open(&root.join("b/nested")).is_err());
        assert!(FolderDataset::open(&root.join("missing")).is_err());

        let mut store = DiskEmbeddingStore::new(root.join("cache"));
        assert_eq!(store.get("k"), None);
        let e = vec![0.5f32; medtransfer_core::efficientnet::EMBEDDING_DIM];
        store.put("k", &e);
        assert_eq!(store.get("k"), Some(e));
        // A damaged entry is ignored (and recomputed by the caller).
        fs::write(store.path("k"), b"short").expect("write");
        assert_eq!(store.get("k"), None);
        let _ = fs::remove_dir_all(&root);
    }
}
