//! Reading a folder-per-class image set from disk, and the on-disk embedding cache.

use std::fs;
use std::path::{Path, PathBuf};

use medtransfer_core::embeddings::{
    EmbeddingStore, decode_embedding, encode_embedding, key_file_name,
};

/// One image file and its class.
#[derive(Clone, Debug)]
pub struct LabelledFile {
    /// Where it is.
    pub path: PathBuf,
    /// Index into the class list.
    pub label: usize,
}

/// A folder whose sub-folders are the classes (sorted by name), each holding images (nested
/// folders are walked; hidden files are skipped). Files are listed whatever their name or
/// extension — `.png`, `.jpg`, `.tif`, `.dcm`, `.dicom`, or DICOM files without one — because
/// the format is recognised from the content when the file is decoded
/// ([`medtransfer_core::formats`]); a file that is not a supported image is reported and
/// skipped then.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    /// Class names: the sub-folder names, sorted.
    pub classes: Vec<String>,
    /// Every file, class by class, each class's files sorted by path.
    pub files: Vec<LabelledFile>,
}

impl FolderDataset {
    /// Lists `root`. Errors (with a message saying what is expected) when it is not a folder or
    /// has no sub-folder.
    pub fn open(root: &Path) -> Result<Self, String> {
        let entries = fs::read_dir(root)
            .map_err(|e| format!("cannot read the folder {}: {e}", root.display()))?;
        let mut class_dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (!name.starts_with('.')).then(|| (name, e.path()))
            })
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(format!(
                "{} has no sub-folders: put each class's images in its own sub-folder \
                 (e.g. {0}/NORMAL/*.jpeg, {0}/PNEUMONIA/*.jpeg)",
                root.display()
            ));
        }
        let mut files = Vec::new();
        let mut classes = Vec::new();
        for (label, (name, dir)) in class_dirs.into_iter().enumerate() {
            let mut paths = Vec::new();
            walk_files(&dir, &mut paths);
            paths.sort();
            files.extend(paths.into_iter().map(|path| LabelledFile { path, label }));
            classes.push(name);
        }
        Ok(Self { classes, files })
    }

    /// Number of files per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for f in &self.files {
            counts[f.label] += 1;
        }
        counts
    }
}

/// Every non-hidden regular file under `dir`, recursively.
pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk_files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
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
        let name = key_file_name(key);
        self.dir.join(&name[..2]).join(format!("{name}.f32"))
    }
}

impl EmbeddingStore for DiskEmbeddingStore {
    fn get(&mut self, key: &str) -> Option<Vec<f32>> {
        fs::read(self.path(key))
            .ok()
            .and_then(|b| decode_embedding(&b))
    }

    fn put(&mut self, key: &str, embedding: &[f32]) {
        let path = self.path(key);
        let Some(parent) = path.parent() else {
            return;
        };
        if fs::create_dir_all(parent).is_err() {
            return;
        }
        // Write then rename, so a crash never leaves a half-written entry under the real name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, encode_embedding(embedding)).is_ok() && fs::rename(&tmp, &path).is_err()
        {
            let _ = fs::remove_file(&tmp);
        }
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
        assert_eq!(data.counts(), vec![4, 3]);
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
