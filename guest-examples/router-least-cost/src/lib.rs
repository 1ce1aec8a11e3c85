//! An operator's router: least-cost routing.
//!
//! Cheapest provider first (price per minute, then connect fee); among equal
//! prices the better answer-seizure ratio wins. Providers the host found
//! down come last. A provider named with `via` is still used alone, and a
//! busy or declining callee is still not rung again.

// The generated export shim for `on-failure` takes the flattened request.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "../../wit", world: "router" });

use switchboard::plugin::host::{Level, log};
use switchboard::plugin::types::Candidate;

fn rank(request: &RouteRequest) -> Vec<Attempt> {
    let mut ranked: Vec<&Candidate> = match &request.requested_provider {
        Some(name) => request
            .candidates
            .iter()
            .filter(|c| c.provider.eq_ignore_ascii_case(name))
            .take(1)
            .collect(),
        None => request.candidates.iter().collect(),
    };
    ranked.sort_by(|a, b| {
        b.up.cmp(&a.up)
            .then(a.price_per_minute.cmp(&b.price_per_minute))
            .then(a.connect_fee.cmp(&b.connect_fee))
            .then(b.stats.asr_bp.cmp(&a.stats.asr_bp))
            .then(a.provider.cmp(&b.provider))
    });
    ranked.dedup_by(|a, b| a.provider == b.provider);
    if let Some(first) = ranked.first() {
        log(
            Level::Debug,
            &format!("cheapest for {}: {}", request.leg.address, first.provider),
        );
    }
    ranked
        .into_iter()
        .map(|c| Attempt {
            provider: c.provider.clone(),
        })
        .collect()
}

struct LeastCostRouter;

impl Guest for LeastCostRouter {
    fn route(request: RouteRequest) -> Vec<Attempt> {
        rank(&request)
    }

    fn on_failure(_request: RouteRequest, _failed: Attempt, sip_status: u16) -> Failover {
        match sip_status {
            486 | 487 | 600..=699 => Failover::Stop,
            _ => Failover::TryNext,
        }
    }
}

export!(LeastCostRouter);
