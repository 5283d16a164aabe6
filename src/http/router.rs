//! Every route of the Worker, in one table.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    ListIssues,
    GetIssue {
        id: String,
    },
    IssueFeed {
        id: String,
    },
    IssueActions {
        id: String,
    },
    IssueCountries {
        id: String,
    },
    ListOrganisations,
    GetOrganisation {
        id: String,
    },
    Join {
        id: String,
    },
    Leave {
        id: String,
    },
    Me,
    Logout,
    CreateIssue,
    AddPost {
        id: String,
    },
    AddSynonym {
        id: String,
    },
    AddAction {
        id: String,
    },
    InvalidateCache,
    RunJob {
        name: String,
    },
    ListJobs,
    /// `POST /api/bot`.
    Bot,
    WhatsAppVerify,
    WhatsAppWebhook,
    TelegramWebhook,
    /// The status of a write kept while the primary was away.
    OutboxEntry {
        id: String,
    },
    /// Send a one-time code to a phone being linked.
    LinkPhone,
    /// Check the code and link the phone.
    VerifyPhone,
    /// A constant body through the whole pipeline (benchmark builds,
    /// development only): the baseline the cached reads are measured against.
    #[cfg(feature = "bench")]
    BenchConstant,
}

/// Method, path pattern (`:name` captures a segment), and how to build the
/// route from the captured segments.
pub type Entry = (&'static str, &'static str, fn(&[&str]) -> Route);

pub const ROUTES: &[Entry] = &[
    ("GET", "/health", |_| Route::Health),
    #[cfg(feature = "bench")]
    ("GET", "/__bench/constant", |_| Route::BenchConstant),
    ("GET", "/api/issues", |_| Route::ListIssues),
    ("POST", "/api/issues", |_| Route::CreateIssue),
    ("GET", "/api/issues/:id", |p| Route::GetIssue {
        id: p[0].to_owned(),
    }),
    ("GET", "/api/issues/:id/feed", |p| Route::IssueFeed {
        id: p[0].to_owned(),
    }),
    ("POST", "/api/issues/:id/feed", |p| Route::AddPost {
        id: p[0].to_owned(),
    }),
    ("POST", "/api/issues/:id/synonyms", |p| Route::AddSynonym {
        id: p[0].to_owned(),
    }),
    ("GET", "/api/issues/:id/actions", |p| Route::IssueActions {
        id: p[0].to_owned(),
    }),
    ("POST", "/api/issues/:id/actions", |p| Route::AddAction {
        id: p[0].to_owned(),
    }),
    ("GET", "/api/issues/:id/countries", |p| {
        Route::IssueCountries {
            id: p[0].to_owned(),
        }
    }),
    ("POST", "/api/issues/:id/join", |p| Route::Join {
        id: p[0].to_owned(),
    }),
    ("DELETE", "/api/issues/:id/join", |p| Route::Leave {
        id: p[0].to_owned(),
    }),
    ("GET", "/api/me", |_| Route::Me),
    ("POST", "/api/logout", |_| Route::Logout),
    ("POST", "/api/me/phone", |_| Route::LinkPhone),
    ("POST", "/api/me/phone/verify", |_| Route::VerifyPhone),
    ("POST", "/api/bot", |_| Route::Bot),
    ("GET", "/api/outbox/:id", |p| Route::OutboxEntry {
        id: p[0].to_owned(),
    }),
    ("GET", "/webhooks/whatsapp", |_| Route::WhatsAppVerify),
    ("POST", "/webhooks/whatsapp", |_| Route::WhatsAppWebhook),
    ("POST", "/webhooks/telegram", |_| Route::TelegramWebhook),
    ("GET", "/api/organisations", |_| Route::ListOrganisations),
    ("GET", "/api/organisations/:id", |p| {
        Route::GetOrganisation {
            id: p[0].to_owned(),
        }
    }),
    ("POST", "/api/admin/cache/invalidate", |_| {
        Route::InvalidateCache
    }),
    ("GET", "/api/admin/jobs", |_| Route::ListJobs),
    ("POST", "/api/admin/jobs/:name", |p| Route::RunJob {
        name: p[0].to_owned(),
    }),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Found(Route),
    /// The path exists, but not with this method; these are its methods.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

fn matches<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with(':') && !s.is_empty() => params.push(s),
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

pub fn resolve(method: &str, path: &str) -> Resolved {
    // A trailing slash names the same resource.
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    // HEAD is served wherever GET is.
    let method = if method == "HEAD" { "GET" } else { method };
    let mut allowed = Vec::new();
    for (m, pattern, build) in ROUTES {
        if let Some(params) = matches(pattern, path) {
            if *m == method {
                return Resolved::Found(build(&params));
            }
            allowed.push(*m);
            if *m == "GET" {
                allowed.push("HEAD");
            }
        }
    }
    if allowed.is_empty() {
        Resolved::NotFound
    } else {
        Resolved::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve() {
        assert_eq!(resolve("GET", "/health"), Resolved::Found(Route::Health));
        assert_eq!(
            resolve("HEAD", "/api/issues/"),
            Resolved::Found(Route::ListIssues)
        );
        assert_eq!(
            resolve("GET", "/api/issues/abc"),
            Resolved::Found(Route::GetIssue { id: "abc".into() })
        );
        assert_eq!(resolve("GET", "/api/issues/abc/def"), Resolved::NotFound);
        assert_eq!(
            resolve("GET", "/api/issues/abc/actions"),
            Resolved::Found(Route::IssueActions { id: "abc".into() })
        );
        assert_eq!(
            resolve("GET", "/api/organisations/x"),
            Resolved::Found(Route::GetOrganisation { id: "x".into() })
        );
        assert_eq!(
            resolve("GET", "/api/issues//"),
            Resolved::Found(Route::ListIssues)
        );
        assert_eq!(resolve("GET", "/nope"), Resolved::NotFound);
        assert_eq!(
            resolve("DELETE", "/api/issues/abc/join"),
            Resolved::Found(Route::Leave { id: "abc".into() })
        );
        assert_eq!(
            resolve("GET", "/api/issues/abc/join"),
            Resolved::MethodNotAllowed(vec!["POST", "DELETE"])
        );
        assert_eq!(
            resolve("DELETE", "/api/issues"),
            Resolved::MethodNotAllowed(vec!["GET", "HEAD", "POST"])
        );
        assert_eq!(
            resolve("POST", "/api/issues/"),
            Resolved::Found(Route::CreateIssue)
        );
        assert_eq!(
            resolve("POST", "/api/issues/abc/feed"),
            Resolved::Found(Route::AddPost { id: "abc".into() })
        );
        assert_eq!(
            resolve("POST", "/api/issues/abc/synonyms"),
            Resolved::Found(Route::AddSynonym { id: "abc".into() })
        );
        assert_eq!(
            resolve("POST", "/api/issues/abc/actions"),
            Resolved::Found(Route::AddAction { id: "abc".into() })
        );
        assert_eq!(
            resolve("GET", "/api/issues/abc/synonyms"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(
            resolve("POST", "/api/admin/jobs/trending"),
            Resolved::Found(Route::RunJob {
                name: "trending".into()
            })
        );
        assert_eq!(
            resolve("GET", "/api/admin/jobs"),
            Resolved::Found(Route::ListJobs)
        );
        assert_eq!(
            resolve("GET", "/api/admin/jobs/trending"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(resolve("POST", "/api/bot"), Resolved::Found(Route::Bot));
        assert_eq!(
            resolve("GET", "/webhooks/whatsapp"),
            Resolved::Found(Route::WhatsAppVerify)
        );
        assert_eq!(
            resolve("POST", "/webhooks/whatsapp"),
            Resolved::Found(Route::WhatsAppWebhook)
        );
        assert_eq!(
            resolve("GET", "/webhooks/telegram"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(
            resolve("POST", "/api/me/phone/verify"),
            Resolved::Found(Route::VerifyPhone)
        );
    }
}
