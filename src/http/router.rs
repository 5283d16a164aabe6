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
    /// A WebSocket of the issue's live updates.
    Live {
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

/// Method, path pattern (`:name` captures a segment), the route's name (in
/// logs and `Server-Timing`), and how to build the route from the captured
/// segments.
pub type Entry = (
    &'static str,
    &'static str,
    &'static str,
    fn(&[&str]) -> Route,
);

pub const ROUTES: &[Entry] = &[
    ("GET", "/health", "health", |_| Route::Health),
    #[cfg(feature = "bench")]
    ("GET", "/__bench/constant", "bench.constant", |_| {
        Route::BenchConstant
    }),
    ("GET", "/api/issues", "issues.list", |_| Route::ListIssues),
    ("POST", "/api/issues", "issues.create", |_| {
        Route::CreateIssue
    }),
    ("GET", "/api/issues/:id", "issues.get", |p| {
        Route::GetIssue {
            id: p[0].to_owned(),
        }
    }),
    ("GET", "/api/issues/:id/feed", "issues.feed", |p| {
        Route::IssueFeed {
            id: p[0].to_owned(),
        }
    }),
    ("POST", "/api/issues/:id/feed", "issues.feed.create", |p| {
        Route::AddPost {
            id: p[0].to_owned(),
        }
    }),
    (
        "POST",
        "/api/issues/:id/synonyms",
        "issues.synonyms.create",
        |p| Route::AddSynonym {
            id: p[0].to_owned(),
        },
    ),
    ("GET", "/api/issues/:id/actions", "issues.actions", |p| {
        Route::IssueActions {
            id: p[0].to_owned(),
        }
    }),
    (
        "POST",
        "/api/issues/:id/actions",
        "issues.actions.create",
        |p| Route::AddAction {
            id: p[0].to_owned(),
        },
    ),
    (
        "GET",
        "/api/issues/:id/countries",
        "issues.countries",
        |p| Route::IssueCountries {
            id: p[0].to_owned(),
        },
    ),
    ("POST", "/api/issues/:id/join", "issues.join", |p| {
        Route::Join {
            id: p[0].to_owned(),
        }
    }),
    ("DELETE", "/api/issues/:id/join", "issues.leave", |p| {
        Route::Leave {
            id: p[0].to_owned(),
        }
    }),
    ("GET", "/api/issues/:id/live", "issues.live", |p| {
        Route::Live {
            id: p[0].to_owned(),
        }
    }),
    ("GET", "/api/me", "me", |_| Route::Me),
    ("POST", "/api/logout", "logout", |_| Route::Logout),
    ("POST", "/api/me/phone", "me.phone", |_| Route::LinkPhone),
    ("POST", "/api/me/phone/verify", "me.phone.verify", |_| {
        Route::VerifyPhone
    }),
    ("POST", "/api/bot", "bot", |_| Route::Bot),
    ("GET", "/api/outbox/:id", "outbox.status", |p| {
        Route::OutboxEntry {
            id: p[0].to_owned(),
        }
    }),
    (
        "GET",
        "/webhooks/whatsapp",
        "webhooks.whatsapp.verify",
        |_| Route::WhatsAppVerify,
    ),
    ("POST", "/webhooks/whatsapp", "webhooks.whatsapp", |_| {
        Route::WhatsAppWebhook
    }),
    ("POST", "/webhooks/telegram", "webhooks.telegram", |_| {
        Route::TelegramWebhook
    }),
    ("GET", "/api/organisations", "organisations.list", |_| {
        Route::ListOrganisations
    }),
    ("GET", "/api/organisations/:id", "organisations.get", |p| {
        Route::GetOrganisation {
            id: p[0].to_owned(),
        }
    }),
    (
        "POST",
        "/api/admin/cache/invalidate",
        "admin.invalidate",
        |_| Route::InvalidateCache,
    ),
    ("GET", "/api/admin/jobs", "admin.jobs.list", |_| {
        Route::ListJobs
    }),
    ("POST", "/api/admin/jobs/:name", "admin.jobs.run", |p| {
        Route::RunJob {
            name: p[0].to_owned(),
        }
    }),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The route and its name.
    Found(Route, &'static str),
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
    for (m, pattern, name, build) in ROUTES {
        if let Some(params) = matches(pattern, path) {
            if *m == method {
                return Resolved::Found(build(&params), name);
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

    /// A resolution with the found route's name left out.
    fn at(method: &str, path: &str) -> Resolved {
        match resolve(method, path) {
            Resolved::Found(route, _) => Resolved::Found(route, ""),
            other => other,
        }
    }

    fn found(route: Route) -> Resolved {
        Resolved::Found(route, "")
    }

    #[test]
    fn every_route_has_its_own_name() {
        let mut names: Vec<&str> = ROUTES.iter().map(|(_, _, name, _)| *name).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name used twice");
        assert_eq!(
            resolve("DELETE", "/api/issues/x/join"),
            Resolved::Found(Route::Leave { id: "x".into() }, "issues.leave")
        );
    }

    #[test]
    fn routes_resolve() {
        assert_eq!(at("GET", "/health"), found(Route::Health));
        assert_eq!(at("HEAD", "/api/issues/"), found(Route::ListIssues));
        assert_eq!(
            at("GET", "/api/issues/abc"),
            found(Route::GetIssue { id: "abc".into() })
        );
        assert_eq!(at("GET", "/api/issues/abc/def"), Resolved::NotFound);
        assert_eq!(
            at("GET", "/api/issues/abc/actions"),
            found(Route::IssueActions { id: "abc".into() })
        );
        assert_eq!(
            at("GET", "/api/organisations/x"),
            found(Route::GetOrganisation { id: "x".into() })
        );
        assert_eq!(at("GET", "/api/issues//"), found(Route::ListIssues));
        assert_eq!(at("GET", "/nope"), Resolved::NotFound);
        assert_eq!(
            at("DELETE", "/api/issues/abc/join"),
            found(Route::Leave { id: "abc".into() })
        );
        assert_eq!(
            at("GET", "/api/issues/abc/join"),
            Resolved::MethodNotAllowed(vec!["POST", "DELETE"])
        );
        assert_eq!(
            at("DELETE", "/api/issues"),
            Resolved::MethodNotAllowed(vec!["GET", "HEAD", "POST"])
        );
        assert_eq!(at("POST", "/api/issues/"), found(Route::CreateIssue));
        assert_eq!(
            at("POST", "/api/issues/abc/feed"),
            found(Route::AddPost { id: "abc".into() })
        );
        assert_eq!(
            at("POST", "/api/issues/abc/synonyms"),
            found(Route::AddSynonym { id: "abc".into() })
        );
        assert_eq!(
            at("POST", "/api/issues/abc/actions"),
            found(Route::AddAction { id: "abc".into() })
        );
        assert_eq!(
            at("GET", "/api/issues/abc/live"),
            found(Route::Live { id: "abc".into() })
        );
        assert_eq!(
            at("POST", "/api/issues/abc/live"),
            Resolved::MethodNotAllowed(vec!["GET", "HEAD"])
        );
        assert_eq!(
            at("GET", "/api/issues/abc/synonyms"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(
            at("POST", "/api/admin/jobs/trending"),
            found(Route::RunJob {
                name: "trending".into()
            })
        );
        assert_eq!(at("GET", "/api/admin/jobs"), found(Route::ListJobs));
        assert_eq!(
            at("GET", "/api/admin/jobs/trending"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(at("POST", "/api/bot"), found(Route::Bot));
        assert_eq!(
            at("GET", "/webhooks/whatsapp"),
            found(Route::WhatsAppVerify)
        );
        assert_eq!(
            at("POST", "/webhooks/whatsapp"),
            found(Route::WhatsAppWebhook)
        );
        assert_eq!(
            at("GET", "/webhooks/telegram"),
            Resolved::MethodNotAllowed(vec!["POST"])
        );
        assert_eq!(
            at("POST", "/api/me/phone/verify"),
            found(Route::VerifyPhone)
        );
    }
}
