//! Hooks for the browser tests, compiled only with the `test-hooks` feature (which
//! `scripts/test.sh` builds; the build users run has none of this):
//! - `globalThis.medtransferTest.crashWorker(deviceLost = true)` makes the compute worker panic
//!   as a lost GPU (or, with `false`, a bug) does;
//! - in the worker, an image whose bytes start with [`CRASH_MAGIC`] panics the worker while it
//!   is decoded, as a file that breaks a decoder would.

use js_sys::Reflect;
use wasm_bindgen::prelude::*;

use crate::protocol::{Envelope, ToWorker};
use crate::state::Project;

/// The first bytes of a test file that crashes the worker (test builds only).
pub const CRASH_MAGIC: &[u8] = b"MEDTRANSFER-TEST-CRASH";

/// Puts `globalThis.medtransferTest` on the page for `project`'s current worker.
pub fn install(project: Project) {
    let hooks = js_sys::Object::new();
    let crash = Closure::<dyn Fn(JsValue)>::new(move |device_lost: JsValue| {
        let device_lost = device_lost.as_bool().unwrap_or(true);
        project.send(Envelope::new(ToWorker::SimulateCrash { device_lost }));
    });
    let _ = Reflect::set(&hooks, &"crashWorker".into(), crash.as_ref());
    crash.forget();
    let _ = Reflect::set(&js_sys::global(), &"medtransferTest".into(), &hooks);
}
