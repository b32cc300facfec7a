//! The page's side of the compute worker: starting and stopping it, sending [`ToWorker`]
//! envelopes, turning its replies into [`WorkerEvent`]s, and the bookkeeping of which images
//! are on their way ([`EmbedQueue`]), so that a crashed worker costs as little as possible.
//!
//! Layering: `state` calls this module; this module calls only [`crate::protocol`].

use std::collections::{HashSet, VecDeque};

use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Envelope, FromWorker, ImageId, ToWorker};

/// What the worker tells the page.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A reply, with its bytes (boxed: a reply is much larger than a death notice).
    Reply(Box<Envelope<FromWorker>>),
    /// The worker died: its wasm trapped (a panic: a lost GPU, a bug) or its script failed.
    Lost {
        /// The browser's error message.
        reason: String,
    },
}

/// The page's handle on one compute worker.
#[derive(Clone)]
pub struct WorkerClient {
    worker: Worker,
}

impl WorkerClient {
    /// Starts `worker.js` as a module worker and hands it the page's own wasm; `on_event`
    /// receives every reply and, at most once, the worker's death.
    ///
    /// # Errors
    /// The browser refused to start the worker, or the page's boot information is missing.
    pub fn start(on_event: impl Fn(WorkerEvent) + 'static) -> Result<Self, String> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options)
            .map_err(|e| format!("the compute worker could not start: {e:?}"))?;
        let on_event = std::rc::Rc::new(on_event);
        let on_reply = on_event.clone();
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            match Envelope::<FromWorker>::from_js(&event.data()) {
                Ok(envelope) => on_reply(WorkerEvent::Reply(Box::new(envelope))),
                Err(error) => web_sys::console::error_1(
                    &format!("a message from the worker was not understood: {error}").into(),
                ),
            }
        });
        worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        handler.forget();
        let error_handler = Closure::<dyn FnMut(ErrorEvent)>::new(move |event: ErrorEvent| {
            event.prevent_default();
            on_event(WorkerEvent::Lost {
                reason: event.message(),
            });
        });
        worker.set_onerror(Some(error_handler.as_ref().unchecked_ref()));
        error_handler.forget();
        // boot.js keeps the hashed names of the page's JS and wasm on `globalThis.medtransferBoot`.
        let boot = Reflect::get(&js_sys::global(), &"medtransferBoot".into())
            .map_err(|_| "the page's boot information is missing".to_string())?;
        worker
            .post_message(&boot)
            .map_err(|e| format!("the compute worker could not be started: {e:?}"))?;
        Ok(Self { worker })
    }

    /// Stops the worker at once; no event arrives from it afterwards.
    pub fn terminate(&self) {
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
    }

    /// Sends a message, its bytes transferred (not copied).
    pub fn send(&self, envelope: &Envelope<ToWorker>) {
        let result = envelope.to_js().and_then(|(array, transfer)| {
            self.worker
                .post_message_with_transfer(&array, &transfer)
                .map_err(|e| format!("{e:?}"))
        });
        if let Err(error) = result {
            web_sys::console::error_1(&format!("posting to the worker failed: {error}").into());
        }
    }
}

/// Images sent to embed at once, at most: enough to keep the worker's batches full, few enough
/// that a crash implicates only these.
pub const EMBED_WINDOW: usize = 16;

/// What a worker's death means for the images on their way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashVerdict {
    /// Images that crashed a worker twice, the second time alone: they are rejected.
    pub rejected: Vec<ImageId>,
    /// Images in flight that go to the next worker, one at a time, before any other.
    pub suspects: Vec<ImageId>,
}

/// The embedding requests of the current worker: which images it has been given, which are in
/// flight, which wait for room in the window, and which are suspects of a crash.
///
/// At most [`EMBED_WINDOW`] images are in flight; while there are suspects, only one is, so
/// that a file that kills the worker is found with certainty, and only that file is rejected.
#[derive(Clone, Debug, Default)]
pub struct EmbedQueue {
    /// Images the current worker holds or is embedding (never sent twice to one worker).
    sent: HashSet<ImageId>,
    /// Sent to embed, not answered yet.
    in_flight: HashSet<ImageId>,
    /// Waiting for room in the window, with their bytes.
    waiting: VecDeque<(ImageId, Vec<u8>)>,
    /// In flight when a worker died: sent alone, one after another, before the others.
    suspects: HashSet<ImageId>,
}

impl EmbedQueue {
    /// Whether the current worker has been given this image.
    pub fn was_sent(&self, id: ImageId) -> bool {
        self.sent.contains(&id)
    }

    /// Whether the image waits or is in flight.
    pub fn is_queued(&self, id: ImageId) -> bool {
        self.in_flight.contains(&id) || self.waiting.iter().any(|(w, _)| *w == id)
    }

    /// Marks images whose embeddings were handed to the worker directly (a restore).
    pub fn mark_sent(&mut self, ids: impl IntoIterator<Item = ImageId>) {
        self.sent.extend(ids);
    }

    /// Queues an image to embed (ignored if the worker has it already or it is queued);
    /// suspects go first.
    pub fn push(&mut self, id: ImageId, bytes: Vec<u8>) {
        if self.sent.contains(&id) || self.is_queued(id) {
            return;
        }
        if self.suspects.contains(&id) {
            // After the suspects already waiting, in the order they come.
            let at = self
                .waiting
                .iter()
                .position(|(w, _)| !self.suspects.contains(w))
                .unwrap_or(self.waiting.len());
            self.waiting.insert(at, (id, bytes));
        } else {
            self.waiting.push_back((id, bytes));
        }
    }

    /// The images to send now: as many as the window allows, or one suspect alone.
    pub fn next_to_send(&mut self) -> Vec<(ImageId, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let suspect_next = self
                .waiting
                .front()
                .is_some_and(|(id, _)| self.suspects.contains(id));
            let alone = suspect_next || self.in_flight.iter().any(|id| self.suspects.contains(id));
            let room = if alone { 1 } else { EMBED_WINDOW };
            if self.in_flight.len() >= room {
                break;
            }
            // A suspect waits until nothing else is in flight.
            if suspect_next && !self.in_flight.is_empty() {
                break;
            }
            let Some((id, bytes)) = self.waiting.pop_front() else {
                break;
            };
            self.sent.insert(id);
            self.in_flight.insert(id);
            out.push((id, bytes));
        }
        out
    }

    /// An answer (embedding or per-file error) arrived, or the image was removed.
    pub fn answered(&mut self, id: ImageId) {
        self.in_flight.remove(&id);
        self.suspects.remove(&id);
        self.waiting.retain(|(w, _)| *w != id);
    }

    /// The image was removed from the project: forget it entirely.
    pub fn forget(&mut self, id: ImageId) {
        self.answered(id);
        self.sent.remove(&id);
    }

    /// The worker died. A suspect that was in flight alone is rejected; the other images in
    /// flight become suspects. Everything is forgotten otherwise: a new worker gets the
    /// images again from storage.
    pub fn worker_lost(&mut self) -> CrashVerdict {
        let in_flight: Vec<ImageId> = self.in_flight.drain().collect();
        let mut verdict = CrashVerdict::default();
        if let [only] = in_flight[..]
            && self.suspects.contains(&only)
        {
            verdict.rejected.push(only);
            self.suspects.remove(&only);
        } else {
            self.suspects.extend(in_flight.iter().copied());
        }
        verdict.suspects = self.suspects.iter().copied().collect();
        verdict.suspects.sort_unstable();
        self.sent.clear();
        self.waiting.clear();
        verdict
    }

    /// A new project (an import): nothing is sent, waiting or suspect.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(batch: &[(ImageId, Vec<u8>)]) -> Vec<ImageId> {
        batch.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn sends_at_most_a_window_and_refills_as_answers_arrive() {
        let mut q = EmbedQueue::default();
        for id in 0..40 {
            q.push(id, vec![id as u8]);
        }
        let first = q.next_to_send();
        assert_eq!(ids(&first), (0..EMBED_WINDOW as u32).collect::<Vec<_>>());
        assert!(q.next_to_send().is_empty(), "the window is full");
        q.answered(0);
        q.answered(1);
        assert_eq!(ids(&q.next_to_send()), vec![16, 17]);
        // Never twice to the same worker: 3 is not queued again, 18 comes next.
        q.push(3, vec![]);
        q.answered(2);
        assert_eq!(ids(&q.next_to_send()), vec![18]);
    }

    #[test]
    fn only_the_file_that_crashed_a_worker_alone_is_rejected() {
        let mut q = EmbedQueue::default();
        for id in 0..20 {
            q.push(id, vec![]);
        }
        q.next_to_send();
        // The first crash: 16 in flight, none rejected, all suspect.
        let first = q.worker_lost();
        assert!(first.rejected.is_empty());
        assert_eq!(first.suspects, (0..16).collect::<Vec<_>>());
        // The next worker gets everything again; suspects go first, one at a time.
        for id in 0..20 {
            q.push(id, vec![]);
        }
        assert_eq!(ids(&q.next_to_send()), vec![0]);
        assert!(q.next_to_send().is_empty(), "a suspect is in flight alone");
        q.answered(0);
        assert_eq!(ids(&q.next_to_send()), vec![1]);
        q.answered(1);
        assert_eq!(ids(&q.next_to_send()), vec![2]);
        // Image 2 kills this worker too: it alone is rejected; 3..16 stay suspects.
        let second = q.worker_lost();
        assert_eq!(second.rejected, vec![2]);
        assert_eq!(second.suspects, (3..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_crash_with_innocent_images_in_flight_rejects_nothing() {
        let mut q = EmbedQueue::default();
        q.push(7, vec![]);
        q.next_to_send();
        // One image in flight, but not a suspect yet: it becomes one.
        let verdict = q.worker_lost();
        assert!(verdict.rejected.is_empty());
        assert_eq!(verdict.suspects, vec![7]);
        q.push(7, vec![]);
        q.next_to_send();
        q.answered(7);
        assert!(
            q.worker_lost().suspects.is_empty(),
            "answered: no longer suspect"
        );
    }

    #[test]
    fn removed_images_are_not_sent() {
        let mut q = EmbedQueue::default();
        for id in 0..3 {
            q.push(id, vec![]);
        }
        q.forget(1);
        assert_eq!(ids(&q.next_to_send()), vec![0, 2]);
    }
}
