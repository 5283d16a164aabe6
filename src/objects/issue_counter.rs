//! The IssueCounter Durable Object: one per issue.

use worker::{durable_object, Env, Request, Response, Result, State};

#[durable_object]
pub struct IssueCounter {
    state: State,
}

impl DurableObject for IssueCounter {
    fn new(state: State, _env: Env) -> Self {
        IssueCounter { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        super::health(&self.state, &req).await
    }
}
