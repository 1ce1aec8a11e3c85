//! G.711 µ-law (PCMU) and A-law (PCMA): the two codecs every SIP provider
//! speaks. Both directions are table lookups: 256-entry decode tables built at
//! compile time and 64 Ki-entry encode tables (one byte per 16-bit sample)
//! built once on first use.

use std::sync::LazyLock;

/// µ-law bias from ITU-T G.711 (added before finding the segment).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent after the bias is added.
const ULAW_CLIP: i32 = 32635;

/// Encodes one linear sample as µ-law (the reference algorithm; the encode
/// table is built from it).
const fn ulaw_from_linear(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while s & mask == 0 && exponent > 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one µ-law byte.
const fn linear_from_ulaw(byte: u8) -> i16 {
    let u = !byte as i32;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample as A-law (13-bit magnitude, even bits inverted).
const fn alaw_from_linear(sample: i16) -> u8 {
    let mut pcm = (sample as i32) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment ends for the 13-bit magnitude.
    let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut segment = 0;
    while segment < 8 && pcm > ends[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut value = (segment as i32) << 4;
    if segment < 2 {
        value |= (pcm >> 1) & 0x0F;
    } else {
        value |= (pcm >> segment) & 0x0F;
    }
    (value ^ mask) as u8
}

/// Decodes one A-law byte.
const fn linear_from_alaw(byte: u8) -> i16 {
    let a = (byte ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const fn decode_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            linear_from_alaw(i as u8)
        } else {
            linear_from_ulaw(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = decode_table(false);
static ALAW_DECODE: [i16; 256] = decode_table(true);

fn encode_table(encode: fn(i16) -> u8) -> Box<[u8]> {
    (0..=u16::MAX).map(|i| encode(i as i16)).collect()
}

static ULAW_ENCODE: LazyLock<Box<[u8]>> = LazyLock::new(|| encode_table(ulaw_from_linear));
static ALAW_ENCODE: LazyLock<Box<[u8]>> = LazyLock::new(|| encode_table(alaw_from_linear));

/// Which G.711 law a leg speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, RTP payload type 0 (North America, Japan).
    Ulaw,
    /// A-law, RTP payload type 8 (the rest of the world).
    Alaw,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The law carried by a static payload type, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Ulaw),
            8 => Some(Law::Alaw),
            _ => None,
        }
    }

    /// The encoded byte of digital silence in this law.
    pub fn silence(self) -> u8 {
        self.encode_one(0)
    }

    /// Decodes one byte.
    pub fn decode_one(self, byte: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_DECODE[byte as usize],
            Law::Alaw => ALAW_DECODE[byte as usize],
        }
    }

    /// Encodes one sample.
    pub fn encode_one(self, sample: i16) -> u8 {
        self.encode_table()[sample as u16 as usize]
    }

    /// Decodes `payload` into `out`, replacing its contents.
    pub fn decode(self, payload: &[u8], out: &mut Vec<i16>) {
        let table = match self {
            Law::Ulaw => &ULAW_DECODE,
            Law::Alaw => &ALAW_DECODE,
        };
        out.clear();
        out.extend(payload.iter().map(|&b| table[b as usize]));
    }

    /// Encodes `samples`, appending one byte per sample to `out`.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        let table = self.encode_table();
        out.extend(samples.iter().map(|&s| table[s as u16 as usize]));
    }

    fn encode_table(self) -> &'static [u8] {
        match self {
            Law::Ulaw => &ULAW_ENCODE,
            Law::Alaw => &ALAW_ENCODE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_g711() {
        // µ-law: 0xFF and 0x7F are +0 and -0; 0x80 is the largest positive.
        assert_eq!(Law::Ulaw.decode_one(0xFF), 0);
        assert_eq!(Law::Ulaw.decode_one(0x80), 32124);
        assert_eq!(Law::Ulaw.decode_one(0x00), -32124);
        assert_eq!(Law::Ulaw.encode_one(0), 0xFF);
        // A-law: 0xD5 is the smallest positive step, 0xAA the largest.
        assert_eq!(Law::Alaw.decode_one(0xD5), 8);
        assert_eq!(Law::Alaw.decode_one(0xAA), 32256);
        assert_eq!(Law::Alaw.decode_one(0x2A), -32256);
        assert_eq!(Law::Alaw.encode_one(0), 0xD5);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for law in [Law::Ulaw, Law::Alaw] {
            for byte in 0..=255u8 {
                let back = law.encode_one(law.decode_one(byte));
                // µ-law has two zeros (0x7F and 0xFF); both decode to 0.
                if law == Law::Ulaw && byte == 0x7F {
                    assert_eq!(back, 0xFF);
                    continue;
                }
                assert_eq!(back, byte, "{law:?} code {byte:#04x}");
            }
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let back = law.decode_one(law.encode_one(s)) as i32;
                let err = (back - s as i32).abs();
                // The largest G.711 step is 1024 (µ-law) / 1024 (A-law);
                // the clipped top end may be off by a little more.
                let limit = if (s as i32).abs() > 31000 { 1500 } else { 520 };
                assert!(err <= limit, "{law:?} {s} -> {back}");
                // Relative error stays under ~6 % above the linear segments.
                if (s as i32).abs() > 256 {
                    assert!(err * 100 <= (s as i32).abs() * 7, "{law:?} {s} -> {back}");
                }
            }
        }
    }

    #[test]
    fn payload_types() {
        assert_eq!(Law::from_payload_type(0), Some(Law::Ulaw));
        assert_eq!(Law::from_payload_type(8), Some(Law::Alaw));
        assert_eq!(Law::from_payload_type(18), None);
        assert_eq!(Law::Alaw.payload_type(), 8);
    }
}
