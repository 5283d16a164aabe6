//! One JSON log line per request, through `tracing-web` to the console
//! (which Workers Logs collects). Installed once per isolate.

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::prelude::*;
use tracing_web::MakeWebConsoleWriter;

pub fn init() {
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_ansi(false)
        .with_timer(UtcTime::rfc_3339())
        .with_span_events(FmtSpan::NONE)
        .with_writer(MakeWebConsoleWriter::new());
    // A second call (a test re-running start) must not panic.
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(layer)
        .try_init();
}
