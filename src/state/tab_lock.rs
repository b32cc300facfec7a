//! One tab owns the project at a time, through the Web Locks API (W3C Web Locks, `navigator.locks`):
//! a second tab of the same browser sees that the project is open elsewhere and may take it
//! over; the first then stops saving. Without the API (old browsers) every tab owns it.

use js_sys::{Function, Object, Promise, Reflect};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::{NoticeKind, Project};

/// The lock's name (one project per browser profile).
const LOCK: &str = "medtransfer-project";

/// Who has the project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Not known yet.
    Checking,
    /// This tab: it shows and saves the project.
    Here,
    /// Another tab has it open; this one waits (nothing shown, nothing saved).
    Elsewhere,
    /// Another tab took it over: this one no longer saves.
    TakenOver,
}

/// `navigator.locks.request` bound to `navigator.locks`, when the browser has it.
fn lock_request() -> Option<(JsValue, Function)> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?;
    if locks.is_undefined() || locks.is_null() {
        return None;
    }
    let request = Reflect::get(&locks, &"request".into())
        .ok()?
        .dyn_into()
        .ok()?;
    Some((locks, request))
}

/// Asks for the lock: with `steal`, takes it from the tab that has it; else only if it is free.
/// Returns whether this tab holds it now; `on_lost` runs if another tab steals it later.
async fn acquire(steal: bool, on_lost: impl FnOnce() + 'static) -> bool {
    let Some((locks, request)) = lock_request() else {
        return true;
    };
    let mut resolve_granted: Option<Function> = None;
    let granted = Promise::new(&mut |resolve, _| resolve_granted = Some(resolve));
    let Some(resolve_granted) = resolve_granted else {
        return true;
    };
    // Called with the lock (or null when it is not free): held until the page goes away, by
    // returning a promise that never settles.
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let got = !lock.is_null() && !lock.is_undefined();
        let _ = resolve_granted.call1(&JsValue::NULL, &got.into());
        if got {
            Promise::new(&mut |_, _| {}).into()
        } else {
            JsValue::UNDEFINED
        }
    });
    let options = Object::new();
    let key = if steal { "steal" } else { "ifAvailable" };
    let _ = Reflect::set(&options, &key.into(), &true.into());
    let Ok(held) = request
        .call3(&locks, &LOCK.into(), &options, &callback)
        .and_then(|p| p.dyn_into::<Promise>())
    else {
        return true;
    };
    // The request's promise rejects (AbortError) when another tab steals the lock.
    spawn_local(async move {
        if JsFuture::from(held).await.is_err() {
            on_lost();
        }
    });
    JsFuture::from(granted)
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// Lets the event loop run for `ms` milliseconds.
async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}

impl Project {
    /// Takes the project for this tab if no other tab has it (a reloading tab's lock may take a
    /// moment to go, so it asks a few times), then restores it; else says where it is open.
    pub async fn open_here(self) {
        for attempt in 0..4 {
            if acquire(false, move || self.taken_over()).await {
                self.ownership.set(Ownership::Here);
                self.restore().await;
                return;
            }
            if attempt < 3 {
                sleep(250).await;
            }
        }
        self.ownership.set(Ownership::Elsewhere);
        self.tell(
            NoticeKind::Error,
            "This project is open in another tab of this browser. Use it there, or press \u{201c}Use it here\u{201d} (the other tab then stops saving).",
        );
    }

    /// Takes the project from the tab that has it, then restores it here.
    pub async fn take_over(self) {
        acquire(true, move || self.taken_over()).await;
        self.ownership.set(Ownership::Here);
        self.notice.set(None);
        self.restore().await;
    }

    /// Another tab took the project: this one stops saving and says so.
    fn taken_over(self) {
        self.ownership.set(Ownership::TakenOver);
        self.restored.set(false);
        self.tell(
            NoticeKind::Error,
            "This project is now open in another tab, which saves it; this tab no longer does. Reload to use it here.",
        );
    }
}
