//! The RateLimiter Durable Object: one per (policy, subject).

use worker::{durable_object, Env, Request, Response, Result, State};

#[durable_object]
pub struct RateLimiter {
    state: State,
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        RateLimiter { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        super::health(&self.state, &req).await
    }
}
