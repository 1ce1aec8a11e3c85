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

/// Every message the endpoint sends in answer to `bytes`, as text.
fn answers(ep: &mut Endpoint, bytes: &[u8]) -> Vec<String> {
    let from: SocketAddr = "127.0.0.1:5080".parse().expect("addr");
    ep.handle_input(Instant::now(), Transport::Udp, from, bytes);
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(String::from_utf8_lossy(&t.payload).into_owned());
    }
    out
}

/// A request from the torture peer, with CRLF line ends; `extra` holds
/// header lines and `body` the body.
fn request(method: &str, via_params: &str, call_id: &str, extra: &str, body: &str) -> Vec<u8> {
    let mut text = format!(
        "{method} sip:switchboard@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080{via_params}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:torture@127.0.0.1>;tag=t{call_id}\r\n\
         To: <sip:switchboard@127.0.0.1>\r\n\
         Call-ID: {call_id}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n"
    );
    for line in extra.lines().filter(|l| !l.is_empty()) {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text.into_bytes()
}

fn status_of(message: &str) -> u16 {
    message
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// RFC 3261 §8.2.2.3: an option tag in Require that we do not support gets
/// 420 Bad Extension, with an Unsupported header listing it.
#[test]
fn an_unknown_required_extension_is_answered_420_with_unsupported() {
    let mut ep = endpoint();
    let sent = answers(
        &mut ep,
        &request(
            "OPTIONS",
            ";branch=z9hG4bKreq1",
            "req1",
            "Require: x-frobnicate, 100rel",
            "",
        ),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(status_of(&sent[0]), 420, "{}", sent[0]);
    assert_eq!(
        header(&sent[0], "Unsupported"),
        Some("x-frobnicate, 100rel")
    );

    // An INVITE too, after its 100 Trying; and nothing else is sent (no 403).
    let sent = answers(
        &mut ep,
        &request(
            "INVITE",
            ";branch=z9hG4bKreq2",
            "req2",
            "Require: timer, precondition",
            "",
        ),
    );
    let statuses: Vec<u16> = sent.iter().map(|m| status_of(m)).collect();
    assert_eq!(statuses, vec![100, 420], "{sent:?}");
    // Session timers (RFC 4028) are supported; only the rest is named.
    assert_eq!(header(&sent[1], "Unsupported"), Some("precondition"));
}

/// RFC 2543 peers (no branch, or one without the z9hG4bK cookie) are
/// answered, and their transactions matched the RFC 2543 way (§17.2.3): a
/// retransmission gets the cached answer, a different request its own.
#[test]
fn requests_without_a_3261_branch_are_matched_the_rfc_2543_way() {
    for via in [";rport", ";branch=1234;rport"] {
        let mut ep = endpoint();
        let first = request("OPTIONS", via, "old1", "", "");
        let sent = answers(&mut ep, &first);
        assert_eq!(sent.len(), 1, "{via}: {sent:?}");
        assert_eq!(status_of(&sent[0]), 200, "{via}: {}", sent[0]);
        assert_eq!(header(&sent[0], "Call-ID"), Some("old1@127.0.0.1"));

        // The same request again: the cached answer, counted as a retransmission.
        let again = answers(&mut ep, &first);
        assert_eq!(again, sent, "{via}");
        assert_eq!(ep.stats().retransmissions, 1, "{via}");

        // Another request with the same (missing) branch: answered on its own.
        let other = answers(&mut ep, &request("OPTIONS", via, "old2", "", ""));
        assert_eq!(other.len(), 1, "{via}: {other:?}");
        assert_eq!(
            header(&other[0], "Call-ID"),
            Some("old2@127.0.0.1"),
            "{via}"
        );
    }
}

/// A bare `z9hG4bK` branch is not unique: a different request that reuses
/// it gets its own answer, not the first request's.
#[test]
fn a_bare_cookie_branch_does_not_merge_different_requests() {
    let mut ep = endpoint();
    let via = ";branch=z9hG4bK;rport";
    let first = answers(&mut ep, &request("OPTIONS", via, "bare1", "", ""));
    let second = answers(&mut ep, &request("OPTIONS", via, "bare2", "", ""));
    assert_eq!(header(&first[0], "Call-ID"), Some("bare1@127.0.0.1"));
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(status_of(&second[0]), 200, "{}", second[0]);
    assert_eq!(header(&second[0], "Call-ID"), Some("bare2@127.0.0.1"));
    assert_eq!(ep.stats().retransmissions, 0);
}

/// 501 Not Implemented says which methods we do implement.
#[test]
fn not_implemented_carries_allow() {
    let mut ep = endpoint();
    let sent = answers(
        &mut ep,
        &request("FROBNICATE", ";branch=z9hG4bKfrob", "frob", "", ""),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(status_of(&sent[0]), 501, "{}", sent[0]);
    let allow = header(&sent[0], "Allow").expect("an Allow header");
    for method in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
        assert!(allow.contains(method), "{allow}");
    }
}

/// A request missing a mandatory header, but with a Via to answer to, gets
/// 400 naming the header rather than silence.
#[test]
fn a_request_missing_a_mandatory_header_is_answered_400() {
    let text = "OPTIONS sip:switchboard@127.0.0.1 SIP/2.0\r\n\
                Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKnofrom;rport\r\n\
                To: <sip:switchboard@127.0.0.1>\r\n\
                Call-ID: nofrom@127.0.0.1\r\n\
                CSeq: 1 OPTIONS\r\n\
                Content-Length: 0\r\n\r\n";
    let mut ep = endpoint();
    let sent = answers(&mut ep, text.as_bytes());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(status_of(&sent[0]), 400, "{}", sent[0]);
    assert!(
        sent[0]
            .lines()
            .next()
            .unwrap_or_default()
            .contains("missing From")
    );
    assert_eq!(header(&sent[0], "Call-ID"), Some("nofrom@127.0.0.1"));
    assert_eq!(ep.stats().rejected_malformed, 1);
}

/// RFC 3261 §8.2.3: an INVITE whose body is not a type we understand gets
/// 415 with an Accept header, not an answer about its content.
#[test]
fn an_invite_with_an_unsupported_body_type_is_answered_415() {
    let mut ep = endpoint();
    let sent = answers(
        &mut ep,
        &request(
            "INVITE",
            ";branch=z9hG4bKbody",
            "body",
            "Content-Type: application/unknownformat",
            "<unknown>stuff</unknown>",
        ),
    );
    let statuses: Vec<u16> = sent.iter().map(|m| status_of(m)).collect();
    assert_eq!(statuses, vec![100, 415], "{sent:?}");
    assert_eq!(header(&sent[1], "Accept"), Some("application/sdp"));
}
