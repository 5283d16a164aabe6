//! The Workers runtime's `fetch` and timers, called directly.
//!
//! workers-rs wraps both, and on the paths every request takes the wrappers
//! cost more than the work they wrap (a CPU profile of the Worker's isolate
//! under the read mix, `docs/benchmarks.md`):
//!
//! - `worker::Request::new_with_init` parses the URL with the `url` crate
//!   and reads the request's `cf` object, only to fill fields an outgoing
//!   request never uses;
//! - `worker::Response::text` reads the body as a stream, one boundary
//!   crossing per chunk, where the runtime's own `text()` is one call;
//! - dropping a `worker::Delay` that has not fired writes a `console.debug`
//!   line: every deadline that a request beat logged a line.
//!
//! In a profile of the read mix a call to the primary took 3.0 ms of the
//! isolate's time through them and 0.8-1.0 ms without. The WebSocket
//! handshake still goes through workers-rs (it needs its `Response` for the
//! socket).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use worker::js_sys::Promise;
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

fn global() -> web_sys::WorkerGlobalScope {
    worker::js_sys::global().unchecked_into()
}

/// Completes once `duration` has passed since it was made; dropped before
/// that, it clears its timer (and says nothing).
pub struct Timeout {
    id: Option<i32>,
    state: Rc<TimerState>,
    // Kept alive for the runtime to call; dropped only once the timer has
    // fired or been cleared.
    _callback: Closure<dyn FnMut()>,
}

#[derive(Default)]
struct TimerState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Timeout {
    pub fn after(duration: Duration) -> Timeout {
        let state = Rc::new(TimerState::default());
        let fired = state.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            fired.fired.set(true);
            if let Some(waker) = fired.waker.borrow_mut().take() {
                waker.wake();
            }
        });
        let ms = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
        // setTimeout does not fail in the Workers runtime; if it ever did,
        // the timeout would never fire rather than fire at once.
        let id = global()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok();
        Timeout {
            id,
            state,
            _callback: callback,
        }
    }
}

impl Future for Timeout {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.fired.get() {
            return Poll::Ready(());
        }
        *self.state.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.state.fired.get(), self.id) {
            global().clear_timeout_with_handle(id);
        }
    }
}

/// A request to send with [`fetch`] or [`fetch_object`].
pub fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    signal: Option<&web_sys::AbortSignal>,
) -> worker::Result<web_sys::Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    if !headers.is_empty() {
        let set = web_sys::Headers::new()?;
        for (name, value) in headers {
            set.set(name, value)?;
        }
        init.set_headers(&set);
    }
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    if signal.is_some() {
        init.set_signal(signal);
    }
    Ok(web_sys::Request::new_with_str_and_init(url, &init)?)
}

/// What a request was answered: the status and the whole body as text.
pub struct Answer {
    pub status: u16,
    pub text: String,
}

/// Sends `request` with the runtime's global `fetch` and reads the answer.
pub async fn fetch(request: &web_sys::Request) -> worker::Result<Answer> {
    answer(global().fetch_with_request(request)).await
}

#[wasm_bindgen]
extern "C" {
    /// A Durable Object's stub, as the runtime has it.
    type ObjectStub;

    #[wasm_bindgen(method, catch, js_name = fetch)]
    fn send(this: &ObjectStub, request: &web_sys::Request) -> Result<Promise, JsValue>;
}

/// Sends `request` to the Durable Object behind `stub` and reads the
/// answer.
pub async fn fetch_object(
    stub: worker::Stub,
    request: &web_sys::Request,
) -> worker::Result<Answer> {
    let stub: ObjectStub = stub.into_rpc();
    answer(stub.send(request)?).await
}

async fn answer(promise: Promise) -> worker::Result<Answer> {
    let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
    let status = response.status();
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    Ok(Answer { status, text })
}
