//! Typed configuration, read from the Worker's environment in one place.
//!
//! Non-secret settings are `[vars]` in wrangler.toml; secrets
//! (`LIBSQL_AUTH_TOKEN`, ...) come from `.dev.vars` locally and
//! `wrangler secret put` in production. Handlers never look names up.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::store::db::Db;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Hrana URL of the primary (Turso in production).
    pub libsql_url: String,
    pub libsql_auth_token: Option<String>,
    /// Origins allowed to call the API from a browser, with credentials.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long one call to the primary may take before the request gives up.
    pub db_timeout: Duration,
    /// `development`, `staging` or `production`.
    pub environment: String,
    /// Key material for signed values (session cookies, cursors).
    pub session_secret: Vec<u8>,
    /// Names `session_secret` in the cookies it signs (`SESSION_KID`).
    pub session_key_id: String,
    /// Earlier session keys still accepted, `(key id, secret)`, from the
    /// secret `SESSION_SECRETS_PREVIOUS` (`kid:secret,kid:secret`).
    pub session_previous: Vec<(String, Vec<u8>)>,
    /// Bearer token of the admin routes; `None` disables them.
    pub admin_token: Option<String>,
    /// Rate-limit policies (`RATE_LIMITS` overrides, e.g. `reads=120/60`).
    pub rate_limits: crate::domain::rate_limit::Policies,
    /// Most live sockets per issue (`LIVE_MAX_PER_ISSUE`) and per client on
    /// one issue (`LIVE_MAX_PER_CLIENT`).
    pub live_caps: crate::domain::live::Caps,
    /// How long writes are refused while the limiter fails for their
    /// bucket, before the isolate limits them itself
    /// (`LIMITER_FAIL_CLOSED_SECS`, default 30; see [`crate::edge::limits`]).
    pub limiter_fail_closed: Duration,
    /// The header holding the client's IP (`CLIENT_IP_HEADER`).
    pub client_ip_header: String,
    /// Bearer token of `POST /api/bot`; `None` disables the route.
    pub bot_token: Option<String>,
    pub whatsapp: WhatsApp,
    pub telegram: Telegram,
    /// A cached read is fresh this long...
    pub cache_fresh_secs: u64,
    /// ...then served stale (and refreshed behind the response) this long.
    pub cache_stale_secs: u64,
    /// Where the primary is, as a Durable Object location hint
    /// (`PRIMARY_LOCATION`, e.g. `weur`): the objects that talk to the
    /// primary are created near it ([`crate::objects::client`]).
    pub primary_location: Option<String>,
    /// Modelled distances between the Worker, the objects and the primary
    /// (`BENCH_HOP_DELAYS`; benchmark builds, development only).
    #[cfg(feature = "bench")]
    pub hop_delays: crate::bench::HopDelays,
}

/// The location hints Durable Objects take (Cloudflare's list).
pub const LOCATION_HINTS: [&str; 9] = [
    "wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me",
];

/// The WhatsApp Cloud API: inbound webhook secrets and the Graph API the
/// replies and one-time codes go to.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatsApp {
    /// `WHATSAPP_APP_SECRET`: the key of `X-Hub-Signature-256`; `None`
    /// refuses every webhook delivery.
    pub app_secret: Option<String>,
    /// `WHATSAPP_VERIFY_TOKEN`: Meta's subscription handshake.
    pub verify_token: Option<String>,
    /// `WHATSAPP_ACCESS_TOKEN`: Bearer token of Graph API calls.
    pub access_token: Option<String>,
    /// `WHATSAPP_API_BASE`: the Graph API with its version.
    pub api_base: String,
    /// `WHATSAPP_PHONE_NUMBER_ID`: the number one-time codes are sent from.
    pub phone_number_id: Option<String>,
    /// `WHATSAPP_OTP_TEMPLATE`: the approved authentication template.
    pub otp_template: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Telegram {
    /// `TELEGRAM_BOT_TOKEN`: the Bot API token replies are sent with.
    pub bot_token: Option<String>,
    /// `TELEGRAM_SECRET_TOKEN`: `X-Telegram-Bot-Api-Secret-Token`; `None`
    /// refuses every webhook delivery.
    pub secret_token: Option<String>,
    /// `TELEGRAM_API_BASE`: the Bot API.
    pub api_base: String,
}

/// Used when SESSION_SECRET is unset in development only.
const DEV_SECRET: &[u8] = b"quiet-riots development secret; never used in staging or production";

/// Settings by name; secrets are looked up separately so they can never be
/// read from `[vars]`.
pub trait Source {
    fn var(&self, name: &str) -> Option<String>;
    fn secret(&self, name: &str) -> Option<String>;
}

impl Config {
    /// A client of the primary as configured; `request_id` goes along with
    /// every call.
    pub fn db(&self, request_id: &str) -> Db {
        let db = Db::new(
            &self.libsql_url,
            self.libsql_auth_token.as_deref(),
            self.db_timeout,
            request_id,
        );
        #[cfg(feature = "bench")]
        let db = db.with_hop_delay(self.hop_delays.worker_primary_ms);
        db
    }

    pub fn from_source(source: &impl Source) -> Result<Config, String> {
        let libsql_url = source
            .var("LIBSQL_URL")
            .filter(|u| !u.trim().is_empty())
            .ok_or("LIBSQL_URL is not set (a [vars] entry in wrangler.toml)")?;
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            match source.var(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{name} must be a whole number from 1 to {max}, not {v:?}"
                    )),
                },
            }
        };
        let environment = source
            .var("ENVIRONMENT")
            .unwrap_or_else(|| "development".to_owned());
        let session_secret = match source.secret("SESSION_SECRET").filter(|s| !s.is_empty()) {
            Some(s) if s.len() >= 32 => s.into_bytes(),
            Some(_) => return Err("SESSION_SECRET must be at least 32 characters".into()),
            None if environment == "development" => DEV_SECRET.to_vec(),
            None => {
                return Err(format!(
                    "SESSION_SECRET is not set (wrangler secret put SESSION_SECRET --env {environment})"
                ))
            }
        };
        let session_previous = source
            .secret("SESSION_SECRETS_PREVIOUS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once(':') {
                Some((kid, secret)) if !kid.is_empty() && secret.len() >= 32 => {
                    Ok((kid.to_owned(), secret.as_bytes().to_vec()))
                }
                _ => Err("SESSION_SECRETS_PREVIOUS must be kid:secret pairs (secrets of 32+ characters), separated by commas".to_owned()),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let rate_limits = crate::domain::rate_limit::Policies::from_overrides(
            source.var("RATE_LIMITS").as_deref(),
        )
        .map_err(|e| format!("RATE_LIMITS: {e}"))?;
        let secret = |name: &str| source.secret(name).filter(|t| !t.is_empty());
        let text_var = |name: &str, default: &str| {
            source
                .var(name)
                .map(|v| v.trim().trim_end_matches('/').to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let primary_location = match source.var("PRIMARY_LOCATION") {
            None => None,
            Some(v) if v.trim().is_empty() => None,
            Some(v) if LOCATION_HINTS.contains(&v.trim()) => Some(v.trim().to_owned()),
            Some(v) => {
                return Err(format!(
                    "PRIMARY_LOCATION must be one of {}, not {v:?}",
                    LOCATION_HINTS.join(", ")
                ))
            }
        };
        Ok(Config {
            primary_location,
            bot_token: secret("BOT_TOKEN"),
            whatsapp: WhatsApp {
                app_secret: secret("WHATSAPP_APP_SECRET"),
                verify_token: secret("WHATSAPP_VERIFY_TOKEN"),
                access_token: secret("WHATSAPP_ACCESS_TOKEN"),
                api_base: text_var("WHATSAPP_API_BASE", "https://graph.facebook.com/v21.0"),
                phone_number_id: source
                    .var("WHATSAPP_PHONE_NUMBER_ID")
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty()),
                otp_template: text_var("WHATSAPP_OTP_TEMPLATE", "link_code"),
            },
            telegram: Telegram {
                bot_token: secret("TELEGRAM_BOT_TOKEN"),
                secret_token: secret("TELEGRAM_SECRET_TOKEN"),
                api_base: text_var("TELEGRAM_API_BASE", "https://api.telegram.org"),
            },
            rate_limits,
            live_caps: {
                let d = crate::domain::live::Caps::default();
                crate::domain::live::Caps {
                    // The platform's most hibernatable sockets per object.
                    per_issue: number("LIVE_MAX_PER_ISSUE", d.per_issue as u64, 32_768)? as usize,
                    per_client: number("LIVE_MAX_PER_CLIENT", d.per_client as u64, 1_000)? as usize,
                }
            },
            limiter_fail_closed: Duration::from_secs(number(
                "LIMITER_FAIL_CLOSED_SECS",
                crate::domain::rate_limit::FAIL_CLOSED_MS / 1000,
                3600,
            )?),
            client_ip_header: source
                .var("CLIENT_IP_HEADER")
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "CF-Connecting-IP".to_owned()),
            session_secret,
            session_key_id: source
                .var("SESSION_KID")
                .filter(|k| !k.trim().is_empty())
                .unwrap_or_else(|| "k1".to_owned()),
            session_previous,
            admin_token: source.secret("CRON_SECRET").filter(|t| !t.is_empty()),
            cache_fresh_secs: number("CACHE_FRESH_SECS", 30, 3600)?,
            cache_stale_secs: number("CACHE_STALE_SECS", 86_400, 7 * 86_400)?,
            libsql_url: libsql_url.trim().to_owned(),
            libsql_auth_token: source.secret("LIBSQL_AUTH_TOKEN").filter(|t| !t.is_empty()),
            allowed_origins: source
                .var("ALLOWED_ORIGINS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            max_body_bytes: number("MAX_BODY_BYTES", 64 * 1024, 10 * 1024 * 1024)? as usize,
            db_timeout: Duration::from_millis(number("DB_TIMEOUT_MS", 3_000, 60_000)?),
            #[cfg(feature = "bench")]
            hop_delays: match source.var("BENCH_HOP_DELAYS") {
                Some(v) if crate::bench::allowed(&environment) => {
                    crate::bench::HopDelays::parse(&v)
                        .map_err(|e| format!("BENCH_HOP_DELAYS: {e}"))?
                }
                _ => crate::bench::HopDelays::default(),
            },
            environment,
        })
    }

    /// The isolate's configuration, read from `env` on its first request
    /// and shared after that. An isolate runs one version of the Worker,
    /// whose vars and secrets cannot change under it (a new deploy or
    /// secret starts new isolates), and reading some thirty bindings and
    /// parsing them cost about 0.2 ms of the isolate's time per request
    /// (a CPU profile of the read mix). A configuration that does not parse
    /// is not kept: every request reports it.
    pub fn load(env: &worker::Env) -> Result<Rc<Config>, String> {
        if let Some(config) = LOADED.with(|c| c.borrow().clone()) {
            return Ok(config);
        }
        let config = Rc::new(Config::from_source(&WorkerEnv(env))?);
        LOADED.with(|c| *c.borrow_mut() = Some(config.clone()));
        Ok(config)
    }
}

thread_local! {
    /// See [`Config::load`]. The Worker and its objects share the isolate's
    /// one thread.
    static LOADED: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

struct WorkerEnv<'a>(&'a worker::Env);

impl Source for WorkerEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|v| v.to_string())
    }
    fn secret(&self, name: &str) -> Option<String> {
        self.0.secret(name).ok().map(|v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(
        HashMap<&'static str, &'static str>,
        HashMap<&'static str, &'static str>,
    );

    impl Source for Map {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn secret(&self, name: &str) -> Option<String> {
            self.1.get(name).map(|v| v.to_string())
        }
    }

    #[test]
    fn parses_with_defaults() {
        let vars = HashMap::from([
            ("LIBSQL_URL", "http://127.0.0.1:8080"),
            ("ALLOWED_ORIGINS", "https://a.example, https://b.example,"),
        ]);
        let c = Config::from_source(&Map(vars, HashMap::from([("LIBSQL_AUTH_TOKEN", "t")])))
            .expect("config");
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.max_body_bytes, 65_536);
        assert_eq!(c.db_timeout, Duration::from_secs(3));
        assert_eq!(c.libsql_auth_token.as_deref(), Some("t"));
        assert_eq!(c.live_caps, crate::domain::live::Caps::default());
    }

    #[test]
    #[cfg(feature = "bench")]
    fn hop_delays_apply_in_development_only() {
        let vars = HashMap::from([
            ("LIBSQL_URL", "http://x"),
            ("BENCH_HOP_DELAYS", "worker-object=150,object-primary=2"),
        ]);
        let c = Config::from_source(&Map(vars.clone(), HashMap::new())).expect("config");
        assert_eq!(c.hop_delays.worker_object_ms, 150);
        assert_eq!(c.hop_delays.object_primary_ms, 2);
        assert_eq!(c.hop_delays.worker_primary_ms, 0);
        let mut staging = vars;
        staging.insert("ENVIRONMENT", "staging");
        let secrets = HashMap::from([("SESSION_SECRET", "s".repeat(32).leak() as &str)]);
        let c = Config::from_source(&Map(staging, secrets)).expect("config");
        assert_eq!(c.hop_delays, crate::bench::HopDelays::default());
        let vars = HashMap::from([("LIBSQL_URL", "http://x"), ("BENCH_HOP_DELAYS", "edge=5")]);
        let e = Config::from_source(&Map(vars, HashMap::new())).unwrap_err();
        assert!(e.contains("BENCH_HOP_DELAYS"), "{e}");
    }

    #[test]
    fn live_caps_are_configurable_within_the_platforms_limit() {
        let vars = HashMap::from([
            ("LIBSQL_URL", "http://x"),
            ("LIVE_MAX_PER_ISSUE", "3"),
            ("LIVE_MAX_PER_CLIENT", "2"),
        ]);
        let c = Config::from_source(&Map(vars, HashMap::new())).expect("config");
        assert_eq!((c.live_caps.per_issue, c.live_caps.per_client), (3, 2));
        let vars = HashMap::from([("LIBSQL_URL", "http://x"), ("LIVE_MAX_PER_ISSUE", "40000")]);
        let e = Config::from_source(&Map(vars, HashMap::new())).unwrap_err();
        assert!(e.contains("LIVE_MAX_PER_ISSUE"), "{e}");
    }

    #[test]
    fn production_needs_a_session_secret() {
        let vars = HashMap::from([("LIBSQL_URL", "http://x"), ("ENVIRONMENT", "production")]);
        let e = Config::from_source(&Map(vars.clone(), HashMap::new())).unwrap_err();
        assert!(e.contains("SESSION_SECRET"), "{e}");
        let short = Config::from_source(&Map(
            vars.clone(),
            HashMap::from([("SESSION_SECRET", "short")]),
        ));
        assert!(short.is_err());
        let secrets = HashMap::from([("SESSION_SECRET", "0123456789abcdef0123456789abcdef-long")]);
        assert!(Config::from_source(&Map(vars, secrets)).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let missing = Config::from_source(&Map(HashMap::new(), HashMap::new())).unwrap_err();
        assert!(missing.contains("LIBSQL_URL"));
        let vars = HashMap::from([("LIBSQL_URL", "http://x"), ("DB_TIMEOUT_MS", "soon")]);
        let bad = Config::from_source(&Map(vars, HashMap::new())).unwrap_err();
        assert!(bad.contains("DB_TIMEOUT_MS"), "{bad}");
    }

    #[test]
    fn the_primary_location_is_a_known_hint() {
        let with = |v: &'static str| {
            Config::from_source(&Map(
                HashMap::from([("LIBSQL_URL", "http://x"), ("PRIMARY_LOCATION", v)]),
                HashMap::new(),
            ))
        };
        assert_eq!(
            with(" weur ").expect("weur").primary_location.as_deref(),
            Some("weur")
        );
        assert_eq!(with("").expect("empty").primary_location, None);
        let bad = with("eu-west-1").unwrap_err();
        assert!(
            bad.contains("PRIMARY_LOCATION") && bad.contains("weur"),
            "{bad}"
        );
    }
}
