//! The default router plugin: the seed's routing rule.
//!
//! Without `via`, every provider that serves the destination is tried, best
//! rated first: highest answer-seizure ratio, then longest average call
//! duration (providers whose figures are not yet known come after those
//! whose are, and providers the host found down come last). A provider named
//! with `via` is used alone. After a failure, a busy or declining callee
//! (486, 487, 6xx) is not rung again through the next provider; any other
//! failure (408, 480, 5xx, ...) moves on to the next.

// The generated export shim for `on-failure` takes the flattened request.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "../../wit", world: "router" });

use switchboard::plugin::types::Candidate;

/// The providers to try, best first.
fn rank(request: &RouteRequest) -> Vec<Attempt> {
    if let Some(name) = &request.requested_provider {
        return request
            .candidates
            .iter()
            .find(|c| c.provider.eq_ignore_ascii_case(name))
            .map(attempt)
            .into_iter()
            .collect();
    }
    let mut ranked: Vec<&Candidate> = request.candidates.iter().collect();
    ranked.sort_by(|a, b| {
        b.up.cmp(&a.up)
            .then(b.stats.asr_bp.cmp(&a.stats.asr_bp))
            .then(b.stats.acd_secs.cmp(&a.stats.acd_secs))
            .then(a.price_per_minute.cmp(&b.price_per_minute))
            .then(a.provider.cmp(&b.provider))
    });
    ranked.dedup_by(|a, b| a.provider == b.provider);
    ranked.into_iter().map(attempt).collect()
}

fn attempt(candidate: &Candidate) -> Attempt {
    Attempt {
        provider: candidate.provider.clone(),
    }
}

/// Whether a failed attempt with this SIP status should move on to the next provider.
fn decide(sip_status: u16) -> Failover {
    match sip_status {
        // Busy Here, Request Terminated (the user cancelled), and every 6xx
        // (Busy Everywhere, Decline, ...): the callee itself said no.
        486 | 487 | 600..=699 => Failover::Stop,
        _ => Failover::TryNext,
    }
}

struct DefaultRouter;

impl Guest for DefaultRouter {
    fn route(request: RouteRequest) -> Vec<Attempt> {
        rank(&request)
    }

    fn on_failure(_request: RouteRequest, _failed: Attempt, sip_status: u16) -> Failover {
        decide(sip_status)
    }
}

export!(DefaultRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard::plugin::types::{Account, Leg, LegRole, ProviderStats, Scheme};

    fn candidate(
        name: &str,
        price: i64,
        asr: Option<u32>,
        acd: Option<u32>,
        up: bool,
    ) -> Candidate {
        Candidate {
            provider: name.into(),
            price_per_minute: price,
            connect_fee: 0,
            increment_secs: 1,
            up,
            stats: ProviderStats {
                attempts: 100,
                answered: 50,
                asr_bp: asr,
                acd_secs: acd,
                pdd_ms: None,
            },
        }
    }

    fn request(candidates: Vec<Candidate>, requested: Option<&str>) -> RouteRequest {
        RouteRequest {
            leg: Leg {
                scheme: Scheme::Phone,
                address: "442071234567".into(),
            },
            role: LegRole::Source,
            account: Account {
                id: "ruslan@example.com".into(),
                balance: 5_000_000,
            },
            requested_provider: requested.map(Into::into),
            candidates,
        }
    }

    fn names(attempts: Vec<Attempt>) -> Vec<String> {
        attempts.into_iter().map(|a| a.provider).collect()
    }

    #[test]
    fn best_asr_then_acd_first() {
        let r = request(
            vec![
                candidate("CHEAP", 1_000, Some(3_000), Some(60), true),
                candidate("PROXICOM", 14_000, Some(6_000), Some(90), true),
                candidate("MKS", 12_000, Some(6_000), Some(120), true),
                candidate("NEW", 9_000, None, None, true),
                candidate("DOWN", 9_000, Some(9_000), Some(300), false),
            ],
            None,
        );
        assert_eq!(names(rank(&r)), ["MKS", "PROXICOM", "CHEAP", "NEW", "DOWN"]);
    }

    #[test]
    fn via_uses_that_provider_alone() {
        let r = request(
            vec![
                candidate("PROXICOM", 14_000, Some(6_000), Some(90), true),
                candidate("AVANGARD", 12_000, Some(1_000), Some(10), true),
            ],
            Some("avangard"),
        );
        assert_eq!(names(rank(&r)), ["AVANGARD"]);
        let r = request(r.candidates.clone(), Some("NOPE"));
        assert!(rank(&r).is_empty());
    }

    #[test]
    fn busy_and_decline_stop_other_failures_go_on() {
        for status in [486, 487, 600, 603, 604] {
            assert_eq!(decide(status), Failover::Stop, "{status}");
        }
        for status in [408, 480, 404, 500, 502, 503, 504] {
            assert_eq!(decide(status), Failover::TryNext, "{status}");
        }
    }
}
