//! The web pages and the admin API (axum).
//!
//! - [`public`]: the landing page with the Invite form, and the rates page.
//! - [`account`]: the account page, reached with a one-time code the bot
//!   sends over chat ([`login`] keeps codes and sessions, time passed in).
//! - [`admin`]: plugin slots (upload, rollback, shadow router), live
//!   sessions (end one), providers, credit top-up; pages behind a login and
//!   a JSON API behind the admin token.
//! - [`metrics`]: `/metrics` (Prometheus text) and `/health`.
//! - [`layout`]: the page frame and the small helpers every page uses.

pub mod account;
pub mod admin;
pub mod layout;
pub mod login;
pub mod metrics;
pub mod public;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::chat::Messenger;
use crate::chat::limit::{RateLimit, RateLimiter, Verdict};
use crate::session::SessionManager;

/// The `[web]` section: where the pages are served and the admin token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The listen address (`127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The token the admin pages and API ask for (at least 16 characters).
    pub admin_token: String,
    /// How long a login code sent over chat stays valid, in seconds.
    #[serde(default = "default_code_ttl")]
    pub code_ttl_secs: u64,
    /// The largest plugin upload accepted, in bytes.
    #[serde(default = "default_upload_bytes")]
    pub max_upload_bytes: usize,
}

fn default_code_ttl() -> u64 {
    600
}

fn default_upload_bytes() -> usize {
    16 << 20
}

impl WebConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.admin_token.chars().count() < 16 {
            return Err("web.admin_token must be at least 16 characters".into());
        }
        if !(60..=3600).contains(&self.code_ttl_secs) {
            return Err(format!(
                "web.code_ttl_secs = {} is not between 60 and 3600",
                self.code_ttl_secs
            ));
        }
        if !(64 << 10..=256 << 20).contains(&self.max_upload_bytes) {
            return Err(format!(
                "web.max_upload_bytes = {} is not between 65536 and 268435456",
                self.max_upload_bytes
            ));
        }
        Ok(())
    }
}

/// Errors of the web front end.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address cannot be bound.
    #[error("cannot listen for web requests on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the web server failed: {0}")]
    Serve(std::io::Error),
}

/// What every handler reads.
pub struct WebState {
    /// Sessions, and through them SIP, the mixer, billing and the plugins.
    pub manager: Arc<SessionManager>,
    /// Invitations and login codes go out through it.
    pub messenger: Arc<dyn Messenger>,
    /// The bot's chat address, shown on the pages.
    pub bot_address: String,
    /// Login codes and web sessions.
    pub logins: Mutex<login::Logins>,
    /// Invitations: one per address per minute, and 60 a minute in all.
    invites: Mutex<(RateLimiter, RateLimiter)>,
    admin_digest: [u8; 32],
    max_upload_bytes: usize,
    started: Instant,
    /// Where reload and drain requests go (the process that runs the
    /// host); none: the admin API answers them as unavailable.
    control: Option<tokio::sync::mpsc::UnboundedSender<crate::service::Control>>,
}

impl WebState {
    /// The state for `config`.
    pub fn new(
        config: &WebConfig,
        manager: Arc<SessionManager>,
        messenger: Arc<dyn Messenger>,
        bot_address: String,
    ) -> WebState {
        WebState {
            manager,
            messenger,
            bot_address,
            logins: Mutex::new(login::Logins::new(std::time::Duration::from_secs(
                config.code_ttl_secs,
            ))),
            invites: Mutex::new((
                RateLimiter::new(RateLimit {
                    burst: 1,
                    per_minute: 1,
                }),
                RateLimiter::new(RateLimit {
                    burst: 30,
                    per_minute: 60,
                }),
            )),
            admin_digest: Sha256::digest(config.admin_token.as_bytes()).into(),
            max_upload_bytes: config.max_upload_bytes,
            started: Instant::now(),
            control: None,
        }
    }

    /// Lets `POST /admin/api/reload` and `/admin/api/drain` reach the
    /// process through `control`.
    pub fn with_control(
        mut self,
        control: tokio::sync::mpsc::UnboundedSender<crate::service::Control>,
    ) -> WebState {
        self.control = Some(control);
        self
    }

    /// Sends a reload or drain request to the process, if one listens.
    pub(crate) fn control(&self, request: crate::service::Control) -> bool {
        self.control
            .as_ref()
            .is_some_and(|c| c.send(request).is_ok())
    }

    /// Whether `token` is the admin token. Digests are compared, so the
    /// time taken says nothing about how much of the token was right.
    pub fn is_admin_token(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest
            .iter()
            .zip(self.admin_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Whether an invitation to `address` may go out now: false when one
    /// went to it in the last minute, or too many went out in all.
    pub fn may_invite(&self, address: &str, now: Instant) -> bool {
        let mut limits = self.invites.lock().unwrap_or_else(|e| e.into_inner());
        let (each, all) = &mut *limits;
        matches!(each.check(now, address), Verdict::Allowed)
            && matches!(all.check(now, "*"), Verdict::Allowed)
    }

    fn logins(&self) -> std::sync::MutexGuard<'_, login::Logins> {
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every route of the site.
pub fn router(state: Arc<WebState>) -> Router {
    let upload_limit = state.max_upload_bytes;
    Router::new()
        .merge(public::routes())
        .merge(account::routes())
        .merge(admin::routes().layer(DefaultBodyLimit::max(upload_limit)))
        .merge(metrics::routes())
        // Forms are small; only admin uploads get more.
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(state)
}

/// Binds `addr`; the listener's address says which port port 0 became.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, WebError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

/// Serves the site on `listener` until the task is dropped or aborted.
pub fn spawn(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
) -> tokio::task::JoinHandle<Result<(), WebError>> {
    tokio::spawn(async move {
        axum::serve(listener, router(state))
            .await
            .map_err(WebError::Serve)
    })
}

/// The value of cookie `name` in a request.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a session cookie scoped to `path` (`max_age`
/// 0 deletes it).
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, max_age: u64) -> String {
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sb_account=xyz".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sb_account"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn config_is_checked() {
        let mut c = WebConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: "short".into(),
            code_ttl_secs: 600,
            max_upload_bytes: 1 << 20,
        };
        assert!(c.validate().unwrap_err().contains("admin_token"));
        c.admin_token = "a-token-long-enough".into();
        assert!(c.validate().is_ok());
        c.code_ttl_secs = 5;
        assert!(c.validate().unwrap_err().contains("code_ttl_secs"));
    }
}
