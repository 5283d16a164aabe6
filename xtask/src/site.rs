//! Same-site deploys: browsers keep the session cookie only when the page
//! and the API are on the same site (scheme and registrable domain). For
//! each deployed environment, every allowed origin must share a site with a
//! hostname the Worker answers on (a custom domain or route in
//! wrangler.toml). `workers.dev` is a public suffix, so a Worker that
//! answers only on `*.workers.dev` is cross-site to every web app.

use std::collections::BTreeSet;

/// A URL's scheme and site: `https://api.quietriots.com` is
/// `("https", "quietriots.com")`. A host with no registrable domain (an IP
/// address, `localhost`, a bare public suffix) is its own site.
pub fn site_of(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not an origin (scheme://host)"))?;
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit_once('@')
        .map_or(
            rest.split(['/', '?', '#']).next().unwrap_or_default(),
            |(_, h)| h,
        );
    let host = match host.strip_prefix('[') {
        // An IPv6 literal, with or without a port.
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((scheme.to_ascii_lowercase(), registrable(&host)))
}

/// The registrable domain of a hostname (eTLD+1), or the host itself.
fn registrable(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    match psl::domain_str(host) {
        Some(domain) => domain.to_owned(),
        None => host.to_owned(),
    }
}

/// A hostname a route pattern in wrangler.toml serves: `api.example.com`,
/// `api.example.com/*`, `*.example.com/api/*` (a wildcard host stands for
/// its zone).
pub fn route_host(pattern: &str) -> String {
    let host = pattern.split('/').next().unwrap_or_default();
    host.trim_start_matches("*.")
        .trim_start_matches('*')
        .to_owned()
}

/// The allowed origins that are not on the same site as any of `hosts`
/// (the hostnames the Worker answers on; served over https), with why.
pub fn cross_site(hosts: &[String], origins: &[String]) -> Vec<String> {
    let api_sites: BTreeSet<(String, String)> = hosts
        .iter()
        .map(|h| ("https".to_owned(), registrable(&h.to_ascii_lowercase())))
        .collect();
    let mut wrong = Vec::new();
    for origin in origins {
        match site_of(origin) {
            Ok(site) if api_sites.contains(&site) => {}
            Ok((scheme, site)) => wrong.push(format!(
                "{origin} (site {scheme}://{site}) is not on the API's site ({})",
                if api_sites.is_empty() {
                    "none: the Worker has no route or custom domain, only *.workers.dev".to_owned()
                } else {
                    api_sites
                        .iter()
                        .map(|(s, d)| format!("{s}://{d}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
            Err(e) => wrong.push(e),
        }
    }
    wrong
}

/// The hostnames an environment's Worker answers on, from its `routes`
/// (or `route`) in wrangler.toml, and its allowed origins.
pub fn environment(config: &toml::Value, env: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let table = config
        .get("env")
        .and_then(|e| e.get(env))
        .ok_or_else(|| format!("wrangler.toml has no [env.{env}]"))?;
    let mut hosts = Vec::new();
    let mut add = |route: &toml::Value| {
        let pattern = route
            .as_str()
            .or_else(|| route.get("pattern").and_then(toml::Value::as_str));
        if let Some(p) = pattern {
            hosts.push(route_host(p));
        }
    };
    if let Some(routes) = table.get("routes").and_then(toml::Value::as_array) {
        routes.iter().for_each(&mut add);
    }
    if let Some(route) = table.get("route") {
        add(route);
    }
    let origins = table
        .get("vars")
        .and_then(|v| v.get("ALLOWED_ORIGINS"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("[env.{env}.vars] has no ALLOWED_ORIGINS"))?
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((hosts, origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(url: &str) -> String {
        let (scheme, site) = site_of(url).expect(url);
        format!("{scheme}://{site}")
    }

    #[test]
    fn sites_follow_the_public_suffix_list() {
        assert_eq!(site("https://api.quietriots.com"), "https://quietriots.com");
        assert_eq!(
            site("https://www.quietriots.com/x"),
            "https://quietriots.com"
        );
        assert_eq!(site("https://a.example.co.uk"), "https://example.co.uk");
        // workers.dev is a public suffix: each account's subdomain is a site.
        assert_eq!(
            site("https://quiet-riots-edge.acme.workers.dev"),
            "https://acme.workers.dev"
        );
        assert_eq!(site("http://localhost:3000"), "http://localhost");
        assert_eq!(site("http://127.0.0.1:8787"), "http://127.0.0.1");
        assert_eq!(
            site("https://USER@API.Example.COM:8443/"),
            "https://example.com"
        );
        assert!(site_of("quietriots.com").is_err());
        assert_eq!(route_host("api.quietriots.com/*"), "api.quietriots.com");
        assert_eq!(route_host("*.quietriots.com/api/*"), "quietriots.com");
    }

    #[test]
    fn cross_site_origins_are_named() {
        let hosts = vec!["api.quietriots.com".to_owned()];
        let ok = ["https://quietriots.com", "https://www.quietriots.com"].map(String::from);
        assert!(cross_site(&hosts, &ok).is_empty());
        // Another registrable domain, a plain-http origin, and no route at all.
        let wrong = cross_site(
            &hosts,
            &["https://quietriots.org", "http://quietriots.com"].map(String::from),
        );
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        let none = cross_site(&[], &ok);
        assert_eq!(none.len(), 2);
        assert!(none[0].contains("workers.dev"), "{none:?}");
        // Two names under workers.dev are two sites.
        let dev = vec!["quiet-riots-edge.acme.workers.dev".to_owned()];
        assert_eq!(
            cross_site(&dev, &["https://app.other.workers.dev".to_owned()]).len(),
            1
        );
        assert!(cross_site(&dev, &["https://app.acme.workers.dev".to_owned()]).is_empty());
    }

    #[test]
    fn the_repositorys_deploys_are_same_site() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wrangler.toml"))
                .expect("wrangler.toml");
        let config: toml::Value = text.parse().expect("toml");
        for env in ["staging", "production"] {
            let (hosts, origins) = environment(&config, env).expect(env);
            assert!(!hosts.is_empty(), "{env} has a route");
            assert_eq!(cross_site(&hosts, &origins), Vec::<String>::new(), "{env}");
        }
    }
}
