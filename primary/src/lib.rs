//! The local libSQL primary for Quiet Riots.
//!
//! Production talks to Turso. Development, tests, CI and benchmarks talk to
//! this server instead: the libSQL engine on a local file, behind the same
//! Hrana-over-HTTP protocol, so every libSQL client (the Worker's `libsql`
//! wasm client, the `libsql` crate's remote client, `@libsql/client`) uses it
//! unchanged.
//!
//! - [`engine`]: Hrana requests executed on a libSQL connection;
//! - [`streams`]: batons, stream expiry and the stream cap;
//! - [`http`]: the HTTP routes; [`server`]: start and stop;
//! - [`client`]: a small Hrana client, used by [`migrate`] and [`seed`] so
//!   they work against any Hrana server, Turso included;
//! - [`sql`]: splitting SQL scripts into statements;
//! - [`stats`]: Hrana requests counted per endpoint and per request id.

pub mod client;
pub mod engine;
pub mod http;
pub mod migrate;
pub mod seed;
pub mod server;
pub mod sql;
pub mod stats;
pub mod streams;
