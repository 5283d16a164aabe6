//! Plain types and rules, free of the JS runtime and of I/O, tested
//! natively: ids, phone numbers, sessions, cursors, paging, search, write
//! validation, counter and rate-limit maths, live updates' messages and
//! coalescing.

pub mod counter;
pub mod cursor;
pub mod ids;
pub mod live;
pub mod paging;
pub mod phone;
pub mod rate_limit;
pub mod search;
pub mod session;
pub mod time;
pub mod writes;
