//! What the host plays to a leg instead of (or before) the conference:
//! ringback while the other party is being called, short tones, and
//! recorded prompts given as 8 kHz samples.

use std::sync::Arc;

use super::jitter::{CLOCK_RATE, FRAME_SAMPLES};

/// A tone: up to two frequencies summed, switched on and off by a cadence.
#[derive(Debug, Clone, PartialEq)]
pub struct Tone {
    /// Frequencies in Hz (one or two; dual-tone like 400+450 Hz).
    pub frequencies: Vec<f32>,
    /// Peak amplitude of each frequency, in linear 16-bit units.
    pub amplitude: i16,
    /// On and off periods in milliseconds, starting with on.
    pub cadence: Vec<u32>,
    /// Whether the cadence repeats until stopped.
    pub repeat: bool,
}

impl Tone {
    /// Ringback as most of Europe plays it (ITU-T E.180): 425 Hz, 1 s on,
    /// 4 s off, until the other party answers.
    pub fn ringback() -> Self {
        Tone {
            frequencies: vec![425.0],
            amplitude: 6000,
            cadence: vec![1000, 4000],
            repeat: true,
        }
    }

    /// A single beep of `ms` milliseconds at `hz` (a notice to one leg:
    /// someone joined, credit is running out).
    pub fn beep(hz: f32, ms: u32) -> Self {
        Tone {
            frequencies: vec![hz],
            amplitude: 6000,
            cadence: vec![ms],
            repeat: false,
        }
    }

    /// A continuous tone (tests feed these into legs).
    pub fn continuous(hz: f32, amplitude: i16) -> Self {
        Tone {
            frequencies: vec![hz],
            amplitude,
            cadence: vec![u32::MAX],
            repeat: false,
        }
    }
}

/// Something to play to a leg.
#[derive(Debug, Clone, PartialEq)]
pub enum Playback {
    /// A generated tone.
    Tone(Tone),
    /// Recorded 8 kHz linear samples, played once.
    Prompt(Arc<[i16]>),
}

/// Plays one [`Playback`] frame by frame.
#[derive(Debug, Clone)]
pub struct Player {
    playback: Playback,
    /// Samples produced so far.
    position: u64,
    /// Cadence length in samples and the on/off boundaries within it.
    period: u64,
    boundaries: Vec<(u64, bool)>,
}

impl Player {
    /// Starts `playback` from its beginning.
    pub fn new(playback: Playback) -> Self {
        let mut boundaries = Vec::new();
        let mut period = 0u64;
        if let Playback::Tone(tone) = &playback {
            for (i, ms) in tone.cadence.iter().enumerate() {
                period = period.saturating_add(u64::from(*ms) * u64::from(CLOCK_RATE) / 1000);
                boundaries.push((period, i % 2 == 0));
            }
        }
        Player {
            playback,
            position: 0,
            period,
            boundaries,
        }
    }

    /// Writes the next frame into `out`; returns false once the playback has
    /// ended (then `out` is silence).
    pub fn next_frame(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> bool {
        out.fill(0);
        match &self.playback {
            Playback::Prompt(samples) => {
                let start = self.position as usize;
                if start >= samples.len() {
                    return false;
                }
                let end = (start + FRAME_SAMPLES).min(samples.len());
                out[..end - start].copy_from_slice(&samples[start..end]);
            }
            Playback::Tone(tone) => {
                if self.period == 0 || (!tone.repeat && self.position >= self.period) {
                    return false;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let n = self.position + i as u64;
                    let in_period = if tone.repeat { n % self.period } else { n };
                    let on = self
                        .boundaries
                        .iter()
                        .find(|(end, _)| in_period < *end)
                        .is_some_and(|(_, on)| *on);
                    if !on {
                        continue;
                    }
                    let t = n as f64 / f64::from(CLOCK_RATE);
                    let v: f64 = tone
                        .frequencies
                        .iter()
                        .map(|f| {
                            (2.0 * std::f64::consts::PI * f64::from(*f) * t).sin()
                                * f64::from(tone.amplitude)
                        })
                        .sum();
                    *o = v.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
                }
            }
        }
        self.position += FRAME_SAMPLES as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::goertzel::power_ratio;

    #[test]
    fn ringback_follows_its_cadence() {
        let mut player = Player::new(Playback::Tone(Tone::ringback()));
        let mut out = [0; FRAME_SAMPLES];
        let mut on_frames = Vec::new();
        for _ in 0..500 {
            assert!(player.next_frame(&mut out));
            on_frames.push(out.iter().any(|s| *s != 0));
        }
        // 10 s: 1 s on (50 frames), 4 s off (200 frames), twice.
        assert!(on_frames[..50].iter().all(|on| *on));
        assert!(on_frames[50..250].iter().all(|on| !on));
        assert!(on_frames[250..300].iter().all(|on| *on));
        player = Player::new(Playback::Tone(Tone::ringback()));
        let mut two = Vec::new();
        for _ in 0..2 {
            player.next_frame(&mut out);
            two.extend_from_slice(&out);
        }
        assert!(power_ratio(&two, 425.0) > 0.9);
    }

    #[test]
    fn beeps_and_prompts_end() {
        let mut out = [0; FRAME_SAMPLES];
        let mut beep = Player::new(Playback::Tone(Tone::beep(1000.0, 100)));
        let frames = std::iter::from_fn(|| beep.next_frame(&mut out).then_some(())).count();
        assert_eq!(frames, 5);
        let prompt: Arc<[i16]> = (0..400).map(|i| i as i16).collect();
        let mut player = Player::new(Playback::Prompt(prompt));
        assert!(player.next_frame(&mut out));
        assert!(player.next_frame(&mut out));
        assert!(player.next_frame(&mut out));
        // The third frame holds the last 80 samples then silence.
        assert_eq!((out[79], out[80]), (399, 0));
        assert!(!player.next_frame(&mut out));
    }
}
