//! What makes the edge fast and safe in front of one primary: the read
//! cache and what it caches, rate limits, who is calling, live counts laid
//! over cached bodies, and the outbox writes wait in while the primary is
//! away.

pub mod cache;
pub mod generations;
pub mod identity;
pub mod limits;
pub mod live_counts;
pub mod outbox;
pub mod reads;
