//! Outbound registration (RFC 3261 §10): for each provider with
//! `register = true`, a REGISTER binding our Contact to its account,
//! answered challenges (401/407), refreshed before it expires, retried with
//! the registrar's Min-Expires after 423, backed off after failures, and
//! removed (`Expires: 0`) on shutdown. A provider that is not registered
//! counts as down.

use std::time::{Duration, Instant};

use super::super::digest::Challenge;
use super::super::message::{Message, StartLine, Transport};
use super::locate::{Targets, Waiter};
use super::timer::Timer;
use super::transactions::{ClientKey, Purpose};
use super::types::Event;
use super::{Dest, Endpoint};

/// The first wait after a failed registration; it doubles with each
/// failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Challenges answered in a row (with a fresh nonce each time) before the
/// credentials count as refused.
const MAX_CHALLENGES: u32 = 2;

/// Where a provider's registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is out (the first, a refresh after failure, or one
    /// answering a challenge).
    Registering,
    /// Registered until then; refreshed before.
    Registered {
        /// When the binding lapses unless refreshed.
        until: Instant,
    },
    /// The last try failed.
    Failed {
        /// Why, in words (the status and reason, or the timeout).
        reason: String,
        /// When the next try goes out.
        retry: Instant,
    },
    /// The binding was removed (on shutdown).
    Unregistered,
}

impl RegistrationState {
    /// Whether calls may go through (the binding is live).
    pub fn registered(&self) -> bool {
        matches!(self, RegistrationState::Registered { .. })
    }
}

/// One provider's registration.
#[derive(Debug)]
pub(super) struct Registration {
    pub(super) state: RegistrationState,
    call_id: String,
    tag: String,
    cseq: u32,
    /// The lifetime asked for (raised by a 423's Min-Expires).
    expires: u32,
    /// The answer to the last challenge, sent with the next REGISTER.
    auth: Option<(String, String)>,
    /// Challenges answered in a row.
    challenges: u32,
    /// Failures in a row (for the backoff).
    failures: u32,
    /// The REGISTER in flight is the removal.
    removing: bool,
    /// The REGISTER transaction in flight.
    pub(super) key: Option<ClientKey>,
    /// The registrar's target this try goes to: challenges are answered
    /// to it, and a removal goes where the binding is.
    dest: Option<Dest>,
    /// The registrar's other targets, tried in turn when `dest` answers
    /// 503, cannot be reached or does not answer (RFC 3263 §4.3).
    alternates: Vec<Dest>,
}

impl Endpoint {
    /// Sets up the registrations of the providers that ask for one; the
    /// first REGISTERs go out at `now`.
    pub(super) fn start_registrations(&mut self, now: Instant) {
        for i in 0..self.config.providers.len() {
            if !self.config.providers[i].register {
                self.registrations.push(None);
                continue;
            }
            let registration = Registration {
                state: RegistrationState::Registering,
                call_id: format!("{}@switchboard", self.token()),
                tag: self.token(),
                cseq: 0,
                expires: self.config.providers[i].expires.max(1),
                auth: None,
                challenges: 0,
                failures: 0,
                removing: false,
                key: None,
                dest: None,
                alternates: Vec::new(),
            };
            self.registrations.push(Some(registration));
            self.timers.set(Timer::Register(i), now);
        }
    }

    /// Each registering provider's name and state.
    pub fn registrations(&self) -> Vec<(String, RegistrationState)> {
        self.registrations
            .iter()
            .zip(&self.config.providers)
            .filter_map(|(r, p)| Some((p.name.clone(), r.as_ref()?.state.clone())))
            .collect()
    }

    /// Whether provider `i` must register and is not registered now.
    pub(super) fn unregistered(&self, i: usize) -> bool {
        matches!(self.registrations.get(i), Some(Some(r)) if !r.state.registered())
    }

    /// Removes every live registration (REGISTER with `Expires: 0`), for a
    /// shutdown; [`Endpoint::unregistering`] says when the answers are in.
    pub fn unregister_all(&mut self, now: Instant) {
        for i in 0..self.registrations.len() {
            let Some(Some(r)) = self.registrations.get_mut(i) else {
                continue;
            };
            self.timers.stop(&Timer::Register(i));
            if !r.state.registered() {
                r.state = RegistrationState::Unregistered;
                continue;
            }
            r.removing = true;
            self.send_register(now, i);
        }
    }

    /// Whether a removal sent by [`Endpoint::unregister_all`] still waits
    /// for its answer.
    pub fn unregistering(&self) -> bool {
        self.registrations
            .iter()
            .flatten()
            .any(|r| r.removing && r.key.as_ref().is_some_and(|k| self.clients.contains_key(k)))
    }

    /// The registration timer of provider `i`: the first try, a refresh or
    /// a retry after failure.
    pub(super) fn registration_due(&mut self, now: Instant, i: usize) {
        let Some(Some(r)) = self.registrations.get_mut(i) else {
            return;
        };
        if r.removing {
            return;
        }
        r.auth = None;
        r.challenges = 0;
        // A new try locates the registrar afresh.
        r.dest = None;
        r.alternates.clear();
        if !r.state.registered() {
            r.state = RegistrationState::Registering;
        }
        self.send_register(now, i);
    }

    fn send_register(&mut self, now: Instant, i: usize) {
        if let Some(Some(r)) = self.registrations.get(i)
            && let Some(dest) = r.dest
        {
            self.send_register_to(now, i, dest);
            return;
        }
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        let (registrar, transport) = (p.registrar().clone(), p.transport);
        if let Some(targets) = self.locate(now, &registrar, transport, Waiter::Register(i)) {
            self.registrar_located(now, i, targets);
        }
    }

    /// The registrar's address is known (or could not be found): the
    /// REGISTER goes to the first target we have a listener for.
    pub(super) fn registrar_located(&mut self, now: Instant, i: usize, targets: Targets) {
        let dests = match targets {
            Ok(dests) => dests,
            Err(e) => {
                self.registration_failed(now, i, e.to_string());
                return;
            }
        };
        let Some((dest, usable)) = self.first_usable(dests) else {
            self.registration_failed(
                now,
                i,
                "no listener for the registrar's address family".into(),
            );
            return;
        };
        if let Some(Some(r)) = self.registrations.get_mut(i) {
            r.dest = Some(dest);
            r.alternates = usable;
        }
        self.send_register_to(now, i, dest);
    }

    fn send_register_to(&mut self, now: Instant, i: usize, dest: Dest) {
        let branch = self.branch();
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        let Some(local) = self.local(dest.transport, dest.addr) else {
            return;
        };
        let registrar = p.registrar().clone();
        let account = p.account().unwrap_or(&self.config.user).to_string();
        let contact_user = p.contact_user.clone().unwrap_or_else(|| account.clone());
        let host = registrar.host.to_string();
        let suffix = if dest.transport == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        let contact = format!("<sip:{contact_user}@{}{suffix}>", self.advertised(local));
        let via = self.advertised(local);
        let Some(Some(r)) = self.registrations.get_mut(i) else {
            return;
        };
        r.cseq += 1;
        let expires = if r.removing { 0 } else { r.expires };
        let mut text = format!(
            "REGISTER sip:{registrar} SIP/2.0\r\nVia: SIP/2.0/{} {via};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{account}@{host}>;tag={}\r\nTo: <sip:{account}@{host}>\r\nCall-ID: {}\r\n\
             CSeq: {} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n",
            dest.transport, r.tag, r.call_id, r.cseq,
        );
        if let Some((name, value)) = &r.auth {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!(
            "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            self.config.user_agent
        ));
        let key = ClientKey::new(&branch, rsip::Method::Register);
        r.key = Some(key.clone());
        self.start_client(
            now,
            key,
            text.into_bytes(),
            dest,
            None,
            Purpose::Register(i),
        );
    }

    /// A final response to provider `i`'s REGISTER.
    pub(super) fn registration_response(
        &mut self,
        now: Instant,
        i: usize,
        status: u16,
        response: &Message,
    ) {
        if status < 200 {
            return;
        }
        let Some(Some(r)) = self.registrations.get_mut(i) else {
            return;
        };
        if r.removing && !matches!(status, 401 | 407) {
            r.state = RegistrationState::Unregistered;
            r.removing = false;
            let name = self.config.providers[i].name.clone();
            tracing::info!(provider = %name, status, "registration removed");
            self.emit_registration(i);
            return;
        }
        match status {
            200..=299 => {
                let granted = granted_expires(response).unwrap_or(r.expires);
                if granted == 0 {
                    self.registration_failed(now, i, "the registrar granted 0 seconds".into());
                    return;
                }
                let lifetime = Duration::from_secs(u64::from(granted));
                let margin = Duration::from_secs(u64::from((granted / 5).clamp(1, 60)));
                r.state = RegistrationState::Registered {
                    until: now + lifetime,
                };
                r.failures = 0;
                r.challenges = 0;
                r.auth = None;
                self.timers
                    .set(Timer::Register(i), now + lifetime.saturating_sub(margin));
                let name = &self.config.providers[i].name;
                tracing::info!(provider = %name, granted, "registered");
                self.emit_registration(i);
            }
            401 | 407 => {
                let removing = r.removing;
                let cnonce = self.token();
                match self.register_challenge(i, status, response, &cnonce) {
                    Ok(answer) => {
                        if let Some(Some(r)) = self.registrations.get_mut(i) {
                            r.auth = Some(answer);
                            r.challenges += 1;
                        }
                        self.send_register(now, i);
                    }
                    Err(reason) if removing => {
                        let name = &self.config.providers[i].name;
                        tracing::warn!(provider = %name, %reason, "cannot remove the registration");
                        if let Some(Some(r)) = self.registrations.get_mut(i) {
                            r.removing = false;
                            r.state = RegistrationState::Unregistered;
                        }
                        self.emit_registration(i);
                    }
                    Err(reason) => self.registration_failed(now, i, reason),
                }
            }
            423 => {
                let min = response
                    .header("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|m| (1..=86_400).contains(m));
                match min {
                    Some(min) => {
                        r.expires = r.expires.max(min);
                        self.send_register(now, i);
                    }
                    None => self.registration_failed(
                        now,
                        i,
                        "423 Interval Too Brief without a usable Min-Expires".into(),
                    ),
                }
            }
            _ => {
                let reason = match &response.start {
                    StartLine::Response { reason, .. } if !reason.is_empty() => {
                        format!("{status} {reason}")
                    }
                    _ => format!("status {status}"),
                };
                if status == 503 && self.register_next_target(now, i, &reason) {
                    return;
                }
                self.registration_failed(now, i, reason);
            }
        }
    }

    /// Sends provider `i`'s REGISTER to the registrar's next target, if
    /// one is left (`why` the current one failed). Whether it did.
    fn register_next_target(&mut self, now: Instant, i: usize, why: &str) -> bool {
        let Some(Some(r)) = self.registrations.get_mut(i) else {
            return false;
        };
        if r.removing || r.alternates.is_empty() {
            return false;
        }
        let next = r.alternates.remove(0);
        tracing::info!(provider = %self.config.providers[i].name, to = %next.addr, %why,
            "registering with the registrar's next server");
        r.dest = Some(next);
        r.auth = None;
        r.challenges = 0;
        self.stats.failovers += 1;
        self.send_register_to(now, i, next);
        true
    }

    /// Provider `i`'s REGISTER could not be sent (`why`: the connection
    /// failed).
    pub(super) fn registration_transport_failed(&mut self, now: Instant, i: usize, why: String) {
        self.registration_lost(now, i, why);
    }

    /// Provider `i`'s REGISTER got no final answer in time.
    pub(super) fn registration_timed_out(&mut self, now: Instant, i: usize) {
        self.registration_lost(now, i, "no answer from the registrar".into());
    }

    /// Provider `i`'s REGISTER got no answer at all (`why`): a removal
    /// counts as done, anything else as a failure.
    fn registration_lost(&mut self, now: Instant, i: usize, why: String) {
        if self.register_next_target(now, i, &why) {
            return;
        }
        if let Some(Some(r)) = self.registrations.get_mut(i)
            && r.removing
        {
            r.removing = false;
            r.state = RegistrationState::Unregistered;
            self.emit_registration(i);
            return;
        }
        self.registration_failed(now, i, why);
    }

    /// The answer to a challenge to provider `i`'s REGISTER, or why there is none.
    fn register_challenge(
        &self,
        i: usize,
        status: u16,
        response: &Message,
        cnonce: &str,
    ) -> Result<(String, String), String> {
        let p = &self.config.providers[i];
        let Some(Some(r)) = self.registrations.get(i) else {
            return Err("not registering".into());
        };
        let (Some(user), Some(pass)) = (p.account(), p.password.as_deref()) else {
            return Err(format!(
                "{status}: the registrar wants credentials and none are configured"
            ));
        };
        let (challenge_name, answer_name) = if status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let values: Vec<String> = response.header_values(challenge_name).collect();
        let challenge = Challenge::best(values.iter().map(String::as_str))
            .map_err(|e| format!("{status} with a challenge we cannot answer: {e}"))?;
        if let Some(realm) = &p.realm
            && &challenge.realm != realm
        {
            return Err(format!(
                "{status}: challenged for realm {:?}, not the configured {realm:?}",
                challenge.realm
            ));
        }
        if r.challenges >= MAX_CHALLENGES && !challenge.stale {
            return Err(format!(
                "{status} again after {} answers: the registrar refuses the credentials",
                r.challenges
            ));
        }
        let uri = format!("sip:{}", p.registrar());
        let answer = challenge.answer(user, pass, "REGISTER", &uri, 1, cnonce);
        Ok((answer_name.to_string(), answer))
    }

    fn registration_failed(&mut self, now: Instant, i: usize, reason: String) {
        let Some(Some(r)) = self.registrations.get_mut(i) else {
            return;
        };
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << r.failures.min(10))
            .min(MAX_BACKOFF);
        r.failures += 1;
        r.auth = None;
        r.challenges = 0;
        r.state = RegistrationState::Failed {
            reason: reason.clone(),
            retry: now + backoff,
        };
        self.timers.set(Timer::Register(i), now + backoff);
        let name = &self.config.providers[i].name;
        tracing::warn!(provider = %name, %reason, retry_in = ?backoff, "registration failed");
        self.emit_registration(i);
    }

    fn emit_registration(&mut self, i: usize) {
        let (Some(p), Some(Some(r))) = (self.config.providers.get(i), self.registrations.get(i))
        else {
            return;
        };
        self.events.push_back(Event::Registration {
            name: p.name.clone(),
            state: r.state.clone(),
        });
    }
}

/// The lifetime a 2xx to REGISTER granted: our Contact's `expires`
/// parameter, else the Expires header.
fn granted_expires(response: &Message) -> Option<u32> {
    let from_contact = response.header_values("Contact").find_map(|c| {
        c.split(';').find_map(|param| {
            let (k, v) = param.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| v.trim().parse().ok())?
        })
    });
    from_contact.or_else(|| response.header("Expires")?.trim().parse().ok())
}
