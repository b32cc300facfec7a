//! What a data-set folder means: which of its entries are left out as operating-system junk,
//! which folders are the classes, and which class each file belongs to. One rule for the CLI
//! (`--data DIR`) and the page (a picked or dropped folder), so both see the same classes.
//!
//! - **OS junk is ignored silently** ([`is_os_junk`]): macOS's `__MACOSX/` trees, AppleDouble
//!   `._*` sidecars and `.DS_Store`, Windows' `Thumbs.db` and `desktop.ini`, recycle bins, and
//!   any hidden (dot) file or folder. They never become a class or a failed image.
//! - **Each top-level sub-folder is a class**; files in nested folders belong to their
//!   top-level folder's class (`normal/subset_b/img.png` is in `normal`); files lying loose
//!   next to the class folders (a `README.txt`) belong to no class and are ignored.
//! - **Class names are compared in Unicode NFC** ([`class_name`]): `café` written by macOS
//!   (NFD, decomposed) and by Windows or Linux (NFC) is one class, named in NFC.
//! - Every other file is listed, whatever its name or extension (upper case, none at all for
//!   DICOM): the decoder ([`crate::formats`]) recognises formats from the content and reports a
//!   file that is not an image (empty, a PDF, …) with its own message.
//!
//! Where the rules come from: torchvision's `ImageFolder` made `.DS_Store` a class
//! (pytorch/vision#109), macOS `._` files broke training (python-pillow/Pillow#4807), and
//! NFD names from macOS made look-alike classes; see `../shared/cases/16-folder-junk-layout`.

use unicode_normalization::UnicodeNormalization;

/// Whether a file or folder name is something an operating system, archiver or file manager
/// leaves behind rather than data: a hidden name (starting with `.`, which covers `._*`
/// AppleDouble sidecars, `.DS_Store`, `.Spotlight-V100`, `.Trashes`, `.fseventsd`), macOS's
/// `__MACOSX` archive folder and `Icon\r` custom-icon files, Windows' `Thumbs.db`,
/// `ehthumbs.db`, `desktop.ini`, `$RECYCLE.BIN` and `System Volume Information`. Case is
/// ignored for the Windows names (Windows ignores it too).
pub fn is_os_junk(name: &str) -> bool {
    const WINDOWS: [&str; 5] = [
        "thumbs.db",
        "ehthumbs.db",
        "desktop.ini",
        "$recycle.bin",
        "system volume information",
    ];
    name.starts_with('.')
        || name == "__MACOSX"
        || name == "Icon\r"
        || WINDOWS.iter().any(|w| name.eq_ignore_ascii_case(w))
}

/// The class a folder name stands for: the name in Unicode Normalization Form C (composed), with
/// surrounding white space removed, so that names that differ only in normalisation (macOS
/// writes `café` decomposed) are one class. Unicode Standard Annex #15.
pub fn class_name(folder: &str) -> String {
    folder.trim().nfc().collect()
}

/// One file of a data set, placed in its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderFile<T> {
    /// Index into [`FolderLayout::classes`].
    pub class: usize,
    /// Its path inside its class folder, `/`-separated (`subset_b/img_009.png`).
    pub path_in_class: String,
    /// Whatever the caller attached to it (a file system path, a browser `File`).
    pub item: T,
}

/// The classes of a data-set folder and the files in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderLayout<T> {
    /// Class names ([`class_name`]), sorted, without duplicates.
    pub classes: Vec<String>,
    /// Every file that belongs to a class, class by class, each class's files sorted by path.
    pub files: Vec<FolderFile<T>>,
}

impl<T> FolderLayout<T> {
    /// Number of files per class, in [`FolderLayout::classes`] order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for file in &self.files {
            counts[file.class] += 1;
        }
        counts
    }
}

/// Lays out a data-set folder from its files' paths inside it (`/`- or `\`-separated,
/// `normal/subset_b/img.png`), by the module's rules: junk anywhere in a path drops the file;
/// the first component is the class; a file without one (loose at the top) is dropped.
pub fn layout_of_folder<T>(entries: impl IntoIterator<Item = (String, T)>) -> FolderLayout<T> {
    let mut placed: Vec<(String, String, T)> = Vec::new();
    for (path, item) in entries {
        if let Some(parts) = inside_a_folder(&path) {
            placed.push((class_name(parts[0]), parts[1..].join("/"), item));
        }
    }
    arrange(placed)
}

/// Lays out what was dropped or picked in a browser: paths start with the dropped folder's own
/// name (`dataset/normal/img.png`, as `webkitRelativePath` and `FileSystemEntry.fullPath`
/// give them; a leading `/` is ignored). Each dropped folder is laid out by
/// [`layout_of_folder`] when it has class sub-folders; a folder of loose images, without any,
/// is one class named after the folder. Loose files dropped on their own (no folder) and junk
/// are dropped. Several folders dropped at once give the union of their classes (same names
/// merge).
pub fn layout_of_drop<T>(entries: impl IntoIterator<Item = (String, T)>) -> FolderLayout<T> {
    // (root, path inside root, item), junk removed; roots in first-seen order.
    let mut by_root: Vec<(String, RootFiles<T>)> = Vec::new();
    for (path, item) in entries {
        let Some(parts) = inside_a_folder(&path) else {
            continue;
        };
        let rest: Vec<String> = parts[1..].iter().map(|p| p.to_string()).collect();
        match by_root.iter_mut().find(|(root, _)| root == parts[0]) {
            Some((_, files)) => files.push((rest, item)),
            None => by_root.push((parts[0].to_string(), vec![(rest, item)])),
        }
    }
    let mut placed = Vec::new();
    for (root, files) in by_root {
        let has_classes = files.iter().any(|(rest, _)| rest.len() >= 2);
        for (rest, item) in files {
            if has_classes {
                if rest.len() >= 2 {
                    placed.push((class_name(&rest[0]), rest[1..].join("/"), item));
                }
            } else {
                placed.push((class_name(&root), rest.join("/"), item));
            }
        }
    }
    arrange(placed)
}

/// The files of one dropped folder: each one's path inside it, and its item.
type RootFiles<T> = Vec<(Vec<String>, T)>;

/// A path's non-empty components (split at `/` and `\`) when it lies inside a folder (two
/// components at least) and no component is OS junk.
fn inside_a_folder(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    (parts.len() >= 2 && !parts.iter().any(|p| is_os_junk(p))).then_some(parts)
}

/// Sorts (class, path in class, item) into a layout: classes by name, files by path.
fn arrange<T>(mut placed: Vec<(String, String, T)>) -> FolderLayout<T> {
    placed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut classes: Vec<String> = Vec::new();
    let files = placed
        .into_iter()
        .map(|(class, path_in_class, item)| {
            if classes.last() != Some(&class) {
                classes.push(class);
            }
            FolderFile {
                class: classes.len() - 1,
                path_in_class,
                item,
            }
        })
        .collect();
    FolderLayout { classes, files }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file list of `../shared/cases/16-folder-junk-layout/dataset` (links as files).
    const CASE_16: [&str; 24] = [
        ".DS_Store",
        "README.txt",
        "Thumbs.db",
        "desktop.ini",
        "__MACOSX/normal/._img_001.png",
        "__MACOSX/pneumonia/._img_101.png",
        "normal/.DS_Store",
        "normal/._img_001.png",
        "normal/IMG_003.JPG",
        "normal/IM000006",
        "normal/Thumbs.db",
        "normal/ct_005.DCM",
        "normal/empty_008.png",
        "normal/img_001.png",
        "normal/img_002.PNG",
        "normal/scan 004 (copy).png",
        "normal/subset_b/img_009.png",
        "pneumonia/._img_101.png",
        "pneumonia/img_101.png",
        "pneumonia/img_102.jpeg",
        "pneumonia/img_105.tif",
        "pneumonia/notes.pdf",
        "pneumonia/영상_104.png",
        "pneumonia/ünïcödé_103.png",
    ];

    fn names<T>(layout: &FolderLayout<T>, class: usize) -> Vec<&str> {
        layout
            .files
            .iter()
            .filter(|f| f.class == class)
            .map(|f| f.path_in_class.as_str())
            .collect()
    }

    #[test]
    fn junk_is_never_a_class_or_a_file() {
        for name in [
            ".DS_Store",
            "._img_001.png",
            "__MACOSX",
            "Thumbs.db",
            "THUMBS.DB",
            "desktop.ini",
            "Desktop.ini",
            "$RECYCLE.BIN",
            "System Volume Information",
            ".Spotlight-V100",
            "Icon\r",
            ".hidden",
        ] {
            assert!(is_os_junk(name), "{name:?} is junk");
        }
        for name in [
            "img.png",
            "IM000006",
            "normal",
            "Icon.png",
            "thumbs.db.png",
            "MACOSX",
        ] {
            assert!(!is_os_junk(name), "{name:?} is data");
        }
        let layout = layout_of_folder(CASE_16.iter().map(|p| (p.to_string(), ())));
        assert_eq!(layout.classes, ["normal", "pneumonia"]);
        assert_eq!(
            names(&layout, 0),
            [
                "IM000006",
                "IMG_003.JPG",
                "ct_005.DCM",
                "empty_008.png",
                "img_001.png",
                "img_002.PNG",
                "scan 004 (copy).png",
                "subset_b/img_009.png"
            ]
        );
        assert_eq!(
            names(&layout, 1),
            [
                "img_101.png",
                "img_102.jpeg",
                "img_105.tif",
                "notes.pdf",
                "ünïcödé_103.png",
                "영상_104.png"
            ]
        );
        assert_eq!(layout.counts(), [8, 6]);
    }

    #[test]
    fn a_dropped_folder_gives_the_same_classes() {
        let dropped = CASE_16.iter().map(|p| (format!("/dataset/{p}"), *p));
        let drop = layout_of_drop(dropped);
        let folder = layout_of_folder(CASE_16.iter().map(|p| (p.to_string(), *p)));
        assert_eq!(drop, folder);
        // A folder of loose images is one class named after it; junk stays out.
        let loose = layout_of_drop(
            [
                "xrays/a.png",
                "xrays/b.png",
                "xrays/.DS_Store",
                "xrays/Thumbs.db",
                "c.png",
            ]
            .map(|p| (p.to_string(), ())),
        );
        assert_eq!(loose.classes, ["xrays"]);
        assert_eq!(names(&loose, 0), ["a.png", "b.png"]);
        // Two folders dropped at once: the union of their classes, same names merged.
        let two = layout_of_drop(
            [
                "train/NORMAL/a.png",
                "train/PNEUMONIA/b.png",
                "more/NORMAL/c.png",
                "more/README.txt",
            ]
            .map(|p| (p.to_string(), ())),
        );
        assert_eq!(two.classes, ["NORMAL", "PNEUMONIA"]);
        assert_eq!(two.counts(), [2, 1]);
    }

    #[test]
    fn names_that_differ_only_in_normalisation_are_one_class() {
        let nfc = "caf\u{e9}";
        let nfd = "cafe\u{301}";
        assert_ne!(nfc, nfd);
        assert_eq!(class_name(nfd), nfc);
        assert_eq!(class_name(" cafe "), "cafe");
        let layout = layout_of_folder(
            [
                format!("{nfc}/1.png"),
                format!("{nfd}/2.png"),
                "cafe/3.png".to_string(),
            ]
            .map(|p| (p, ())),
        );
        assert_eq!(layout.classes, ["cafe", nfc]);
        assert_eq!(layout.counts(), [1, 2]);
        assert_eq!(names(&layout, 1), ["1.png", "2.png"]);
        // Windows separators too.
        let layout = layout_of_folder([("normal\\deep\\a.png".to_string(), ())]);
        assert_eq!(names(&layout, 0), ["deep/a.png"]);
    }
}
