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

/// Appends sections to a component: `extra` is the raw section bytes
/// (id, size, payload) of each.
pub fn with_sections(component: &[u8], extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = component.to_vec();
    for (id, payload) in extra {
        out.push(*id);
        leb(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
    }
    out
}

pub fn leb(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The top-level core modules of a component (its core module index space).
pub fn core_modules(component: &[u8]) -> u64 {
    let mut at = 8;
    let mut modules = 0;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let (mut size, mut shift) = (0u64, 0);
        loop {
            let b = component[at];
            at += 1;
            size |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if id == 1 {
            modules += 1;
        }
        at += size as usize;
    }
    modules
}

/// A core module whose sections are `sections` (id, payload).
pub fn core_module(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    with_sections(b"\0asm\x01\0\0\0", sections)
}

/// A component of one core module with `functions` empty functions.
pub fn compile_bomb(functions: u64) -> Vec<u8> {
    let types = vec![0x01, 0x60, 0x00, 0x00]; // one type: () -> ()
    let mut funcs = Vec::new();
    leb(&mut funcs, functions);
    funcs.extend(std::iter::repeat_n(0x00, functions as usize));
    let mut code = Vec::new();
    leb(&mut code, functions);
    for _ in 0..functions {
        code.extend_from_slice(&[0x02, 0x00, 0x0b]); // size 2: no locals, end
    }
    let module = core_module(&[(1, types), (3, funcs), (10, code)]);
    with_sections(b"\0asm\x0d\0\x01\0", &[(1, module)])
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
