//! `/metrics` in the Prometheus text format (version 0.0.4) and `/health`.
//!
//! The figures are read at scrape time from the counters each part keeps
//! (sessions, plugin slots, the shadow router, the mixer, the settler,
//! provider statistics), so there is no registry to keep in step.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::WebState;
use crate::billing::unix_ms;
use crate::plugin::SlotName;
use crate::session::END_REASONS;
use crate::session::task::end_reason_name;
use std::sync::atomic::Ordering;

/// The metrics and health routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
}

/// Prometheus text: one family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads one counter of a slot.
type SlotCounter = fn(&crate::plugin::SlotStats) -> u64;

/// The whole exposition for the host behind `state`.
pub fn render(state: &WebState) -> String {
    let services = state.manager.services();
    let mut e = Exposition::default();
    let c = &services.counters;
    e.family(
        "switchboard_sessions_live",
        "gauge",
        "Callback sessions in progress.",
    )
    .sample("switchboard_sessions_live", &[], state.manager.live());
    e.family(
        "switchboard_sessions_started_total",
        "counter",
        "Callback sessions started.",
    )
    .sample(
        "switchboard_sessions_started_total",
        &[],
        c.started.load(Ordering::Relaxed),
    );
    e.family(
        "switchboard_sessions_refused_total",
        "counter",
        "CALLBACKs refused before any leg was rung.",
    )
    .sample(
        "switchboard_sessions_refused_total",
        &[],
        c.refused.load(Ordering::Relaxed),
    );
    e.family(
        "switchboard_sessions_ended_total",
        "counter",
        "Callback sessions ended, by reason.",
    );
    for (i, reason) in END_REASONS.iter().enumerate() {
        e.sample(
            "switchboard_sessions_ended_total",
            &[("reason", end_reason_name(*reason))],
            c.ended[i].load(Ordering::Relaxed),
        );
    }
    e.family(
        "switchboard_leg_attempts_total",
        "counter",
        "Call attempts dialled (each failover attempt counts).",
    )
    .sample(
        "switchboard_leg_attempts_total",
        &[],
        c.attempts.load(Ordering::Relaxed),
    );
    e.family(
        "switchboard_legs_answered_total",
        "counter",
        "Legs answered.",
    )
    .sample(
        "switchboard_legs_answered_total",
        &[],
        c.answered.load(Ordering::Relaxed),
    );

    let slots: Vec<_> = SlotName::ALL
        .into_iter()
        .map(|s| (s.as_str(), services.plugins.stats(s)))
        .collect();
    let plugin_families: [(&str, &str, SlotCounter); 12] = [
        (
            "switchboard_plugin_calls_total",
            "Plugin calls made.",
            |s| s.calls,
        ),
        (
            "switchboard_plugin_fallbacks_total",
            "Calls answered by an older version or the default.",
            |s| s.fallbacks,
        ),
        (
            "switchboard_plugin_unanswered_total",
            "Calls no version answered.",
            |s| s.unanswered,
        ),
        (
            "switchboard_plugin_traps_total",
            "Version calls that trapped.",
            |s| s.traps,
        ),
        (
            "switchboard_plugin_out_of_fuel_total",
            "Version calls that used up their fuel budget.",
            |s| s.out_of_fuel,
        ),
        (
            "switchboard_plugin_deadlines_total",
            "Version calls stopped at the wall-clock backstop.",
            |s| s.deadlines,
        ),
        (
            "switchboard_plugin_suspicious_total",
            "Answers unlike anything conformance accepts (parser: a phone leg not in the message; router: try-next after 486/600/603).",
            |s| s.suspicious,
        ),
        (
            "switchboard_plugin_breaker_trips_total",
            "Versions rolled back by the circuit breaker.",
            |s| s.breaker_trips,
        ),
        (
            "switchboard_plugin_memory_faults_total",
            "Version calls that hit the memory cap.",
            |s| s.memory_faults,
        ),
        (
            "switchboard_plugin_invalid_total",
            "Version calls that returned an invalid result.",
            |s| s.invalid,
        ),
        (
            "switchboard_plugin_reloads_total",
            "New versions made active.",
            |s| s.loads,
        ),
        (
            "switchboard_plugin_rejected_total",
            "Candidate versions refused.",
            |s| s.rejected,
        ),
    ];
    for (name, help, value) in plugin_families {
        e.family(name, "counter", help);
        for (slot, stats) in &slots {
            e.sample(name, &[("slot", slot)], value(stats));
        }
    }
    e.family(
        "switchboard_plugin_rollbacks_total",
        "counter",
        "Rollbacks made.",
    );
    for (slot, stats) in &slots {
        e.sample(
            "switchboard_plugin_rollbacks_total",
            &[("slot", slot)],
            stats.rollbacks,
        );
    }
    e.family(
        "switchboard_plugin_fuel_budget",
        "gauge",
        "Fuel (WebAssembly instructions) one call of the slot may use.",
    );
    for (slot, stats) in &slots {
        e.sample(
            "switchboard_plugin_fuel_budget",
            &[("slot", slot)],
            stats.fuel_budget,
        );
    }
    e.family(
        "switchboard_plugin_active_info",
        "gauge",
        "The active version of each slot (value 1).",
    );
    for (slot, stats) in &slots {
        e.sample(
            "switchboard_plugin_active_info",
            &[("slot", slot), ("version", stats.active.as_str())],
            1,
        );
    }
    if let Some(s) = services.plugins.shadow_stats() {
        e.family(
            "switchboard_shadow_requests_total",
            "counter",
            "Routing requests seen while a shadow router runs.",
        )
        .sample(
            "switchboard_shadow_requests_total",
            &[("version", &s.version)],
            s.requests,
        );
        e.family(
            "switchboard_shadow_compared_total",
            "counter",
            "Routing requests the shadow router answered, by outcome.",
        );
        for (outcome, n) in [
            ("same", s.same),
            ("first_differs", s.first_differs),
            ("order_differs", s.order_differs),
        ] {
            e.sample(
                "switchboard_shadow_compared_total",
                &[("version", &s.version), ("outcome", outcome)],
                n,
            );
        }
        e.family(
            "switchboard_shadow_failed_total",
            "counter",
            "Routing requests the shadow router failed on.",
        )
        .sample(
            "switchboard_shadow_failed_total",
            &[("version", &s.version)],
            s.failed,
        );
        e.family(
            "switchboard_shadow_skipped_total",
            "counter",
            "Routing requests skipped because the shadow was behind.",
        )
        .sample(
            "switchboard_shadow_skipped_total",
            &[("version", &s.version)],
            s.skipped,
        );
    }

    let m = services.media.stats();
    e.family(
        "switchboard_mixer_conferences",
        "gauge",
        "Conferences open in the mixer.",
    )
    .sample("switchboard_mixer_conferences", &[], m.conferences);
    e.family(
        "switchboard_mixer_legs",
        "gauge",
        "Media legs open in the mixer.",
    )
    .sample("switchboard_mixer_legs", &[], m.legs);
    e.family(
        "switchboard_mixer_frames_total",
        "counter",
        "Frames sent (one per leg per 20 ms tick).",
    )
    .sample("switchboard_mixer_frames_total", &[], m.frames);
    e.family(
        "switchboard_mixer_late_frames_total",
        "counter",
        "Frames sent more than one period late, or skipped.",
    )
    .sample("switchboard_mixer_late_frames_total", &[], m.late_frames);
    e.family(
        "switchboard_mixer_datagrams_in_total",
        "counter",
        "RTP datagrams received.",
    )
    .sample("switchboard_mixer_datagrams_in_total", &[], m.datagrams_in);
    e.family(
        "switchboard_mixer_datagrams_refused_total",
        "counter",
        "Datagrams refused (not RTP, wrong source).",
    )
    .sample(
        "switchboard_mixer_datagrams_refused_total",
        &[],
        m.datagrams_refused,
    );
    e.family(
        "switchboard_mixer_send_errors_total",
        "counter",
        "Datagrams that could not be sent.",
    )
    .sample("switchboard_mixer_send_errors_total", &[], m.send_errors);
    e.family(
        "switchboard_mixer_max_lateness_seconds",
        "gauge",
        "Largest delay of a frame after its due time.",
    )
    .sample(
        "switchboard_mixer_max_lateness_seconds",
        &[],
        m.max_lateness_us as f64 / 1e6,
    );

    let b = services.billing.settler_stats();
    e.family(
        "switchboard_billing_settlement_batches_total",
        "counter",
        "Settlement transactions committed.",
    )
    .sample(
        "switchboard_billing_settlement_batches_total",
        &[],
        b.batches,
    );
    e.family(
        "switchboard_billing_settlements_total",
        "counter",
        "Legs settled.",
    )
    .sample("switchboard_billing_settlements_total", &[], b.legs);
    e.family(
        "switchboard_billing_settlement_failures_total",
        "counter",
        "Legs whose settlement batch failed.",
    )
    .sample(
        "switchboard_billing_settlement_failures_total",
        &[],
        b.failed,
    );

    let now = unix_ms(SystemTime::now());
    let mut names: Vec<&String> = services.providers.keys().collect();
    names.sort();
    e.family(
        "switchboard_provider_up",
        "gauge",
        "1 when the provider's last OPTIONS probe was answered, 0 when not (absent: not probed).",
    );
    for name in &names {
        if let Some(up) = services.probed_up(name) {
            e.sample(
                "switchboard_provider_up",
                &[("provider", name)],
                u8::from(up),
            );
        }
    }
    let registrations = services.sip.registrations();
    e.family(
        "switchboard_sip_registered",
        "gauge",
        "1 while the provider's registration is live, 0 when not (absent: it does not register).",
    );
    for (name, view) in &registrations {
        e.sample(
            "switchboard_sip_registered",
            &[("provider", name)],
            u8::from(view.state == "registered"),
        );
    }
    e.family(
        "switchboard_sip_registration_expires_seconds",
        "gauge",
        "Seconds until the provider's registration lapses unless refreshed.",
    );
    for (name, view) in &registrations {
        if let Some(until) = view.until_ms {
            e.sample(
                "switchboard_sip_registration_expires_seconds",
                &[("provider", name)],
                (until - now).max(0) / 1000,
            );
        }
    }
    let stats: Vec<_> = names
        .iter()
        .map(|n| (n, services.billing.provider_stats(n, now)))
        .collect();
    e.family(
        "switchboard_provider_attempts",
        "gauge",
        "Attempts in the provider statistics window.",
    );
    for (name, s) in &stats {
        e.sample(
            "switchboard_provider_attempts",
            &[("provider", name)],
            s.attempts,
        );
    }
    e.family(
        "switchboard_provider_asr_ratio",
        "gauge",
        "Answer-seizure ratio in the window (0 to 1).",
    );
    for (name, s) in &stats {
        if let Some(bp) = s.asr_bp {
            e.sample(
                "switchboard_provider_asr_ratio",
                &[("provider", name)],
                f64::from(bp) / 10_000.0,
            );
        }
    }
    e.family(
        "switchboard_provider_acd_seconds",
        "gauge",
        "Average call duration in the window.",
    );
    for (name, s) in &stats {
        if let Some(acd) = s.acd_secs {
            e.sample(
                "switchboard_provider_acd_seconds",
                &[("provider", name)],
                acd,
            );
        }
    }
    e.family(
        "switchboard_uptime_seconds",
        "gauge",
        "Seconds since the web front end started.",
    )
    .sample(
        "switchboard_uptime_seconds",
        &[],
        state.started.elapsed().as_secs(),
    );
    e.finish()
}

async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state) + &histograms(&state),
    )
        .into_response()
}

/// The latency histograms (prometheus-client's encoding).
fn histograms(state: &WebState) -> String {
    let services = state.manager.services();
    crate::metrics::HistogramSet {
        setup: services.counters.setup.clone(),
        post_dial: services.counters.post_dial.clone(),
        plugins: services.plugins.call_seconds(),
    }
    .encode()
}

/// `/health`: 200 when the database answers within two seconds, 503 when
/// not; the body says which part is wrong.
async fn health(State(state): State<Arc<WebState>>) -> Response {
    let store = state.manager.services().billing.store();
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        store.account("health-check@switchboard.invalid"),
    )
    .await;
    let (status, database) = match db {
        Ok(Ok(_)) => (StatusCode::OK, "ok".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("error: {e}")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer within 2 s".to_string(),
        ),
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ok" } else { "unavailable" },
        "database": database,
        "sessions": state.manager.live(),
        "uptime_secs": state.started.elapsed().as_secs(),
    });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prometheus_text() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "Things.")
            .sample("x_total", &[("slot", "router"), ("why", "a \"b\"\n")], 3)
            .sample("x_total", &[], 4);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{slot=\"router\",why=\"a \\\"b\\\"\\n\"} 3\nx_total 4\n"
        );
    }
}
