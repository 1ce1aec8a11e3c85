//! RTP packets in and out of a leg (RFC 3550): reading a packet from the
//! network, numbering what we send, and the receiver statistics that RTCP
//! reports carry (loss from sequence numbers, interarrival jitter).

use std::time::{Duration, Instant};

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use super::MediaError;

/// Size of the fixed RTP header we write (no CSRCs, no extension).
pub const HEADER_LEN: usize = 12;

/// The fields of a received RTP packet that the media plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit (start of a talk spurt, or of a telephone event).
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp in clock-rate units (8 kHz for G.711).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload with CSRCs, extension and padding removed.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Reads an RTP packet; anything that is not RTP version 2 with a
    /// consistent length is refused with the reason.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MediaError> {
        let reader = RtpReader::new(bytes).map_err(|e| MediaError::BadRtp(format!("{e:?}")))?;
        if reader.version() != 2 {
            return Err(MediaError::BadRtp(format!("version {}", reader.version())));
        }
        // RTCP shares the port when muxed; its payload types 72-76 (with the
        // marker bit) are not audio.
        let payload_type = reader.payload_type();
        if (72..=76).contains(&payload_type) {
            return Err(MediaError::BadRtp("RTCP packet on the RTP port".into()));
        }
        Ok(RtpPacket {
            payload_type,
            marker: reader.mark(),
            sequence: u16::from(reader.sequence_number()),
            timestamp: reader.timestamp(),
            ssrc: reader.ssrc(),
            payload: reader.payload(),
        })
    }
}

/// The numbering of what a leg sends: one SSRC for the life of the leg, and
/// sequence number and timestamp that advance without jumps, whatever is
/// being sent (mix, tone or silence).
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// Packets sent, for RTCP sender reports.
    pub packets: u32,
    /// Payload octets sent, for RTCP sender reports.
    pub octets: u32,
    /// The timestamp of the last packet sent and when, for sender reports.
    pub last_sent: Option<(u32, Instant)>,
}

impl RtpSender {
    /// A sender with the given SSRC and random-looking starting numbers
    /// (RFC 3550 §5.1 asks for random initial values).
    pub fn new(ssrc: u32, first_sequence: u16, first_timestamp: u32) -> Self {
        RtpSender {
            ssrc,
            sequence: first_sequence,
            timestamp: first_timestamp,
            packets: 0,
            octets: 0,
            last_sent: None,
        }
    }

    /// Our SSRC on this leg.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Writes one packet carrying `payload` that covers `samples` timestamp
    /// units, into `out` (cleared first), and advances the numbering.
    pub fn write(
        &mut self,
        now: Instant,
        payload_type: u8,
        marker: bool,
        payload: &[u8],
        samples: u32,
        out: &mut Vec<u8>,
    ) {
        self.write_at(now, payload_type, marker, payload, self.timestamp, out);
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Writes a packet with an explicit timestamp (telephone events repeat
    /// the timestamp of the event's start); advances only the sequence.
    pub fn write_at(
        &mut self,
        now: Instant,
        payload_type: u8,
        marker: bool,
        payload: &[u8],
        timestamp: u32,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.resize(HEADER_LEN + payload.len(), 0);
        let built = RtpPacketBuilder::new()
            .payload_type(payload_type & 0x7F)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.sequence))
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload)
            .build_into(out);
        match built {
            Ok(len) => out.truncate(len),
            // Only possible for a payload type over 127, masked above, or a
            // buffer too small, sized above; send nothing rather than junk.
            Err(_) => {
                out.clear();
                return;
            }
        }
        self.sequence = self.sequence.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        self.last_sent = Some((timestamp, now));
    }

    /// The timestamp the next packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Moves the timestamp on without sending (time that passed in silence).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }
}

/// Sequence numbers further ahead than this are a restart, not loss
/// (RFC 3550 A.1 MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// Sequence numbers this far behind are a late or duplicate packet
/// (RFC 3550 A.1 MAX_MISORDER).
const MAX_MISORDER: u16 = 100;

/// What the far end's stream looked like on arrival: the figures an RTCP
/// receiver report carries, kept per leg (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Relative transit of the previous packet, in timestamp units.
    transit: Option<i64>,
    /// Interarrival jitter scaled by 16, in timestamp units.
    jitter16: u64,
    /// Middle 32 bits of the NTP time of the last sender report from the
    /// far end, and when it arrived (for LSR/DLSR).
    pub last_sr: Option<(u32, Instant)>,
}

/// How one packet fits the sequence so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In order or a small gap ahead.
    Fresh,
    /// Behind the highest seen: a late (reordered) packet or a duplicate.
    Late,
    /// A large jump: the far end restarted; statistics begin again.
    Restart,
}

impl ReceiveStats {
    /// Counts one packet. `arrival` is when it reached us, `clock_rate` the
    /// payload's clock (8000 for G.711), `epoch` any fixed instant.
    pub fn record(
        &mut self,
        packet: &RtpPacket<'_>,
        arrival: Instant,
        epoch: Instant,
        clock_rate: u32,
    ) -> SeqVerdict {
        let seq = packet.sequence;
        let verdict = match self.ssrc {
            Some(ssrc) if ssrc == packet.ssrc => {
                let delta = seq.wrapping_sub(self.max_seq);
                if delta == 0 {
                    SeqVerdict::Late
                } else if delta < MAX_DROPOUT {
                    if seq < self.max_seq {
                        self.cycles = self.cycles.wrapping_add(1 << 16);
                    }
                    self.max_seq = seq;
                    SeqVerdict::Fresh
                } else if delta <= u16::MAX - MAX_MISORDER {
                    self.restart(packet.ssrc, seq);
                    SeqVerdict::Restart
                } else {
                    SeqVerdict::Late
                }
            }
            Some(_) => {
                self.restart(packet.ssrc, seq);
                SeqVerdict::Restart
            }
            None => {
                self.restart(packet.ssrc, seq);
                SeqVerdict::Fresh
            }
        };
        self.received = self.received.wrapping_add(1);
        // Jitter (A.8): difference of relative transit times.
        let arrival_units = (arrival.saturating_duration_since(epoch).as_micros() as u64)
            .saturating_mul(u64::from(clock_rate))
            / 1_000_000;
        let transit = arrival_units as i64 - i64::from(packet.timestamp);
        if let Some(previous) = self.transit {
            let d = (transit - previous).unsigned_abs();
            // Ignore absurd jumps (timestamp restarts) rather than poison
            // the estimate for a minute.
            if d < u64::from(clock_rate) * 10 {
                self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
            }
        }
        self.transit = Some(transit);
        verdict
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        let last_sr = self.last_sr;
        *self = ReceiveStats {
            ssrc: Some(ssrc),
            base_seq: u32::from(seq),
            max_seq: seq,
            last_sr,
            ..ReceiveStats::default()
        };
    }

    /// The far end's SSRC, once a packet has arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u32 {
        if self.ssrc.is_none() {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Cumulative packets lost (negative when duplicates outnumber losses).
    pub fn cumulative_lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received)
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        (self.jitter16 >> 4).min(u64::from(u32::MAX)) as u32
    }

    /// Interarrival jitter as a duration, for a given clock rate.
    pub fn jitter_duration(&self, clock_rate: u32) -> Duration {
        Duration::from_micros(u64::from(self.jitter()) * 1_000_000 / u64::from(clock_rate.max(1)))
    }

    /// Fraction lost since the previous call, in 1/256 (RFC 3550 A.3); moves
    /// the interval on, so call it once per report.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32) -> Vec<u8> {
        let mut sender = RtpSender::new(0x1234_5678, seq, ts);
        let mut out = Vec::new();
        sender.write(Instant::now(), 0, false, &[0xFF; 160], 160, &mut out);
        out
    }

    #[test]
    fn writes_and_reads_back() {
        let now = Instant::now();
        let mut sender = RtpSender::new(7, 65535, u32::MAX - 100);
        let mut out = Vec::new();
        sender.write(now, 8, true, &[1, 2, 3], 160, &mut out);
        let p = RtpPacket::parse(&out).unwrap();
        assert_eq!(
            (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
            (8, true, 65535, u32::MAX - 100, 7)
        );
        assert_eq!(p.payload, &[1, 2, 3]);
        sender.write(now, 8, false, &[4], 160, &mut out);
        let p = RtpPacket::parse(&out).unwrap();
        // Sequence and timestamp wrap without a jump.
        assert_eq!((p.sequence, p.timestamp), (0, 59));
        assert_eq!(sender.packets, 2);
        assert_eq!(sender.octets, 4);
    }

    #[test]
    fn refuses_what_is_not_rtp() {
        assert!(RtpPacket::parse(&[]).is_err());
        assert!(RtpPacket::parse(&[0x80, 0, 0]).is_err());
        let mut v1 = packet(1, 1);
        v1[0] = 0x40;
        assert!(RtpPacket::parse(&v1).is_err());
        // RTCP receiver report arriving on the RTP port.
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 1];
        assert!(RtpPacket::parse(&rr).is_err());
        // CSRC count larger than the packet.
        let mut csrc = packet(1, 1);
        csrc.truncate(12);
        csrc[0] = 0x8F;
        assert!(RtpPacket::parse(&csrc).is_err());
    }

    #[test]
    fn loss_reorder_duplicates_and_wrap() {
        let epoch = Instant::now();
        let mut stats = ReceiveStats::default();
        let mut verdicts = Vec::new();
        // 65530..=65535, 0..=9 with 3 lost, 65534 duplicated, 2 and 1 swapped.
        let order: Vec<u16> = vec![
            65530, 65531, 65532, 65533, 65534, 65534, 65535, 0, 2, 1, 4, 5, 7, 8, 9,
        ];
        for (i, seq) in order.iter().enumerate() {
            let raw = packet(*seq, u32::from(*seq) * 160);
            let p = RtpPacket::parse(&raw).unwrap();
            verdicts.push(stats.record(
                &p,
                epoch + Duration::from_millis(20 * i as u64),
                epoch,
                8000,
            ));
        }
        assert_eq!(stats.expected(), 16);
        assert_eq!(stats.received(), 15);
        // 3 and 6 lost, one duplicate: 16 - 15 = 1.
        assert_eq!(stats.cumulative_lost(), 1);
        assert_eq!(stats.extended_max(), 65536 + 9);
        assert_eq!(verdicts[5], SeqVerdict::Late);
        assert_eq!(verdicts[9], SeqVerdict::Late);
        assert_eq!(stats.take_fraction_lost(), (256 / 16) as u8);
        assert_eq!(stats.take_fraction_lost(), 0);
    }

    #[test]
    fn steady_stream_has_no_jitter_and_a_bumpy_one_has_some() {
        let epoch = Instant::now();
        let mut steady = ReceiveStats::default();
        let mut bumpy = ReceiveStats::default();
        for i in 0..500u16 {
            let raw = packet(i, u32::from(i) * 160);
            let p = RtpPacket::parse(&raw).unwrap();
            steady.record(
                &p,
                epoch + Duration::from_millis(20 * u64::from(i)),
                epoch,
                8000,
            );
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            bumpy.record(
                &p,
                epoch + Duration::from_millis(20 * u64::from(i) + wobble),
                epoch,
                8000,
            );
        }
        assert_eq!(steady.jitter(), 0);
        // |D| is 80 units every packet, so J converges to 80 (10 ms).
        assert!((75..=80).contains(&bumpy.jitter()), "{}", bumpy.jitter());
        assert_eq!(bumpy.jitter_duration(8000).as_millis(), 9);
    }

    #[test]
    fn a_new_ssrc_restarts_the_count() {
        let epoch = Instant::now();
        let mut stats = ReceiveStats::default();
        for i in 0..10u16 {
            let raw = packet(i, 0);
            stats.record(&RtpPacket::parse(&raw).unwrap(), epoch, epoch, 8000);
        }
        let mut other = RtpSender::new(99, 5000, 0);
        let mut out = Vec::new();
        other.write(epoch, 0, false, &[0; 160], 160, &mut out);
        let verdict = stats.record(&RtpPacket::parse(&out).unwrap(), epoch, epoch, 8000);
        assert_eq!(verdict, SeqVerdict::Restart);
        assert_eq!(stats.ssrc(), Some(99));
        assert_eq!(stats.received(), 1);
        assert_eq!(stats.expected(), 1);
    }
}
