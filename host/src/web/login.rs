//! One-time login codes and the web sessions they open, with time passed
//! in. A code is six digits, valid for the configured time, good for one
//! login and for at most [`MAX_TRIES`] guesses; a new code for the same
//! address can be asked for once every [`RESEND_AFTER`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

/// Wrong guesses a code survives; the next one burns it.
pub const MAX_TRIES: u32 = 5;
/// How soon a new code may be sent to the same address.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);
/// How long a web session lasts without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Codes and sessions kept at most; beyond that new ones are refused
/// until old ones expire (a flood cannot grow memory without bound).
pub const MAX_ENTRIES: usize = 10_000;

/// Why a code could not be sent or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// A code was sent moments ago.
    #[error("a code was sent less than {0} seconds ago; check your chat or try again shortly")]
    TooSoon(u64),
    /// No code is pending for the address.
    #[error("no code is pending for this address; ask for one first")]
    NoCode,
    /// The code expired.
    #[error("the code has expired; ask for a new one")]
    Expired,
    /// The code is wrong.
    #[error("wrong code ({0} tries left)")]
    Wrong(u32),
    /// Too many wrong guesses: the code is void.
    #[error("too many wrong codes; ask for a new one")]
    TooManyTries,
    /// Too many codes or sessions are open.
    #[error("too many logins at once; try again in a few minutes")]
    Busy,
}

struct Pending {
    code: String,
    sent: Instant,
    expires: Instant,
    wrong: u32,
}

struct WebSession {
    account: String,
    last_used: Instant,
}

/// Pending codes by address, and open web sessions by token.
pub struct Logins {
    code_ttl: Duration,
    pending: HashMap<String, Pending>,
    sessions: HashMap<String, WebSession>,
    admins: HashMap<String, Instant>,
}

impl Logins {
    /// No codes or sessions yet; codes live `code_ttl`.
    pub fn new(code_ttl: Duration) -> Logins {
        Logins {
            code_ttl,
            pending: HashMap::new(),
            sessions: HashMap::new(),
            admins: HashMap::new(),
        }
    }

    /// How long a code stays valid.
    pub fn code_ttl(&self) -> Duration {
        self.code_ttl
    }

    /// A new code for `account`, replacing any earlier one.
    pub fn issue(&mut self, account: &str, now: Instant) -> Result<String, LoginError> {
        self.purge(now);
        if let Some(p) = self.pending.get(account) {
            let since = now.saturating_duration_since(p.sent);
            if since < RESEND_AFTER {
                return Err(LoginError::TooSoon(RESEND_AFTER.as_secs()));
            }
        } else if self.pending.len() >= MAX_ENTRIES {
            return Err(LoginError::Busy);
        }
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        self.pending.insert(
            account.to_string(),
            Pending {
                code: code.clone(),
                sent: now,
                expires: now + self.code_ttl,
                wrong: 0,
            },
        );
        Ok(code)
    }

    /// Checks `code` for `account`; a right one is used up and opens a
    /// session, whose token is returned.
    pub fn redeem(
        &mut self,
        account: &str,
        code: &str,
        now: Instant,
    ) -> Result<String, LoginError> {
        let Some(p) = self.pending.get_mut(account) else {
            return Err(LoginError::NoCode);
        };
        if now >= p.expires {
            self.pending.remove(account);
            return Err(LoginError::Expired);
        }
        if p.code != code.trim() {
            p.wrong += 1;
            if p.wrong >= MAX_TRIES {
                self.pending.remove(account);
                return Err(LoginError::TooManyTries);
            }
            return Err(LoginError::Wrong(MAX_TRIES - p.wrong));
        }
        self.pending.remove(account);
        self.purge(now);
        if self.sessions.len() >= MAX_ENTRIES {
            return Err(LoginError::Busy);
        }
        let token = token();
        self.sessions.insert(
            token.clone(),
            WebSession {
                account: account.to_string(),
                last_used: now,
            },
        );
        Ok(token)
    }

    /// The account a session token belongs to, if the session is open;
    /// using it keeps it open.
    pub fn account(&mut self, token: &str, now: Instant) -> Option<String> {
        let s = self.sessions.get_mut(token)?;
        if now.saturating_duration_since(s.last_used) >= SESSION_IDLE {
            self.sessions.remove(token);
            return None;
        }
        s.last_used = now;
        Some(s.account.clone())
    }

    /// Closes a session.
    pub fn logout(&mut self, token: &str) {
        self.sessions.remove(token);
        self.admins.remove(token);
    }

    /// Opens an admin session (after the admin token was given).
    pub fn admin_login(&mut self, now: Instant) -> Result<String, LoginError> {
        self.purge(now);
        if self.admins.len() >= MAX_ENTRIES {
            return Err(LoginError::Busy);
        }
        let token = token();
        self.admins.insert(token.clone(), now);
        Ok(token)
    }

    /// Whether `token` is an open admin session; using it keeps it open.
    pub fn is_admin(&mut self, token: &str, now: Instant) -> bool {
        match self.admins.get_mut(token) {
            Some(last) if now.saturating_duration_since(*last) < SESSION_IDLE => {
                *last = now;
                true
            }
            Some(_) => {
                self.admins.remove(token);
                false
            }
            None => false,
        }
    }

    fn purge(&mut self, now: Instant) {
        self.pending.retain(|_, p| now < p.expires);
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_used) < SESSION_IDLE);
        self.admins
            .retain(|_, last| now.saturating_duration_since(*last) < SESSION_IDLE);
    }
}

/// 128 random bits, hex.
fn token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn a_code_opens_one_session_once() {
        let mut l = Logins::new(TTL);
        let t0 = Instant::now();
        let code = l.issue("alice@x", t0).unwrap();
        assert_eq!(code.len(), 6);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        let token = l.redeem("alice@x", &code, t0).unwrap();
        assert_eq!(l.account(&token, t0).as_deref(), Some("alice@x"));
        assert_eq!(l.redeem("alice@x", &code, t0), Err(LoginError::NoCode));
        l.logout(&token);
        assert_eq!(l.account(&token, t0), None);
    }

    #[test]
    fn codes_expire_and_burn_after_wrong_guesses() {
        let mut l = Logins::new(TTL);
        let t0 = Instant::now();
        let code = l.issue("a@x", t0).unwrap();
        assert_eq!(l.redeem("a@x", &code, t0 + TTL), Err(LoginError::Expired));

        let t1 = t0 + TTL + RESEND_AFTER;
        let code = l.issue("a@x", t1).unwrap();
        let wrong = if code == "000000" { "000001" } else { "000000" };
        for left in (1..MAX_TRIES).rev() {
            assert_eq!(l.redeem("a@x", wrong, t1), Err(LoginError::Wrong(left)));
        }
        assert_eq!(l.redeem("a@x", wrong, t1), Err(LoginError::TooManyTries));
        assert_eq!(l.redeem("a@x", &code, t1), Err(LoginError::NoCode));
    }

    #[test]
    fn resending_is_throttled_and_sessions_idle_out() {
        let mut l = Logins::new(TTL);
        let t0 = Instant::now();
        l.issue("a@x", t0).unwrap();
        assert_eq!(
            l.issue("a@x", t0 + Duration::from_secs(5)),
            Err(LoginError::TooSoon(RESEND_AFTER.as_secs()))
        );
        let code = l.issue("a@x", t0 + RESEND_AFTER).unwrap();
        let token = l.redeem("a@x", &code, t0 + RESEND_AFTER).unwrap();
        assert!(
            l.account(&token, t0 + RESEND_AFTER + SESSION_IDLE)
                .is_none()
        );

        let admin = l.admin_login(t0).unwrap();
        assert!(l.is_admin(&admin, t0 + Duration::from_secs(60)));
        assert!(!l.is_admin(&admin, t0 + Duration::from_secs(60) + SESSION_IDLE));
        assert!(!l.is_admin("guess", t0));
    }
}
