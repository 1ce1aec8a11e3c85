//! Provider health: an OPTIONS ping to each provider that asks for one,
//! every `options_interval_secs`, and an event when one goes up or down.

use std::time::{Duration, Instant};

use super::locate::{Targets, Waiter};
use super::timer::Timer;
use super::transactions::{ClientKey, Purpose};
use super::types::Event;
use super::{Dest, Endpoint};

impl Endpoint {
    /// Pings provider `i` and arms its next ping.
    pub(super) fn ping(&mut self, now: Instant, i: usize) {
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        if state.next_ping > now {
            let at = state.next_ping;
            self.timers.set(Timer::Ping(i), at);
            return;
        }
        let interval = Duration::from_secs(self.config.options_interval_secs.clamp(1, 86_400));
        state.next_ping = now + interval;
        self.timers.set(Timer::Ping(i), now + interval);
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        if state.in_flight {
            return;
        }
        state.in_flight = true;
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        let (address, transport) = (p.address.clone(), p.transport);
        if let Some(targets) = self.locate(now, &address, transport, Waiter::Ping(i)) {
            self.ping_located(now, i, targets);
        }
    }

    /// The provider's address is known: the OPTIONS goes to its first
    /// target, and to the next when one does not answer; it is up when
    /// any answers. A name that cannot be located counts as down.
    pub(super) fn ping_located(&mut self, now: Instant, i: usize, targets: Targets) {
        let dests = match targets {
            Ok(dests) => dests,
            Err(e) => {
                if let Some(p) = self.config.providers.get(i) {
                    tracing::warn!(provider = %p.name, error = %e, "provider not located");
                }
                Vec::new()
            }
        };
        let Some((dest, usable)) = self.first_usable(dests) else {
            self.provider_result(now, i, false);
            return;
        };
        if let Some(state) = self.providers.get_mut(i) {
            state.alternates = usable;
        }
        self.send_ping(now, i, dest);
    }

    fn send_ping(&mut self, now: Instant, i: usize, dest: Dest) {
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        let Some(local) = self.local(dest.transport, dest.addr) else {
            return;
        };
        let host = p.address.to_string();
        let (branch, tag, call_id) = (self.branch(), self.token(), self.token());
        let text = format!(
            "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{}@{}>;tag={tag}\r\nTo: <sip:{host}>\r\nCall-ID: {call_id}@{}\r\nCSeq: 1 OPTIONS\r\n\
             Accept: application/sdp\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            dest.transport,
            self.advertised(local),
            self.config.user,
            self.advertised(local),
            self.advertised_host(local),
            self.config.user_agent
        );
        self.start_client(
            now,
            ClientKey::new(&branch, rsip::Method::Options),
            text.into_bytes(),
            dest,
            None,
            Purpose::Options(i),
        );
    }

    /// Provider `i` answered its ping (`up`), or did not (`!up`).
    pub(super) fn provider_result(&mut self, now: Instant, i: usize, up: bool) {
        let Some(state) = self.providers.get_mut(i) else {
            return;
        };
        // Another of its servers may answer: ask it before calling it down.
        if !up && !state.alternates.is_empty() {
            let next = state.alternates.remove(0);
            self.send_ping(now, i, next);
            return;
        }
        state.alternates.clear();
        state.in_flight = false;
        if state.up == Some(up) {
            return;
        }
        state.up = Some(up);
        let Some(p) = self.config.providers.get(i) else {
            return;
        };
        tracing::info!(provider = %p.name, up, "provider status changed");
        self.events.push_back(Event::Provider {
            name: p.name.clone(),
            up,
        });
    }
}
