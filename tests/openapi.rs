//! openapi.yaml describes every route of the router, with its method.

use std::collections::BTreeSet;

use quiet_riots_edge::ROUTES;

/// (path, method) pairs under `paths:` of our openapi.yaml (two-space
/// indented paths, four-space indented methods).
fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml");
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(rest) = line.strip_prefix("  /") {
            path = rest.strip_suffix(':').map(|p| format!("/{p}"));
        } else if let Some(rest) = line.strip_prefix("    ") {
            if let (Some(p), Some(method)) = (&path, rest.strip_suffix(':')) {
                if ["get", "post", "put", "patch", "delete"].contains(&method) {
                    out.insert((p.clone(), method.to_uppercase()));
                }
            }
        }
    }
    out
}

/// A router pattern as an OpenAPI path: `:name` becomes `{name}`.
fn openapi_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| match s.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_is_documented() {
    let documented = documented();
    assert!(documented.len() >= 9, "{documented:?}");
    for (method, pattern, _, _) in ROUTES {
        let path = openapi_path(pattern);
        assert!(
            documented.contains(&(path.clone(), method.to_string())),
            "{method} {path} is a route but not in openapi.yaml"
        );
    }
    // And nothing documented that the router does not serve.
    for (path, method) in &documented {
        // Benchmark routes exist only in a build with the `bench` feature.
        if path.starts_with("/__bench/") && !cfg!(feature = "bench") {
            continue;
        }
        let served = ROUTES
            .iter()
            .any(|(m, p, _, _)| *m == method && openapi_path(p) == *path);
        assert!(served, "{method} {path} is documented but not routed");
    }
}
