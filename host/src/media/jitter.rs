//! The jitter buffer of one leg: packets arrive early, late, twice or never;
//! the mixer takes exactly one 20 ms frame per tick. Sans-IO: arrivals and
//! ticks carry the time, nothing here reads a clock.
//!
//! Packets are kept by (extended) RTP timestamp, so any packet size plays
//! out correctly and reordering costs nothing. Playout lags the far end by a
//! target delay that follows the measured interarrival jitter, between a
//! configured minimum and maximum. A frame that is missing is concealed by
//! repeating the previous one, fading out over four frames; a buffer that
//! has grown deeper than the target is drained by skipping 5 ms at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The G.711 clock rate.
pub const CLOCK_RATE: u32 = 8000;

/// Bounds of the playout delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest delay held back before playing (at least one frame).
    pub min_delay: Duration,
    /// Largest delay; the target never grows beyond it, and packets further
    /// ahead than twice this make the buffer start again.
    pub max_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        }
    }
}

/// What one tick got from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Received audio (gaps inside the frame, if any, are zero).
    Audio,
    /// Nothing arrived for this frame; the previous one, faded.
    Concealed,
    /// Not playing: before the first packet or after the far end fell silent.
    Silence,
}

/// Counters a leg exposes about its receive path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub accepted: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Packets dropped because their time had already been played.
    pub late: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Frames played from received audio.
    pub played: u64,
    /// Of those, frames with a gap (part of a lost packet) filled by
    /// concealment.
    pub partly_concealed: u64,
    /// Times the buffer started again (far end silent, or a jump in time).
    pub restarts: u64,
    /// Samples skipped to bring the delay back to the target.
    pub skipped_samples: u64,
    /// The current target delay in samples.
    pub target_samples: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Buffering { since: Option<Instant> },
    Playing { playout: i64, empty_frames: u32 },
}

/// One leg's jitter buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    packets: BTreeMap<i64, Vec<i16>>,
    state: State,
    /// The last timestamp pushed, extended to 64 bits.
    reference: Option<i64>,
    /// Interarrival jitter estimate ×16, in samples.
    jitter16: i64,
    last_transit: Option<i64>,
    epoch: Option<Instant>,
    last_frame: [i16; FRAME_SAMPLES],
    concealed_in_row: u32,
    target: u32,
    stats: JitterStats,
    spare: Vec<Vec<i16>>,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let mut buffer = JitterBuffer {
            config,
            packets: BTreeMap::new(),
            state: State::Buffering { since: None },
            reference: None,
            jitter16: 0,
            last_transit: None,
            epoch: None,
            last_frame: [0; FRAME_SAMPLES],
            concealed_in_row: 0,
            target: 0,
            stats: JitterStats::default(),
            spare: Vec::new(),
        };
        buffer.target = buffer.min_samples();
        buffer.stats.target_samples = buffer.target;
        buffer
    }

    fn min_samples(&self) -> u32 {
        samples_of(self.config.min_delay).max(FRAME_SAMPLES as u32)
    }

    fn max_samples(&self) -> u32 {
        samples_of(self.config.max_delay).max(self.min_samples())
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current playout delay target.
    pub fn target_delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.target) * 1_000_000 / u64::from(CLOCK_RATE))
    }

    /// Takes the decoded samples of one packet with RTP timestamp `timestamp`
    /// that arrived at `now`. Returns false when the packet was dropped
    /// (duplicate or too late).
    pub fn push(&mut self, now: Instant, timestamp: u32, samples: &[i16]) -> bool {
        if samples.is_empty() {
            return false;
        }
        let ts = match self.reference {
            Some(r) => r + i64::from(timestamp.wrapping_sub(r as u32) as i32),
            None => i64::from(timestamp) + (1 << 32),
        };
        let len = samples.len() as i64;
        let jump = i64::from(self.max_samples()) * 2;
        if let State::Playing { playout, .. } = self.state {
            if ts + len <= playout {
                // Far behind playout: either late, or the far end jumped back
                // in time (restart); only a large jump means the latter.
                if playout - ts > jump {
                    self.restart();
                } else {
                    self.stats.late += 1;
                    return false;
                }
            } else if ts - playout > jump {
                self.restart();
            }
        }
        if self.reference.is_none_or(|r| ts > r) {
            self.reference = Some(ts);
        }
        self.update_jitter(now, ts);
        if self.packets.contains_key(&ts) {
            self.stats.duplicates += 1;
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(samples);
        self.packets.insert(ts, buf);
        self.stats.accepted += 1;
        // Never hold more than twice the largest delay.
        while self.span() > jump {
            if let Some((_, old)) = self.packets.pop_first() {
                self.spare.push(old);
            }
        }
        if let State::Buffering { since: None } = self.state {
            self.state = State::Buffering { since: Some(now) };
        }
        true
    }

    fn update_jitter(&mut self, now: Instant, ts: i64) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros() as i64)
            * i64::from(CLOCK_RATE)
            / 1_000_000;
        let transit = arrival - ts;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs().min(i64::from(CLOCK_RATE));
            self.jitter16 += d - ((self.jitter16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        // Hold back one frame plus three times the jitter.
        let wanted = FRAME_SAMPLES as i64 + 3 * (self.jitter16 >> 4);
        self.target = (wanted.max(0) as u32).clamp(self.min_samples(), self.max_samples());
        self.stats.target_samples = self.target;
    }

    fn span(&self) -> i64 {
        match (
            self.packets.first_key_value(),
            self.packets.last_key_value(),
        ) {
            (Some((first, _)), Some((last, samples))) => last + samples.len() as i64 - first,
            _ => 0,
        }
    }

    fn restart(&mut self) {
        while let Some((_, old)) = self.packets.pop_first() {
            self.spare.push(old);
        }
        self.state = State::Buffering { since: None };
        self.reference = None;
        self.last_transit = None;
        self.stats.restarts += 1;
    }

    /// Produces the next 20 ms frame into `out`.
    pub fn pop(&mut self, now: Instant, out: &mut [i16; FRAME_SAMPLES]) -> Frame {
        if let State::Buffering { since } = self.state {
            let waited =
                since.is_some_and(|s| now.saturating_duration_since(s) >= self.target_delay());
            let Some((&first, _)) = self.packets.first_key_value() else {
                out.fill(0);
                return Frame::Silence;
            };
            // Start once the first packet has waited the target delay (by
            // the clock, not by what has arrived: a reordered burst would
            // otherwise start playout early), or the buffer is already at
            // its largest.
            if !(waited || self.span() >= i64::from(self.max_samples())) {
                out.fill(0);
                return Frame::Silence;
            }
            self.state = State::Playing {
                playout: first,
                empty_frames: 0,
            };
        }
        let State::Playing {
            playout,
            empty_frames,
        } = self.state
        else {
            out.fill(0);
            return Frame::Silence;
        };
        let end = playout + FRAME_SAMPLES as i64;
        let mut found = 0usize;
        // Start from the concealment, so that whatever no packet covers
        // (a lost packet straddling this frame) is filled rather than zero.
        let gain = self.conceal_gain(self.concealed_in_row + 1);
        for (o, s) in out.iter_mut().zip(self.last_frame.iter()) {
            *o = ((i32::from(*s) * gain) / 4) as i16;
        }
        for (&ts, samples) in self.packets.range(..end) {
            let p_end = ts + samples.len() as i64;
            if p_end <= playout {
                continue;
            }
            let from = ts.max(playout);
            let to = p_end.min(end);
            let src = (from - ts) as usize..(to - ts) as usize;
            let dst = (from - playout) as usize..(to - playout) as usize;
            out[dst].copy_from_slice(&samples[src]);
            found += (to - from) as usize;
        }
        // Drop what has been fully played.
        while let Some((&ts, samples)) = self.packets.first_key_value() {
            if ts + samples.len() as i64 > end {
                break;
            }
            if let Some((_, old)) = self.packets.pop_first() {
                self.spare.push(old);
            }
        }
        if found > 0 {
            if found < FRAME_SAMPLES {
                self.stats.partly_concealed += 1;
            }
            self.last_frame = *out;
            self.concealed_in_row = 0;
            self.stats.played += 1;
            let mut next = end;
            // Deeper than the target by more than a frame: skip 5 ms.
            let buffered = self
                .packets
                .last_key_value()
                .map_or(0, |(ts, s)| ts + s.len() as i64 - next);
            if buffered > i64::from(self.target) + FRAME_SAMPLES as i64 {
                next += FRAME_SAMPLES as i64 / 4;
                self.stats.skipped_samples += FRAME_SAMPLES as u64 / 4;
            }
            self.state = State::Playing {
                playout: next,
                empty_frames: 0,
            };
            return Frame::Audio;
        }
        // Nothing for this frame.
        let ahead = self.packets.first_key_value().is_some();
        let empty_frames = empty_frames + 1;
        let limit = self.max_samples() / FRAME_SAMPLES as u32;
        if !ahead && empty_frames > limit {
            // The far end has gone quiet: stop and buffer again.
            self.restart();
            return Frame::Silence;
        }
        // A later packet is waiting: this one was lost, move on. Nothing
        // waiting: hold playout so a late packet can still play (the delay
        // grows by a frame), up to the limit above.
        let next = if ahead { end } else { playout };
        self.state = State::Playing {
            playout: next,
            empty_frames,
        };
        self.conceal(out)
    }

    /// Gain in quarters for the n-th concealed frame in a row: fade out
    /// over four frames.
    fn conceal_gain(&self, n: u32) -> i32 {
        match n {
            0 | 1 => 3,
            2 => 2,
            3 => 1,
            _ => 0,
        }
    }

    fn conceal(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> Frame {
        self.concealed_in_row += 1;
        let gain = self.conceal_gain(self.concealed_in_row);
        for (o, s) in out.iter_mut().zip(self.last_frame.iter()) {
            *o = ((i32::from(*s) * gain) / 4) as i16;
        }
        self.stats.concealed += 1;
        Frame::Concealed
    }
}

fn samples_of(d: Duration) -> u32 {
    (d.as_micros() * u128::from(CLOCK_RATE) / 1_000_000).min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(20);

    /// A frame whose every sample carries the frame's index, so the order
    /// of playout is visible.
    fn frame(i: u32) -> Vec<i16> {
        vec![i as i16; FRAME_SAMPLES]
    }

    fn play(buffer: &mut JitterBuffer, now: Instant) -> (Frame, i16) {
        let mut out = [0; FRAME_SAMPLES];
        let kind = buffer.pop(now, &mut out);
        (kind, out[0])
    }

    #[test]
    fn in_order_stream_plays_in_order_after_the_minimum_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut heard = Vec::new();
        for i in 0..50u32 {
            let now = t0 + TICK * i;
            jb.push(now, 1000 + i * 160, &frame(i));
            heard.push(play(&mut jb, now));
        }
        // One frame of delay, then every frame in order.
        assert_eq!(heard[0], (Frame::Silence, 0));
        let values: Vec<i16> = heard[1..].iter().map(|h| h.1).collect();
        assert_eq!(values, (0..49).collect::<Vec<i16>>());
        assert!(heard[1..].iter().all(|h| h.0 == Frame::Audio));
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn reordering_and_duplicates_are_undone() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            min_delay: Duration::from_millis(60),
            ..Default::default()
        });
        // Arrival order: 0 2 1 1 3 5 4 6 7 ... (one tick apart).
        let order = [0u32, 2, 1, 1, 3, 5, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14];
        let mut heard = Vec::new();
        for (tick, &i) in order.iter().enumerate() {
            let now = t0 + TICK * tick as u32;
            jb.push(now, i * 160, &frame(i));
            let (kind, v) = play(&mut jb, now);
            if kind == Frame::Audio {
                heard.push(v);
            }
        }
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(&heard[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_lost_packet_is_concealed_then_playout_goes_on() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut kinds = Vec::new();
        for i in 0..10u32 {
            let now = t0 + TICK * i;
            if i != 4 {
                jb.push(now, i * 160, &frame(i + 100));
            }
            kinds.push(play(&mut jb, now + Duration::from_millis(1)));
        }
        // Playout runs one frame behind: when slot 4 is due, frame 5 is
        // already waiting, so 4 is given up and concealed once.
        let concealed: Vec<_> = kinds.iter().filter(|k| k.0 == Frame::Concealed).collect();
        assert_eq!(concealed.len(), 1);
        // The previous frame at 3/4 gain.
        assert_eq!(concealed[0].1, 103 * 3 / 4);
        let audio: Vec<i16> = kinds
            .iter()
            .filter(|k| k.0 == Frame::Audio)
            .map(|k| k.1)
            .collect();
        assert_eq!(audio, vec![100, 101, 102, 103, 105, 106, 107, 108]);
    }

    #[test]
    fn a_late_packet_is_waited_for_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut audio = Vec::new();
        for i in 0..10u32 {
            let now = t0 + TICK * i;
            // Frame 4 comes 30 ms late, after its slot was due.
            if i != 4 {
                jb.push(now, i * 160, &frame(i));
            }
            if i == 6 {
                jb.push(now, 4 * 160, &frame(4));
            }
            let (kind, v) = play(&mut jb, now + Duration::from_millis(1));
            if kind == Frame::Audio {
                audio.push(v);
            }
        }
        // Slot 4 fell due at tick 5 with frame 5 already there: given up.
        assert_eq!(audio, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn late_packet_after_playout_is_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in 0..5u32 {
            jb.push(t0 + TICK * i, i * 160, &frame(i));
            play(&mut jb, t0 + TICK * i);
        }
        assert!(!jb.push(t0 + TICK * 5, 160, &frame(1)));
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn jitter_grows_the_target_within_bounds() {
        let t0 = Instant::now();
        let config = JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(120),
        };
        let mut jb = JitterBuffer::new(config);
        for i in 0..300u32 {
            // Packets bunch: every other one 30 ms late.
            let late = if i % 2 == 1 {
                Duration::from_millis(30)
            } else {
                Duration::ZERO
            };
            jb.push(t0 + TICK * i + late, i * 160, &frame(i));
            let mut out = [0; FRAME_SAMPLES];
            jb.pop(t0 + TICK * i + Duration::from_millis(5), &mut out);
        }
        let target = jb.target_delay();
        assert!(target > Duration::from_millis(60), "{target:?}");
        assert!(target <= Duration::from_millis(120), "{target:?}");
        // Steady again: the target comes back down.
        for i in 300..1000u32 {
            jb.push(t0 + TICK * i, i * 160, &frame(i));
            let mut out = [0; FRAME_SAMPLES];
            jb.pop(t0 + TICK * i + Duration::from_millis(5), &mut out);
        }
        assert_eq!(jb.target_delay(), Duration::from_millis(20));
    }

    #[test]
    fn silence_then_restart_and_odd_packet_sizes() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // 10 ms packets (80 samples): two make a frame.
        for i in 0..20u32 {
            jb.push(
                t0 + Duration::from_millis(10 * u64::from(i)),
                i * 80,
                &[i as i16; 80],
            );
        }
        let mut out = [0; FRAME_SAMPLES];
        assert_eq!(
            jb.pop(t0 + Duration::from_millis(200), &mut out),
            Frame::Audio
        );
        assert_eq!((out[0], out[80]), (0, 1));
        // The far end goes quiet for a second: the buffer falls back to silence.
        let mut last = Frame::Audio;
        for k in 1..40u32 {
            last = jb.pop(t0 + Duration::from_millis(200) + TICK * k, &mut out);
        }
        assert_eq!(last, Frame::Silence);
        // A new talk spurt far ahead in timestamp starts cleanly.
        let t1 = t0 + Duration::from_secs(2);
        jb.push(t1, 1_000_000, &frame(7));
        assert_eq!(jb.pop(t1 + TICK, &mut out), Frame::Audio);
        assert_eq!(out[0], 7);
    }
}
