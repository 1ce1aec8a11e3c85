//! Helpers shared by the host's integration tests and benchmarks.
#![allow(dead_code)]

use std::path::PathBuf;

use switchboard::plugin::types::{
    Account, Calling, Candidate, Error, Event, Leg, LegRole, ParseError, ProviderStats,
    RouteRequest, Scheme,
};

/// A guest built by host/build.rs, by its wasm name (e.g. `replies_de`).
pub fn guest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("SWITCHBOARD_GUESTS_DIR")).join(format!("{name}.wasm"))
}

/// The bytes of a guest built by host/build.rs.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A routing request from `account` with three providers on offer.
pub fn route_request(account: &str) -> RouteRequest {
    let candidate = |name: &str, price: i64, asr: u32| Candidate {
        provider: name.into(),
        price_per_minute: price,
        connect_fee: 0,
        increment_secs: 1,
        up: true,
        stats: ProviderStats {
            attempts: 100,
            answered: asr / 100,
            asr_bp: Some(asr),
            acd_secs: Some(90),
            pdd_ms: Some(1200),
        },
    };
    RouteRequest {
        leg: Leg {
            scheme: Scheme::Phone,
            address: "4915112345678".into(),
        },
        role: LegRole::Destination,
        account: Account {
            id: account.into(),
            balance: 10_000_000,
        },
        requested_provider: None,
        candidates: vec![
            candidate("PROXICOM", 14_000, 6_000),
            candidate("PAKLINE", 12_040, 7_000),
            candidate("MKS", 9_000, 5_000),
        ],
    }
}

/// A parse-error event whose reason is `reason` (the hostile replies
/// plugin's trigger).
pub fn parse_error_event(reason: &str) -> Event {
    Event::Error(Error::Parse(ParseError {
        reason: reason.into(),
        syntax: "CALLBACK SourceLeg DestinationLeg".into(),
    }))
}

/// The seed's first progress message as an event: calling the source via PROXICOM.
pub fn calling_event() -> Event {
    Event::Calling(Calling {
        role: LegRole::Source,
        leg: Leg {
            scheme: Scheme::Phone,
            address: "442071234567".into(),
        },
        price_per_minute: 14_000,
        provider: Some("PROXICOM".into()),
    })
}
