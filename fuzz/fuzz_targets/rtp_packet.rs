//! Fuzzes everything the media plane does with a datagram from the network:
//! the RTP and RTCP readers, telephone-event payloads, and a conference leg
//! that takes the bytes as RTP and as RTCP (latching, decoding, jitter
//! buffer, DTMF) and then mixes a few frames. Nothing may panic.
//!
//! Run: `cargo +nightly fuzz run rtp_packet`

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard::media::dtmf::TelephoneEvent;
use switchboard::media::mixer::{Channel, Conference, LegConfig, LegId};
use switchboard::media::rtcp::{self, NtpClock};
use switchboard::media::rtp::RtpPacket;
use switchboard::media::Law;

fuzz_target!(|data: &[u8]| {
    let _ = RtpPacket::parse(data);
    let _ = rtcp::parse(data);
    let _ = TelephoneEvent::parse(data);

    let now = Instant::now();
    let from = SocketAddr::from(([127, 0, 0, 1], 4000));
    let mut conf = Conference::new(now, NtpClock::new(now, Duration::from_secs(1)), "fuzz");
    for (id, law) in [(1, Law::Ulaw), (2, Law::Alaw)] {
        let _ = conf.add_leg(now, LegId(id), LegConfig::new(law, Some(from)), (1, 2, 3));
    }
    // The input split into datagrams at 0xFF bytes, each fed to both legs
    // on both channels, a frame apart.
    for (k, datagram) in data.split(|b| *b == 0xFF).enumerate() {
        let at = now + Duration::from_millis(20 * k as u64);
        for leg in [LegId(1), LegId(2)] {
            let _ = conf.handle_input(at, leg, Channel::Rtp, from, datagram);
            let _ = conf.handle_input(at, leg, Channel::Rtcp, from, datagram);
        }
        conf.handle_timeout(at);
        while conf.poll_transmit().is_some() {}
        while conf.poll_event().is_some() {}
    }
    conf.handle_timeout(now + Duration::from_secs(10));
});
