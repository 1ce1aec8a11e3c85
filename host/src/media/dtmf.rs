//! DTMF received as RFC 4733 telephone-events: one event is sent as several
//! packets sharing the timestamp of its start (the last three with the end
//! bit); a digit is reported once, when its first packet arrives, however
//! many of its packets are repeated, reordered or lost.

use super::MediaError;

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0-9, 10 = `*`, 11 = `#`, 12-15 = A-D.
    pub event: u8,
    /// Set on the final packets of the event.
    pub end: bool,
    /// Volume in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event block of a payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MediaError> {
        let [event, flags, d1, d2, ..] = *payload else {
            return Err(MediaError::BadDtmf(format!(
                "{} bytes, need 4",
                payload.len()
            )));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d1, d2]),
        })
    }

    /// Writes the 4-byte payload.
    pub fn write(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The DTMF key this event stands for, if it is one.
    pub fn digit(&self) -> Option<char> {
        match self.event {
            0..=9 => Some(char::from(b'0' + self.event)),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some(char::from(b'A' + self.event - 12)),
            _ => None,
        }
    }
}

/// Turns a leg's telephone-event packets into digits, once each.
#[derive(Debug, Default, Clone)]
pub struct DtmfReceiver {
    /// Timestamps of the most recent events already reported.
    seen: [Option<u32>; 4],
    next: usize,
}

impl DtmfReceiver {
    /// Takes one telephone-event packet (its RTP timestamp and payload);
    /// returns the digit when this packet starts an event not seen before.
    pub fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Result<Option<char>, MediaError> {
        let event = TelephoneEvent::parse(payload)?;
        if self.seen.contains(&Some(timestamp)) {
            return Ok(None);
        }
        self.seen[self.next] = Some(timestamp);
        self.next = (self.next + 1) % self.seen.len();
        Ok(event.digit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_codes() {
        let digits: String = (0..16)
            .filter_map(|e| {
                TelephoneEvent {
                    event: e,
                    end: false,
                    volume: 10,
                    duration: 0,
                }
                .digit()
            })
            .collect();
        assert_eq!(digits, "0123456789*#ABCD");
        assert_eq!(
            TelephoneEvent {
                event: 16,
                end: false,
                volume: 0,
                duration: 0
            }
            .digit(),
            None
        );
    }

    #[test]
    fn round_trip_and_short_payloads() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(TelephoneEvent::parse(&e.write()).unwrap(), e);
        assert!(TelephoneEvent::parse(&[1, 2, 3]).is_err());
    }

    #[test]
    fn one_digit_per_event_whatever_the_repeats() {
        let mut rx = DtmfReceiver::default();
        let mut heard = String::new();
        // "1" as five packets (three of them end packets), "#" with its first
        // packet lost, then "1" again as a new event.
        let packets = [
            (1000, 1, false, 160),
            (1000, 1, false, 320),
            (1000, 1, true, 480),
            (1000, 1, true, 480),
            (1000, 1, true, 480),
            (3000, 11, false, 320),
            (3000, 11, true, 480),
            (5000, 1, false, 160),
        ];
        for (ts, event, end, duration) in packets {
            let payload = TelephoneEvent {
                event,
                end,
                volume: 10,
                duration,
            }
            .write();
            if let Some(d) = rx.receive(ts, &payload).unwrap() {
                heard.push(d);
            }
        }
        assert_eq!(heard, "1#1");
    }
}
