//! RTCP (RFC 3550 §6): the sender and receiver reports a leg sends every few
//! seconds, and what the far end reports about the stream we send it (loss,
//! jitter, round-trip time). Call quality feeds routing statistics, so both
//! directions are kept per leg.

use std::time::{Duration, Instant};

use super::MediaError;

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;

/// One report block: how one receiver sees one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_max: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// The sender-info part of a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (seconds since 1900 in the high 32 bits).
    pub ntp: u64,
    /// RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// One packet of a compound RTCP packet, as far as the media plane cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR: the sender's counters and its report blocks.
    SenderReport {
        /// Who sends.
        ssrc: u32,
        /// Its counters.
        info: SenderInfo,
        /// What it receives.
        reports: Vec<ReportBlock>,
    },
    /// RR: report blocks only.
    ReceiverReport {
        /// Who reports.
        ssrc: u32,
        /// What it receives.
        reports: Vec<ReportBlock>,
    },
    /// BYE: the listed sources are leaving.
    Bye(Vec<u32>),
    /// SDES, APP or anything newer: skipped.
    Other(u8),
}

/// Reads a compound RTCP packet; a malformed one is refused whole.
pub fn parse(bytes: &[u8]) -> Result<Vec<RtcpPacket>, MediaError> {
    let mut packets = Vec::new();
    let mut rest = bytes;
    if rest.is_empty() {
        return Err(MediaError::BadRtcp("empty".into()));
    }
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(MediaError::BadRtcp("truncated header".into()));
        }
        if rest[0] >> 6 != 2 {
            return Err(MediaError::BadRtcp(format!("version {}", rest[0] >> 6)));
        }
        let count = usize::from(rest[0] & 0x1F);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(MediaError::BadRtcp(format!(
                "length {len} beyond the {} bytes left",
                rest.len()
            )));
        }
        let body = &rest[4..len];
        packets.push(match pt {
            PT_SR => {
                if body.len() < 24 + 24 * count {
                    return Err(MediaError::BadRtcp(
                        "SR shorter than its report count".into(),
                    ));
                }
                let info = SenderInfo {
                    ntp: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packets: be32(body, 16),
                    octets: be32(body, 20),
                };
                RtcpPacket::SenderReport {
                    ssrc: be32(body, 0),
                    info,
                    reports: blocks(&body[24..], count),
                }
            }
            PT_RR => {
                if body.len() < 4 + 24 * count {
                    return Err(MediaError::BadRtcp(
                        "RR shorter than its report count".into(),
                    ));
                }
                RtcpPacket::ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: blocks(&body[4..], count),
                }
            }
            PT_BYE => {
                if body.len() < 4 * count {
                    return Err(MediaError::BadRtcp(
                        "BYE shorter than its source count".into(),
                    ));
                }
                RtcpPacket::Bye((0..count).map(|i| be32(body, 4 * i)).collect())
            }
            other => RtcpPacket::Other(other),
        });
        rest = &rest[len..];
    }
    Ok(packets)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn blocks(body: &[u8], count: usize) -> Vec<ReportBlock> {
    (0..count)
        .map(|i| {
            let b = &body[24 * i..24 * (i + 1)];
            let lost = be32(b, 4) & 0x00FF_FFFF;
            // Sign-extend the 24-bit count.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                cumulative_lost,
                extended_max: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect()
}

/// Writes a compound packet: an SR when `info` is given (we have sent
/// media), else an RR; at most one report block; then SDES with our CNAME,
/// which RFC 3550 §6.1 requires in every compound packet.
pub fn write_report(
    ssrc: u32,
    info: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    let count = u8::from(block.is_some());
    let words = match info {
        Some(_) => 1 + 5 + 6 * usize::from(count),
        None => 1 + 6 * usize::from(count),
    };
    out.push(0x80 | count);
    out.push(if info.is_some() { PT_SR } else { PT_RR });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(info) = info {
        out.extend_from_slice(&info.ntp.to_be_bytes());
        out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.packets.to_be_bytes());
        out.extend_from_slice(&info.octets.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&(u32::from(b.fraction_lost) << 24 | lost).to_be_bytes());
        out.extend_from_slice(&b.extended_max.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    // SDES: one chunk, CNAME item, null terminator, padded to 32 bits.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + name.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(PT_SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.resize(out.len() + (padded - chunk_len) + 1, 0);
}

/// A wall clock for NTP timestamps that only needs instants: `base_ntp` is
/// the NTP time at `base`.
#[derive(Debug, Clone, Copy)]
pub struct NtpClock {
    base: Instant,
    base_ntp: u64,
}

impl NtpClock {
    /// A clock that reads `unix` (time since 1970) at `base`.
    pub fn new(base: Instant, unix: Duration) -> Self {
        const UNIX_TO_NTP: u64 = 2_208_988_800;
        let secs = unix.as_secs() + UNIX_TO_NTP;
        let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
        NtpClock {
            base,
            base_ntp: secs << 32 | frac,
        }
    }

    /// The 64-bit NTP time at `now`.
    pub fn at(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.base);
        let add = (d.as_secs() << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000);
        self.base_ntp.wrapping_add(add)
    }

    /// The middle 32 bits of the NTP time (the LSR/DLSR unit, 1/65536 s).
    pub fn middle(ntp: u64) -> u32 {
        (ntp >> 16) as u32
    }
}

/// How the far end hears us, from the report blocks it sends about our SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteView {
    /// Loss in its last interval, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets it lost.
    pub cumulative_lost: i32,
    /// Its jitter estimate of our stream, timestamp units.
    pub jitter: u32,
    /// Round-trip time from LSR/DLSR, when it echoed one of our SRs.
    pub round_trip: Option<Duration>,
}

impl RemoteView {
    /// Reads a report block about our stream that arrived at NTP time
    /// `arrival_ntp`.
    pub fn from_block(block: &ReportBlock, arrival_ntp: u64) -> Self {
        let round_trip = (block.last_sr != 0).then(|| {
            let a = NtpClock::middle(arrival_ntp);
            let rtt = a
                .wrapping_sub(block.last_sr)
                .wrapping_sub(block.delay_since_last_sr);
            // Units of 1/65536 s; a wrapped (negative) result means clocks
            // disagree, report zero rather than a day.
            let rtt = if rtt > 0x8000_0000 { 0 } else { rtt };
            Duration::from_micros(u64::from(rtt) * 1_000_000 / 65536)
        });
        RemoteView {
            fraction_lost: block.fraction_lost,
            cumulative_lost: block.cumulative_lost,
            jitter: block.jitter,
            round_trip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_round_trips() {
        let block = ReportBlock {
            ssrc: 9,
            fraction_lost: 25,
            cumulative_lost: -3,
            extended_max: 70000,
            jitter: 44,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        };
        let info = SenderInfo {
            ntp: 0xAABB_CCDD_0011_2233,
            rtp_timestamp: 160,
            packets: 50,
            octets: 8000,
        };
        let mut out = Vec::new();
        write_report(
            7,
            Some(info),
            Some(block),
            "switchboard@127.0.0.1",
            &mut out,
        );
        assert_eq!(out.len() % 4, 0);
        let parsed = parse(&out).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0],
            RtcpPacket::SenderReport {
                ssrc: 7,
                info,
                reports: vec![block]
            }
        );
        assert_eq!(parsed[1], RtcpPacket::Other(PT_SDES));
        write_report(7, None, None, "x", &mut out);
        assert_eq!(
            parse(&out).unwrap()[0],
            RtcpPacket::ReceiverReport {
                ssrc: 7,
                reports: vec![]
            }
        );
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x80, 201, 0]).is_err());
        // Length beyond the datagram.
        assert!(parse(&[0x81, 201, 0, 9, 0, 0, 0, 1]).is_err());
        // Report count larger than the body.
        assert!(parse(&[0x82, 201, 0, 1, 0, 0, 0, 1]).is_err());
        // Version 1.
        assert!(parse(&[0x40, 201, 0, 1, 0, 0, 0, 1]).is_err());
        // BYE with one source is fine.
        assert_eq!(
            parse(&[0x81, 203, 0, 1, 0, 0, 0, 5]).unwrap(),
            vec![RtcpPacket::Bye(vec![5])]
        );
    }

    #[test]
    fn round_trip_from_lsr_and_dlsr() {
        let base = Instant::now();
        let clock = NtpClock::new(base, Duration::from_secs(1_700_000_000));
        let sent = clock.at(base);
        // The far end held our SR for 1 s, and the answer took 100 ms more
        // on the wire in total.
        let arrival = clock.at(base + Duration::from_millis(1100));
        let block = ReportBlock {
            last_sr: NtpClock::middle(sent),
            delay_since_last_sr: 65536,
            ..Default::default()
        };
        let view = RemoteView::from_block(&block, arrival);
        let rtt = view.round_trip.unwrap().as_millis();
        assert!((99..=100).contains(&rtt), "{rtt}");
    }
}
