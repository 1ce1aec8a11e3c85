//! Torture messages in the spirit of RFC 4475, kept in `tests/sip/torture/`.
//!
//! Each file's name starts with what must happen to it: `ok-` (it parses, and
//! the stack answers a request without calling it malformed), a status code
//! (`400-`, `416-`, `501-`, `505-`: parsing fails and the stack answers a
//! request with exactly that code and a reason phrase saying what was wrong),
//! or `drop-` (too broken to answer: the stack sends nothing and counts it).
//! Files are stored with LF line ends; the test turns them into CRLF.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use switchboard::sip::message::{self, DEFAULT_MAX_MESSAGE_BYTES};
use switchboard::sip::{Config, Endpoint, Transport};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sip/torture");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("torture directory")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sip"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read(e.path()).expect("readable");
            let mut crlf = Vec::with_capacity(text.len() + 64);
            for b in text {
                if b == b'\n' {
                    crlf.push(b'\r');
                }
                crlf.push(b);
            }
            (name, crlf)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "corpus went missing: {} files",
        files.len()
    );
    files
}

fn endpoint() -> Endpoint {
    let local: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
    Endpoint::new(
        Config::default(),
        vec![(Transport::Udp, local)],
        Instant::now(),
    )
}

fn answer_status(ep: &mut Endpoint, bytes: &[u8]) -> Option<(u16, String)> {
    let from: SocketAddr = "127.0.0.1:5080".parse().expect("addr");
    ep.handle_input(Instant::now(), Transport::Udp, from, bytes);
    let reply = ep.poll_transmit()?;
    let text = String::from_utf8_lossy(&reply.payload).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    Some((status, line))
}

#[test]
fn every_torture_message_gets_the_expected_treatment() {
    let mut failures = Vec::new();
    for (name, bytes) in corpus() {
        let parsed = message::parse(&bytes, DEFAULT_MAX_MESSAGE_BYTES);
        let mut ep = endpoint();
        let answer = answer_status(&mut ep, &bytes);
        let is_response = bytes
            .iter()
            .skip_while(|b| **b == b'\r' || **b == b'\n')
            .take(4)
            .eq(b"SIP/".iter());
        let prefix = name.split('-').next().unwrap_or_default();
        let problem = match prefix {
            "ok" => match (&parsed, &answer) {
                (Err(e), _) => Some(format!("should parse, got {}", e.error)),
                (Ok(_), Some((400 | 416 | 501 | 505 | 513, line))) => {
                    Some(format!("valid but answered as malformed: {line}"))
                }
                (Ok(_), None) if !is_response => Some("a valid request got no answer".to_string()),
                _ => None,
            },
            "drop" => match (&parsed, &answer) {
                (Ok(_), _) => Some("should not parse".to_string()),
                (_, Some((_, line))) => Some(format!("should be dropped, got {line}")),
                (Err(_), None) if ep.stats().dropped_malformed != 1 => {
                    Some("drop not counted".to_string())
                }
                _ => None,
            },
            code => {
                let expected: u16 = code
                    .parse()
                    .expect("file name starts with ok-, drop- or a status code");
                match (&parsed, &answer) {
                    (Ok(_), _) => Some("should not parse".to_string()),
                    (Err(e), Some((status, line))) => {
                        if *status != expected {
                            Some(format!("expected {expected}, got {line}"))
                        } else if !line.contains(&e.error.to_string()) {
                            Some(format!("reason phrase does not say what was wrong: {line}"))
                        } else {
                            None
                        }
                    }
                    (Err(e), None) => {
                        Some(format!("expected {expected}, got nothing ({})", e.error))
                    }
                }
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{name}: {p}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Cut every torture message at every length and flip bytes in it: the stack
/// answers or drops, never panics.
#[test]
fn truncated_and_corrupted_messages_never_panic() {
    let mut ep = endpoint();
    let from: SocketAddr = "127.0.0.1:5080".parse().expect("addr");
    let now = Instant::now();
    let mut seed: u32 = 0x9e37_79b9;
    for (_, bytes) in corpus() {
        for cut in 0..bytes.len().min(700) {
            ep.handle_input(now, Transport::Udp, from, &bytes[..cut]);
            while ep.poll_transmit().is_some() {}
        }
        for _ in 0..300 {
            let mut copy = bytes.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % copy.len().max(1);
                if let Some(b) = copy.get_mut(i) {
                    *b = (seed >> 8) as u8;
                }
            }
            ep.handle_input(now, Transport::Udp, from, &copy);
            while ep.poll_transmit().is_some() {}
        }
    }
    assert!(ep.stats().dropped_malformed > 0);
}
