//! Fuzzes SIP message parsing and everything the stack does with a message:
//! the parser, the endpoint (which answers, drops or routes it), the TCP
//! framer and the SDP reader. Nothing may panic.
//!
//! Run: `cargo +nightly fuzz run sip_message fuzz/corpus/sip_message`
//! (seed the corpus with `tests/sip/torture/*.sip`).

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::sip::message;
use switchboard::sip::sdp::AudioSdp;
use switchboard::sip::transport::StreamFramer;
use switchboard::sip::{Config, Endpoint, Transport};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = message::parse(data, 64 * 1024) {
        let _ = AudioSdp::parse(&m.body);
    }
    let _ = AudioSdp::parse(data);

    let now = Instant::now();
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5060));
    let from: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5080));
    let mut ep = Endpoint::new(Config::default(), vec![(Transport::Udp, local)], now);
    ep.handle_input(now, Transport::Udp, from, data);
    // The same bytes twice: a retransmission takes the other code path.
    ep.handle_input(now, Transport::Udp, from, data);
    ep.handle_timeout(now + Duration::from_secs(60));
    while ep.poll_transmit().is_some() {}

    let mut framer = StreamFramer::new(64 * 1024);
    for chunk in data.chunks(7) {
        framer.push(chunk);
        while let Ok(Some(m)) = framer.next_message() {
            let _ = message::parse(&m, 64 * 1024);
        }
    }
});
