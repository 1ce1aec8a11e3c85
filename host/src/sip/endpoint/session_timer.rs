//! RFC 4028 session timers, as the UAC of our calls: we offer
//! `Supported: timer` with `Session-Expires` and `Min-SE`, retry a 422 with
//! the interval it asks for, and follow the refresher the 2xx names. When we
//! refresh, a re-INVITE goes out at half the interval; when the far end
//! does, its refresh must come before the expiry, else we send BYE at the
//! interval minus min(32 s, a third of it) (§10). A refresh that fails with
//! 408 or 481, or gets no answer, ends the dialog the same way.

use std::time::{Duration, Instant};

use super::Endpoint;
use super::call::CallState;
use super::timer::Timer;
use super::transactions::{ClientKey, Purpose};
use super::types::{CallEvent, CallId};
use crate::sip::message::Message;

/// The smallest interval we accept (and say so in `Min-SE`), RFC 4028 §5.
pub const MIN_SE_SECS: u32 = 90;

/// Who refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refresher {
    /// We do, with re-INVITEs.
    Us,
    /// The far end does; we watch for its refreshes.
    Them,
}

/// A dialog's session timer, as the last 2xx set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SessionTimer {
    /// The session interval.
    pub(super) interval: Duration,
    /// Who refreshes.
    pub(super) refresher: Refresher,
}

impl SessionTimer {
    /// Reads `Session-Expires: 1800;refresher=uac` from a 2xx to our
    /// INVITE (we are the UAC): none when the far end does not use timers.
    /// A 2xx without `refresher` leaves it to us (§7.2).
    pub(super) fn from_answer(response: &Message) -> Option<SessionTimer> {
        let (secs, refresher) = parse_session_expires(&response.header("Session-Expires")?)?;
        Some(SessionTimer {
            interval: Duration::from_secs(u64::from(secs.max(MIN_SE_SECS))),
            refresher: match refresher.as_deref() {
                Some("uas") => Refresher::Them,
                _ => Refresher::Us,
            },
        })
    }

    /// When the side that does not refresh gives up: the interval minus
    /// min(32 s, a third of it) after the last refresh (§10).
    pub(super) fn expiry(&self, from: Instant) -> Instant {
        from + self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }

    /// When we refresh: half the interval after the last refresh (§7.4).
    pub(super) fn refresh_at(&self, from: Instant) -> Instant {
        from + self.interval / 2
    }
}

/// `1800;refresher=uac` → (1800, Some("uac")).
pub(super) fn parse_session_expires(value: &str) -> Option<(u32, Option<String>)> {
    let mut parts = value.split(';');
    let secs: u32 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| value.trim().to_ascii_lowercase())
    });
    Some((secs, refresher))
}

impl Endpoint {
    /// The headers our INVITE (and refreshes) carry to ask for a session
    /// timer of `secs`; none when timers are off.
    pub(super) fn session_timer_headers(
        &self,
        secs: u32,
        refresher: Option<&str>,
    ) -> Vec<(String, String)> {
        if secs == 0 {
            return Vec::new();
        }
        let value = match refresher {
            Some(r) => format!("{secs};refresher={r}"),
            None => secs.to_string(),
        };
        vec![
            ("Supported".into(), "timer".into()),
            ("Session-Expires".into(), value),
            ("Min-SE".into(), MIN_SE_SECS.to_string()),
        ]
    }

    /// The 2xx to our INVITE (or to our refresh) set the session timer:
    /// arm the refresh or the watch.
    pub(super) fn arm_session_timer(&mut self, now: Instant, id: CallId, response: &Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.session = SessionTimer::from_answer(response);
        self.timers.stop(&Timer::SessionRefresh(id));
        self.timers.stop(&Timer::SessionExpiry(id));
        let Some(session) = call.session else {
            return;
        };
        if session.refresher == Refresher::Us {
            self.timers
                .set(Timer::SessionRefresh(id), session.refresh_at(now));
        }
        self.timers
            .set(Timer::SessionExpiry(id), session.expiry(now));
    }

    /// The far end refreshed (a re-INVITE or UPDATE in the dialog): the
    /// session lives for another interval.
    pub(super) fn session_refreshed(&mut self, now: Instant, id: CallId, request: &Message) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some((secs, _)) = request
            .header("Session-Expires")
            .and_then(|v| parse_session_expires(&v))
        {
            // Their request makes them the refresher from now on.
            call.session = Some(SessionTimer {
                interval: Duration::from_secs(u64::from(secs.max(MIN_SE_SECS))),
                refresher: Refresher::Them,
            });
            self.timers.stop(&Timer::SessionRefresh(id));
        }
        if let Some(session) = call.session {
            self.timers
                .set(Timer::SessionExpiry(id), session.expiry(now));
        }
    }

    /// Our turn to refresh: a re-INVITE with our current offer.
    pub(super) fn session_refresh_due(&mut self, now: Instant, id: CallId) {
        let branch = self.branch();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if !matches!(call.state, CallState::Confirmed(_)) {
            return;
        }
        let Some(session) = call.session else {
            return;
        };
        call.cseq += 1;
        let body = call.offer.to_bytes();
        let secs = u32::try_from(session.interval.as_secs()).unwrap_or(u32::MAX);
        let mut extra = self.session_timer_headers(secs, Some("uac"));
        extra.push(("Content-Type".into(), "application/sdp".into()));
        let Some(bytes) =
            self.build_request(id, rsip::Method::Invite, &branch, None, &extra, &body)
        else {
            return;
        };
        let Some(dest) = self.dialog_dest_of(id) else {
            return;
        };
        tracing::debug!(call = id.0, "refreshing the session (RFC 4028)");
        let key = ClientKey::new(&branch, rsip::Method::Invite);
        self.start_client(now, key, bytes, dest, Some(id), Purpose::Refresh);
    }

    /// The answer to our refresh. A 2xx is ACKed and re-arms the timer;
    /// 408 and 481 end the dialog (RFC 3261 §14.1); other failures leave it
    /// to the expiry.
    pub(super) fn refresh_response(
        &mut self,
        now: Instant,
        id: CallId,
        status: u16,
        response: Message,
    ) {
        if status < 200 {
            return;
        }
        if status < 300 {
            let branch = self.branch();
            let ack = self.build_request(
                id,
                rsip::Method::Ack,
                &branch,
                Some(response.cseq),
                &[],
                &[],
            );
            if let (Some(ack), Some(dest)) = (ack, self.dialog_dest_of(id)) {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.ack = Some((ack.clone(), dest));
                }
                self.send(dest, ack);
            }
            self.arm_session_timer(now, id, &response);
            return;
        }
        if status == 408 || status == 481 {
            self.session_expired(now, id, &format!("session refresh answered {status}"));
        }
    }

    /// The session timer ran out (no refresh came, or ours failed): BYE.
    pub(super) fn session_expired(&mut self, now: Instant, id: CallId, why: &str) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !matches!(call.state, CallState::Confirmed(_)) {
            return;
        }
        tracing::warn!(call = id.0, why, "session expired (RFC 4028): hanging up");
        self.timers.stop(&Timer::SessionRefresh(id));
        self.timers.stop(&Timer::SessionExpiry(id));
        self.send_bye(now, id);
        self.finish(
            id,
            CallEvent::Expired {
                reason: format!("session expired: {why}"),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_reads_value_and_refresher() {
        assert_eq!(
            parse_session_expires("1800;refresher=uac"),
            Some((1800, Some("uac".into())))
        );
        assert_eq!(
            parse_session_expires(" 90 ; Refresher = UAS"),
            Some((90, Some("uas".into())))
        );
        assert_eq!(parse_session_expires("600"), Some((600, None)));
        assert_eq!(parse_session_expires("soon"), None);
    }

    #[test]
    fn expiry_is_the_interval_less_a_third_or_32_s() {
        let t0 = Instant::now();
        let short = SessionTimer {
            interval: Duration::from_secs(90),
            refresher: Refresher::Them,
        };
        assert_eq!(short.expiry(t0), t0 + Duration::from_secs(60));
        assert_eq!(short.refresh_at(t0), t0 + Duration::from_secs(45));
        let long = SessionTimer {
            interval: Duration::from_secs(1800),
            refresher: Refresher::Us,
        };
        assert_eq!(long.expiry(t0), t0 + Duration::from_secs(1768));
    }
}
