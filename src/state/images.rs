//! Classes and their images: adding files (picked, dropped, whole folders), removing images and
//! classes, and images the worker could not use.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::dataset_folder::{class_name, is_os_junk, layout_of_drop};

use super::{ClassEntry, ImageEntry, ImageStatus, NoticeKind, Ownership, Project};
use crate::dom::{read_file, revoke_url};
use crate::protocol::{Envelope, ImageId, ToWorker};
use crate::storage::ImageRecord;

/// The augmented views per image the page offers (0: none); each is one more forward pass
/// per image added.
pub const AUGMENTED_VIEW_CHOICES: [u32; 4] = [0, 2, 4, 8];

/// The largest offered view count not above `n` (a saved or imported count the page does not
/// offer would otherwise be used while the page shows another).
/// The fine-tuning depths the page offers: the head alone, the last two blocks, the last two
/// stages, the last three stages.
pub const TRAIN_BLOCK_CHOICES: [usize; 4] = [0, 2, 5, 8];

/// `n` snapped to the largest offered fine-tuning depth not above it (a saved or imported
/// setting).
pub fn offered_train_blocks(n: u64) -> usize {
    TRAIN_BLOCK_CHOICES
        .iter()
        .copied()
        .filter(|&c| c as u64 <= n)
        .max()
        .unwrap_or(0)
}

pub fn offered_views(n: u32) -> u32 {
    AUGMENTED_VIEW_CHOICES
        .into_iter()
        .filter(|&c| c <= n)
        .max()
        .unwrap_or(0)
}

impl Project {
    /// Adds a class named "Class N" at the end.
    pub fn add_class(self) {
        let key = self.next_id();
        let n = self.classes.with_untracked(Vec::len) + 1;
        self.classes
            .update(|c| c.push(ClassEntry::new(key, format!("Class {n}"))));
    }

    /// Removes a class and its images (the page asks the user first); at least two classes
    /// stay.
    pub fn remove_class(self, class: ClassEntry) {
        if self.classes.with_untracked(Vec::len) <= 2 {
            return;
        }
        for image in class.images.get_untracked() {
            self.remove_image(class, image.id);
        }
        self.classes.update(|c| c.retain(|x| x.key != class.key));
    }

    /// Adds files to a class: each is listed at once, saved, and queued for the worker, whose
    /// embedding brings its thumbnail.
    pub fn add_files(self, class: ClassEntry, files: Vec<web_sys::File>) {
        if self.ownership.get_untracked() != Ownership::Here {
            self.tell(
                NoticeKind::Error,
                "This project is open in another tab: add the images there, or use it here first.",
            );
            return;
        }
        if !self.restored.get_untracked() {
            self.tell(
                NoticeKind::Error,
                "Wait a moment: the project is still being loaded; add the images again then.",
            );
            return;
        }
        if self.embed_started.get_untracked().is_none() {
            self.embed_started.set(Some(js_sys::Date::now()));
        }
        // One list update for the whole pick (a thousand single updates would re-render a
        // thousand times). OS junk (`.DS_Store`, `._*`, `Thumbs.db`…) picked or dropped with
        // the images is ignored silently, as in a picked folder.
        let entries: Vec<(ImageEntry, web_sys::File)> = files
            .into_iter()
            .filter(|file| !is_os_junk(&file.name()))
            .map(|file| {
                let entry = ImageEntry {
                    id: self.next_id(),
                    name: file.name(),
                    thumb: None,
                    status: ImageStatus::Embedding,
                    views: 0,
                    activations: false,
                };
                (entry, file)
            })
            .collect();
        class
            .images
            .update(|images| images.extend(entries.iter().map(|(e, _)| e.clone())));
        // Read, save and queue the files one after another in a single task: each read yields
        // to the event loop, so the page stays responsive however many files were picked. The
        // original is saved until its embedding arrives, so a reload loses nothing.
        let class_key = class.key;
        let generation = self.generation.get_value();
        spawn_local(async move {
            for (entry, file) in entries {
                if self.generation.get_value() != generation {
                    return;
                }
                let bytes = read_file(&file).await;
                let record = ImageRecord {
                    id: entry.id,
                    class_key,
                    name: entry.name.clone(),
                    original: Some(bytes.clone()),
                    thumbnail: None,
                    embedding: None,
                    views: None,
                    activations: None,
                };
                self.store_images(&entry.name, vec![record]).await;
                // The project may have been replaced, or the image removed, while it was read.
                if self.generation.get_value() != generation {
                    return;
                }
                let present = class
                    .images
                    .with_untracked(|i| i.iter().any(|i| i.id == entry.id));
                if present {
                    // A worker restarted meanwhile may have it from storage already: the queue
                    // never sends an image twice.
                    self.embed(entry.id, bytes);
                } else {
                    self.store(&entry.name, move |s| async move {
                        s.delete_images(&[entry.id]).await
                    });
                }
            }
        });
    }

    /// Adds the files of a picked or dropped folder, by their paths from the folder's own name
    /// (`dataset/normal/a.png`), laid out by core's one rule
    /// ([`medtransfer_core::dataset_folder::layout_of_drop`]: OS junk ignored, each sub-folder a
    /// class, nested folders in their class, names compared in NFC): into the class of that name
    /// if there is one, else into a new class; the untouched starting classes are replaced by
    /// the first folders.
    pub fn add_folder_files(self, files: Vec<(String, web_sys::File)>) {
        let layout = layout_of_drop(files);
        let mut groups: Vec<Vec<web_sys::File>> = vec![Vec::new(); layout.classes.len()];
        for file in layout.files {
            groups[file.class].push(file.item);
        }
        for (name, files) in layout.classes.into_iter().zip(groups) {
            let classes = self.classes.get_untracked();
            let existing = classes
                .iter()
                .find(|c| class_name(&c.name.get_untracked()) == name)
                .copied();
            let untouched = classes.iter().find(|c| {
                c.images.with_untracked(Vec::is_empty)
                    && c.rejected.with_untracked(Vec::is_empty)
                    && c.name.get_untracked().starts_with("Class ")
            });
            let class = match (existing, untouched) {
                (Some(class), _) => class,
                (None, Some(class)) => {
                    class.name.set(name);
                    *class
                }
                (None, None) => {
                    let class = ClassEntry::new(self.next_id(), name);
                    self.classes.update(|c| c.push(class));
                    class
                }
            };
            self.add_files(class, files);
        }
    }

    /// Removes one image from its class, the worker and storage.
    pub fn remove_image(self, class: ClassEntry, id: ImageId) {
        class.images.update(|images| {
            if let Some(pos) = images.iter().position(|i| i.id == id) {
                let image = images.remove(pos);
                if let Some(url) = &image.thumb {
                    revoke_url(url);
                }
            }
        });
        self.embeds.update_value(|q| q.forget(id));
        self.unsaved_images
            .update_value(|kept| kept.retain(|r| r.id != id));
        self.send(Envelope::new(ToWorker::Forget { id }));
        self.store("the removal of an image", move |s| async move {
            s.delete_images(&[id]).await
        });
    }

    /// The class holding image `id` and the image, while it is in the project.
    pub(crate) fn find_image(self, id: ImageId) -> Option<(ClassEntry, ImageEntry)> {
        self.classes.get_untracked().into_iter().find_map(|class| {
            class
                .images
                .with_untracked(|images| images.iter().find(|i| i.id == id).cloned())
                .map(|entry| (class, entry))
        })
    }

    /// Takes an image out of its class and lists it as rejected, with the reason; forgets its
    /// saved copy.
    pub(crate) fn reject_image(self, id: ImageId, reason: String) {
        let Some((class, entry)) = self.find_image(id) else {
            return;
        };
        class.images.update(|images| images.retain(|i| i.id != id));
        class
            .rejected
            .update(|r| r.push((entry.name.clone(), reason)));
        if let Some(url) = entry.thumb {
            revoke_url(&url);
        }
        self.embeds.update_value(|q| q.forget(id));
        self.store(
            &entry.name,
            move |s| async move { s.delete_images(&[id]).await },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_the_page_does_not_offer_becomes_the_next_lower_one() {
        assert_eq!(offered_views(0), 0);
        assert_eq!(offered_views(1), 0);
        assert_eq!(offered_views(2), 2);
        assert_eq!(offered_views(5), 4);
        assert_eq!(offered_views(64), 8);
        assert_eq!(offered_views(u32::MAX), 8);
        assert_eq!(offered_train_blocks(0), 0);
        assert_eq!(offered_train_blocks(1), 0);
        assert_eq!(offered_train_blocks(4), 2);
        assert_eq!(offered_train_blocks(99), 8);
    }
}
