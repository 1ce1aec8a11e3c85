//! Goertzel tone detection: how much of a signal's energy sits at one
//! frequency. Used to check what each leg hears (tests, and the `media`
//! smoke check), not on the mixing path.

use super::jitter::CLOCK_RATE;

/// Energy of `samples` at `hz` (8 kHz sampling), by the Goertzel algorithm.
pub fn power(samples: &[i16], hz: f32) -> f64 {
    let n = samples.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let k = (0.5 + n * f64::from(hz) / f64::from(CLOCK_RATE)).floor();
    let w = 2.0 * std::f64::consts::PI * k / n;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0)
}

/// The share of the signal's total energy found at `hz`, from 0 to about 1.
/// A pure tone at `hz` gives close to 1; silence gives 0.
pub fn power_ratio(samples: &[i16], hz: f32) -> f64 {
    let total: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if total == 0.0 {
        return 0.0;
    }
    // Parseval: a pure tone's Goertzel power is total * N / 2.
    power(samples, hz) / (total * samples.len() as f64 / 2.0)
}

/// The median of [`power_ratio`] over consecutive windows of `window`
/// samples. A tone that is there most of the time scores as if it were
/// always there: lost or concealed frames (phase jumps) spoil only the few
/// windows they fall in. Choose `window` so that `hz * window / 8000` is a
/// whole number (400 samples suit multiples of 20 Hz).
pub fn median_power_ratio(samples: &[i16], hz: f32, window: usize) -> f64 {
    let mut ratios: Vec<f64> = samples
        .chunks_exact(window.max(1))
        .map(|w| power_ratio(w, hz))
        .collect();
    if ratios.is_empty() {
        return 0.0;
    }
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn finds_the_tone_that_is_there() {
        let s = tone(440.0, 1600);
        assert!(power_ratio(&s, 440.0) > 0.9);
        assert!(power_ratio(&s, 880.0) < 0.01);
        let mixed: Vec<i16> = tone(440.0, 1600)
            .iter()
            .zip(tone(1320.0, 1600))
            .map(|(a, b)| a / 2 + b / 2)
            .collect();
        assert!(power_ratio(&mixed, 440.0) > 0.4);
        assert!(power_ratio(&mixed, 1320.0) > 0.4);
        assert!(power_ratio(&mixed, 880.0) < 0.01);
        assert_eq!(power_ratio(&[0; 160], 440.0), 0.0);
    }
}
