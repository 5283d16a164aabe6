//! The request as the pipeline reads it: the runtime's own request object,
//! its URL parsed once.
//!
//! `worker::Request` parses the URL when it is made and again on every
//! `url()`, and reads the request's `cf` object, which nothing here uses: a
//! read request paid three URL parses and the `cf` object (0.5-0.8 ms of
//! the isolate's time in CPU profiles of the read mix; 0.1 ms now). This
//! also keeps the method as sent (`worker::Request::method` reads a method
//! it does not know, PROPFIND say, as GET).

use worker::js_sys::{Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Url};

use crate::http::error::{AppError, AppResult, Code};

pub struct Incoming {
    raw: web_sys::Request,
    headers: web_sys::Headers,
    method: String,
    url: Result<Url, String>,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Incoming {
        let url = Url::parse(&raw.url()).map_err(|e| e.to_string());
        Incoming {
            headers: raw.headers(),
            method: raw.method(),
            url,
            raw,
        }
    }

    /// The method as sent (the runtime upper-cases the standard ones).
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn path(&self) -> &str {
        self.url.as_ref().map_or("/", Url::path)
    }

    /// `scheme://host[:port]` of the URL the request was sent to.
    pub fn own_origin(&self) -> String {
        self.url
            .as_ref()
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    /// The query's pairs, decoded; a URL that did not parse is a 400.
    pub fn query_pairs(&self) -> AppResult<Vec<(String, String)>> {
        let url = self
            .url
            .as_ref()
            .map_err(|e| AppError::bad_request(Code::BadUrl, e.clone()))?;
        Ok(url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }

    /// The body, read no further than `max` bytes; `None` when there is
    /// none (or it is empty). Read from its stream, whatever the headers
    /// say, so a chunked body (no `Content-Length`) larger than `max` is
    /// refused once `max` is passed rather than buffered whole first.
    pub async fn body_within(&self, max: usize) -> Result<Option<Vec<u8>>, BodyError> {
        let Some(stream) = self.raw.body() else {
            return Ok(None);
        };
        let reader: web_sys::ReadableStreamDefaultReader = stream
            .get_reader()
            .dyn_into()
            .map_err(|e| BodyError::Unreadable(describe(e.into())))?;
        let mut bytes = Vec::new();
        loop {
            let chunk = JsFuture::from(reader.read())
                .await
                .map_err(|e| BodyError::Unreadable(describe(e)))?;
            let done = Reflect::get(&chunk, &JsValue::from_str("done"))
                .map(|d| d.is_truthy())
                .unwrap_or(true);
            if done {
                break;
            }
            let value = Reflect::get(&chunk, &JsValue::from_str("value"))
                .map_err(|e| BodyError::Unreadable(describe(e)))?;
            let Some(part) = value.dyn_ref::<Uint8Array>() else {
                return Err(BodyError::Unreadable(
                    "a body chunk that is not bytes".to_owned(),
                ));
            };
            if bytes.len() + part.length() as usize > max {
                // Nothing more of it is read: the runtime may drop the rest.
                let _ = reader.cancel();
                return Err(BodyError::TooLarge);
            }
            bytes.extend(part.to_vec());
        }
        Ok((!bytes.is_empty()).then_some(bytes))
    }
}

/// Why a body was not read.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    TooLarge,
    Unreadable(String),
}

fn describe(e: worker::wasm_bindgen::JsValue) -> String {
    e.as_string()
        .or_else(|| {
            e.dyn_ref::<worker::js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| "the body could not be read".to_owned())
}
