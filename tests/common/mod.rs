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

/// What a server answered to [`http`].
pub struct HttpReply {
    /// The status code (0 when the server closed without answering).
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body.
    pub body: String,
}

/// One HTTP/1.1 exchange on a fresh connection to `addr` (`request` should
/// say `Connection: close`); waits up to 15 s for the server to listen and
/// to answer.
pub fn http(addr: std::net::SocketAddr, request: &[u8]) -> HttpReply {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "web pages at {addr}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    HttpReply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// [`http`] with a text request; the status and the body.
pub fn http_text(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let reply = http(addr, request.as_bytes());
    (reply.status, reply.body)
}

/// Records `attempts` attempts of `provider` in its statistics, the first
/// `answered` of them answered (60 s talk, 800 ms PDD), a second ago.
pub async fn seed_attempts(
    billing: &switchboard::billing::Billing,
    provider: &str,
    attempts: u32,
    answered: u32,
) {
    let now = switchboard::billing::unix_ms(std::time::SystemTime::now());
    for i in 0..attempts {
        let answered = i < answered;
        let outcome = switchboard::billing::AttemptOutcome {
            at_ms: now - 1000,
            answered,
            talk_secs: if answered { 60 } else { 0 },
            pdd_ms: Some(800),
        };
        billing
            .record_attempt(&format!("seed-{provider}-{i}"), provider, outcome, None)
            .await
            .expect("attempt");
    }
}
