//! The project kept in the browser's IndexedDB (through `rexie`), written as it changes, so
//! that a reload, a crashed tab or a lost GPU loses no labelled image and no trained model.
//!
//! Database `medtransfer`, two object stores:
//! - `images` (key: the image id): class key, original name, and either the original file's
//!   bytes (still waiting for its embedding) or its thumbnail, embedding, its augmented
//!   views' embeddings and its activations for fine-tuning (embedded; the original is then
//!   dropped);
//! - `meta` (keys below): the project's JSON ([`PROJECT_KEY`]) and the trained model file's
//!   bytes ([`MODEL_KEY`]).

use std::rc::Rc;

use js_sys::{Object, Reflect, Uint8Array};
use rexie::{ObjectStore, Rexie, Store, Transaction, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

use crate::protocol::{ACTIVATION_BYTES, EMBEDDING_BYTES, ImageId};

const DATABASE: &str = "medtransfer";
const IMAGES: &str = "images";
const META: &str = "meta";
/// `meta` key of the project's JSON (classes, settings, training results).
pub const PROJECT_KEY: &str = "project";
/// `meta` key of the trained model file's bytes.
pub const MODEL_KEY: &str = "model";

/// One stored image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageRecord {
    /// The image's id.
    pub id: ImageId,
    /// The key of its class.
    pub class_key: u32,
    /// Its original file name.
    pub name: String,
    /// The original file, while it has no embedding yet.
    pub original: Option<Vec<u8>>,
    /// Its JPEG thumbnail, once embedded.
    pub thumbnail: Option<Vec<u8>>,
    /// Its embedding as little-endian `f32` bytes, once embedded.
    pub embedding: Option<Vec<u8>>,
    /// Its augmented views' embeddings, one row of [`crate::protocol::EMBEDDING_BYTES`] each,
    /// when it has any.
    pub views: Option<Vec<u8>>,
    /// Its activations for fine-tuning ([`crate::protocol::ACTIVATION_BYTES`]), when it was
    /// embedded by a page that keeps them.
    pub activations: Option<Vec<u8>>,
}

impl ImageRecord {
    /// The bytes of its augmented views' whole rows (empty when it has none).
    pub fn view_rows(&self) -> &[u8] {
        let bytes = self.views.as_deref().unwrap_or_default();
        &bytes[..bytes.len() / EMBEDDING_BYTES * EMBEDDING_BYTES]
    }

    /// Whether it has whole activations for fine-tuning.
    pub fn has_activations(&self) -> bool {
        self.activations
            .as_ref()
            .is_some_and(|a| a.len() == ACTIVATION_BYTES)
    }

    /// Augmented views stored with it (whole rows only).
    pub fn view_count(&self) -> u32 {
        (self.view_rows().len() / EMBEDDING_BYTES) as u32
    }
}

/// The open database (cheap to clone).
#[derive(Clone)]
pub struct Storage {
    db: Rc<Rexie>,
}

fn message(error: impl std::fmt::Display) -> String {
    format!("the browser's storage failed: {error}")
}

/// Waits for a transaction to end and says whether it was committed: an aborted transaction
/// (the storage quota exceeded, the disk full, the tab closing) kept nothing, and is an error.
async fn finish(tx: Transaction) -> Result<(), String> {
    match tx.done().await.map_err(message)? {
        result if result.is_committed() => Ok(()),
        _ => Err(
            "the browser did not keep it: the write was aborted, most often because this \
             site's storage is full"
                .into(),
        ),
    }
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &key.into(), value);
}

fn bytes_field(object: &JsValue, key: &str) -> Option<Vec<u8>> {
    Reflect::get(object, &key.into())
        .ok()
        .and_then(|v| v.dyn_into::<Uint8Array>().ok())
        .map(|a| a.to_vec())
}

impl ImageRecord {
    fn to_js(&self) -> JsValue {
        let object = Object::new();
        set(&object, "id", &self.id.into());
        set(&object, "class", &self.class_key.into());
        set(&object, "name", &self.name.as_str().into());
        for (key, value) in [
            ("original", &self.original),
            ("thumbnail", &self.thumbnail),
            ("embedding", &self.embedding),
            ("views", &self.views),
            ("activations", &self.activations),
        ] {
            if let Some(bytes) = value {
                set(&object, key, &Uint8Array::from(bytes.as_slice()).into());
            }
        }
        object.into()
    }

    fn from_js(value: &JsValue) -> Option<Self> {
        let number = |key: &str| Reflect::get(value, &key.into()).ok()?.as_f64();
        Some(Self {
            id: number("id")? as ImageId,
            class_key: number("class")? as u32,
            name: Reflect::get(value, &"name".into()).ok()?.as_string()?,
            original: bytes_field(value, "original"),
            thumbnail: bytes_field(value, "thumbnail"),
            embedding: bytes_field(value, "embedding"),
            views: bytes_field(value, "views"),
            activations: bytes_field(value, "activations"),
        })
    }
}

impl Storage {
    /// A transaction on one object store, and the store.
    fn store(&self, name: &str, mode: TransactionMode) -> Result<(Transaction, Store), String> {
        let tx = self.db.transaction(&[name], mode).map_err(message)?;
        let store = tx.store(name).map_err(message)?;
        Ok((tx, store))
    }

    /// Opens (creating on first use) the project database.
    pub async fn open() -> Result<Self, String> {
        let db = Rexie::builder(DATABASE)
            .version(1)
            .add_object_store(ObjectStore::new(IMAGES).key_path("id"))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await
            .map_err(message)?;
        Ok(Self { db: Rc::new(db) })
    }

    /// Writes (or replaces) images.
    pub async fn put_images(&self, records: &[ImageRecord]) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let (tx, store) = self.store(IMAGES, TransactionMode::ReadWrite)?;
        // All requests are issued at once (polled together), not one round trip after another.
        let values: Vec<JsValue> = records.iter().map(ImageRecord::to_js).collect();
        let puts = values.iter().map(|value| store.put(value, None));
        for result in futures::future::join_all(puts).await {
            result.map_err(message)?;
        }
        finish(tx).await
    }

    /// Deletes images.
    pub async fn delete_images(&self, ids: &[ImageId]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let (tx, store) = self.store(IMAGES, TransactionMode::ReadWrite)?;
        for id in ids {
            store.delete(JsValue::from(*id)).await.map_err(message)?;
        }
        finish(tx).await
    }

    /// Every stored image, in id order.
    pub async fn images(&self) -> Result<Vec<ImageRecord>, String> {
        let (_tx, store) = self.store(IMAGES, TransactionMode::ReadOnly)?;
        let values = store.get_all(None, None).await.map_err(message)?;
        Ok(values.iter().filter_map(ImageRecord::from_js).collect())
    }

    /// Writes a `meta` value.
    pub async fn put_meta(&self, key: &str, value: &JsValue) -> Result<(), String> {
        let (tx, store) = self.store(META, TransactionMode::ReadWrite)?;
        store
            .put(value, Some(&JsValue::from_str(key)))
            .await
            .map_err(message)?;
        finish(tx).await
    }

    /// Deletes a `meta` value.
    pub async fn delete_meta(&self, key: &str) -> Result<(), String> {
        let (tx, store) = self.store(META, TransactionMode::ReadWrite)?;
        store
            .delete(JsValue::from_str(key))
            .await
            .map_err(message)?;
        finish(tx).await
    }

    /// Reads a `meta` value.
    pub async fn meta(&self, key: &str) -> Result<Option<JsValue>, String> {
        let (_tx, store) = self.store(META, TransactionMode::ReadOnly)?;
        store.get(JsValue::from_str(key)).await.map_err(message)
    }

    /// Reads the model file's bytes, when one is stored.
    pub async fn model(&self) -> Result<Option<Vec<u8>>, String> {
        Ok(self
            .meta(MODEL_KEY)
            .await?
            .and_then(|v| v.dyn_into::<Uint8Array>().ok())
            .map(|a| a.to_vec()))
    }

    /// Replaces the whole project (an import) in one transaction over both stores: either the
    /// new project is stored completely, or (quota exceeded, tab closed, any failure) the
    /// transaction aborts and the old project is left exactly as it was.
    ///
    /// # Errors
    /// A request failed or the transaction was aborted (nothing was changed then).
    pub async fn replace_project(
        &self,
        records: &[ImageRecord],
        project_json: &str,
        model: Option<&[u8]>,
    ) -> Result<(), String> {
        let tx = self
            .db
            .transaction(&[IMAGES, META], TransactionMode::ReadWrite)
            .map_err(message)?;
        let written = async {
            let images = tx.store(IMAGES).map_err(message)?;
            let meta = tx.store(META).map_err(message)?;
            images.clear().await.map_err(message)?;
            meta.clear().await.map_err(message)?;
            let values: Vec<JsValue> = records.iter().map(ImageRecord::to_js).collect();
            let puts = values.iter().map(|value| images.put(value, None));
            for result in futures::future::join_all(puts).await {
                result.map_err(message)?;
            }
            meta.put(
                &JsValue::from_str(project_json),
                Some(&JsValue::from_str(PROJECT_KEY)),
            )
            .await
            .map_err(message)?;
            if let Some(model) = model {
                meta.put(
                    &Uint8Array::from(model).into(),
                    Some(&JsValue::from_str(MODEL_KEY)),
                )
                .await
                .map_err(message)?;
            }
            Ok::<(), String>(())
        }
        .await;
        match written {
            // A transaction commits by itself once its requests are done: after a failed
            // request it must be aborted explicitly, so that nothing of it is kept.
            Err(error) => {
                let _ = tx.abort().await;
                Err(error)
            }
            Ok(()) => finish(tx).await,
        }
    }
}

/// `navigator.storage`, when the browser has it (the Storage API).
fn storage_manager() -> Option<JsValue> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    Reflect::get(&navigator, &"storage".into())
        .ok()
        .filter(|m| !m.is_undefined() && !m.is_null())
}

/// Calls `navigator.storage[method]()` and awaits its promise.
async fn call_storage_manager(method: &str) -> Option<JsValue> {
    let manager = storage_manager()?;
    let function = Reflect::get(&manager, &method.into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let promise = function
        .call0(&manager)
        .ok()?
        .dyn_into::<js_sys::Promise>()
        .ok()?;
    wasm_bindgen_futures::JsFuture::from(promise).await.ok()
}

/// Asks the browser to keep this site's storage under storage pressure
/// (`navigator.storage.persist()`, Storage Standard §5); `Some(granted)`, or `None` when the
/// browser has no Storage API.
pub async fn request_persistence() -> Option<bool> {
    call_storage_manager("persist").await?.as_bool()
}

/// `(bytes used, quota in bytes)` of this site's storage (`navigator.storage.estimate()`), or
/// `None` when the browser does not say.
pub async fn usage_and_quota() -> Option<(f64, f64)> {
    let estimate = call_storage_manager("estimate").await?;
    let number = |key: &str| Reflect::get(&estimate, &key.into()).ok()?.as_f64();
    Some((number("usage")?, number("quota")?))
}
