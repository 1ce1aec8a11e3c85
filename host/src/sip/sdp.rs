//! SDP offer/answer for audio (RFC 3264, RFC 4566): PCMU, PCMA and
//! telephone-event, connection address, port, `ptime` and direction.
//!
//! Only what a voice leg needs is modelled; any other line is ignored on input.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Why a session description could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not UTF-8, or a line without `x=`.
    #[error("malformed SDP line: {0}")]
    Line(String),
    /// No `m=audio` section.
    #[error("no audio stream in SDP")]
    NoAudio,
    /// No usable `c=` line for the audio stream.
    #[error("no connection address in SDP")]
    NoConnection,
    /// The answer shares no codec with the offer.
    #[error("no common codec (offered {offered}, answered {answered})")]
    NoCommonCodec {
        /// What we offered.
        offered: String,
        /// What came back.
        answered: String,
    },
}

/// An audio codec we can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// G.711 µ-law, payload type 0.
    #[serde(alias = "pcmu", alias = "PCMU")]
    Pcmu,
    /// G.711 A-law, payload type 8.
    #[serde(alias = "pcma", alias = "PCMA")]
    Pcma,
}

impl Codec {
    /// The static payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    /// The rtpmap encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Pcmu, Self::Pcma]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default).
    #[default]
    SendRecv,
    /// The describing side only sends (e.g. it put the call on hold with music).
    SendOnly,
    /// The describing side only receives.
    RecvOnly,
    /// No media either way (hold).
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to this offered direction (RFC 3264 §6.1).
    pub fn answer(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }
}

/// One payload format offered in an `m=audio` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name (`PCMU`, `telephone-event`, ...), from rtpmap or the static table.
    pub name: String,
    /// Clock rate.
    pub rate: u32,
}

/// An audio session description: ours to send, or theirs as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSdp {
    /// Session id and version for the `o=` line.
    pub session: (u64, u64),
    /// Where RTP for this stream goes.
    pub address: IpAddr,
    /// RTP port (0 = stream refused).
    pub port: u16,
    /// Payload formats in preference order.
    pub formats: Vec<Format>,
    /// Packetisation time in ms.
    pub ptime: Option<u32>,
    /// Direction attribute.
    pub direction: Direction,
}

impl AudioSdp {
    /// Keeps only the audio codecs of `codecs`, in that order, followed by
    /// the formats that are not codecs (telephone-event).
    pub fn keep_codecs(&mut self, codecs: &[Codec]) {
        let is_codec = |f: &Format| {
            [Codec::Pcmu, Codec::Pcma]
                .iter()
                .any(|c| c.payload_type() == f.payload_type)
        };
        let mut kept: Vec<Format> = codecs
            .iter()
            .filter_map(|c| {
                self.formats
                    .iter()
                    .find(|f| f.payload_type == c.payload_type())
                    .cloned()
            })
            .collect();
        kept.extend(self.formats.iter().filter(|f| !is_codec(f)).cloned());
        self.formats = kept;
    }

    /// Our offer: PCMU, PCMA and telephone-event (101), 20 ms.
    pub fn offer(address: IpAddr, port: u16, session: u64) -> Self {
        AudioSdp {
            session: (session, 1),
            address,
            port,
            formats: vec![
                Format {
                    payload_type: 0,
                    name: "PCMU".into(),
                    rate: 8000,
                },
                Format {
                    payload_type: 8,
                    name: "PCMA".into(),
                    rate: 8000,
                },
                Format {
                    payload_type: 101,
                    name: "telephone-event".into(),
                    rate: 8000,
                },
            ],
            ptime: Some(20),
            direction: Direction::SendRecv,
        }
    }

    /// Where to send RTP.
    pub fn rtp_address(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Whether the stream is on hold from the describing side's view.
    pub fn on_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.address.is_unspecified()
    }

    /// The payload type the describing side uses for telephone-event, if any.
    pub fn telephone_event(&self) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case("telephone-event"))
            .map(|f| f.payload_type)
    }

    /// The first audio codec in this description that we support.
    pub fn first_codec(&self) -> Option<Codec> {
        self.formats
            .iter()
            .find_map(|f| Codec::from_name(&f.name).filter(|_| f.rate == 8000))
    }

    /// Checks an answer against our offer: the codec to use, or why none.
    pub fn negotiate(&self, answer: &AudioSdp) -> Result<Codec, SdpError> {
        let ours: Vec<Codec> = self
            .formats
            .iter()
            .filter_map(|f| Codec::from_name(&f.name))
            .collect();
        answer
            .formats
            .iter()
            .filter(|f| f.rate == 8000)
            .find_map(|f| Codec::from_name(&f.name).filter(|c| ours.contains(c)))
            .filter(|_| answer.port != 0)
            .ok_or_else(|| SdpError::NoCommonCodec {
                offered: names(&self.formats),
                answered: names(&answer.formats),
            })
    }

    /// Our answer to their offer (a re-INVITE): the codec we use, the
    /// mirrored direction, our address. `None` if nothing in it is usable.
    pub fn answer_to(&self, offer: &AudioSdp, codec: Codec) -> Result<AudioSdp, SdpError> {
        let chosen = offer
            .formats
            .iter()
            .find(|f| Codec::from_name(&f.name) == Some(codec) && f.rate == 8000)
            .or_else(|| {
                offer
                    .formats
                    .iter()
                    .find(|f| Codec::from_name(&f.name).is_some() && f.rate == 8000)
            })
            .cloned()
            .ok_or_else(|| SdpError::NoCommonCodec {
                offered: names(&offer.formats),
                answered: names(&self.formats),
            })?;
        let mut formats = vec![chosen];
        if let Some(f) = offer
            .formats
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case("telephone-event"))
        {
            formats.push(f.clone());
        }
        Ok(AudioSdp {
            session: (self.session.0, self.session.1 + 1),
            address: self.address,
            port: self.port,
            formats,
            ptime: self.ptime,
            direction: offer.direction.answer(),
        })
    }

    /// Reads a session description; only the first audio stream is used.
    pub fn parse(bytes: &[u8]) -> Result<Self, SdpError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SdpError::Line("not UTF-8".into()))?;
        let mut session_conn: Option<IpAddr> = None;
        let mut media_conn: Option<IpAddr> = None;
        let mut session = (0, 0);
        let mut in_audio = false;
        let mut seen_audio = false;
        let mut port = 0;
        let mut formats: Vec<Format> = Vec::new();
        let mut ptime = None;
        let mut direction = Direction::SendRecv;
        let mut session_direction = None;
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let (kind, value) = match line.split_once('=') {
                Some((k, v)) if k.len() == 1 => (k, v),
                _ => return Err(SdpError::Line(truncate(line))),
            };
            match kind {
                "o" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() >= 3 {
                        session = (f[1].parse().unwrap_or(0), f[2].parse().unwrap_or(0));
                    }
                }
                "c" => {
                    let addr =
                        parse_connection(value).ok_or_else(|| SdpError::Line(truncate(line)))?;
                    if in_audio {
                        media_conn = Some(addr);
                    } else if !seen_audio {
                        session_conn = Some(addr);
                    }
                }
                "m" => {
                    if seen_audio {
                        in_audio = false;
                        continue;
                    }
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.first() != Some(&"audio") {
                        in_audio = false;
                        continue;
                    }
                    if f.len() < 4 {
                        return Err(SdpError::Line(truncate(line)));
                    }
                    port = f[1]
                        .split('/')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| SdpError::Line(truncate(line)))?;
                    for pt in &f[3..] {
                        let pt: u8 = pt.parse().map_err(|_| SdpError::Line(truncate(line)))?;
                        let (name, rate) = match pt {
                            0 => ("PCMU", 8000),
                            8 => ("PCMA", 8000),
                            _ => ("", 0),
                        };
                        formats.push(Format {
                            payload_type: pt,
                            name: name.into(),
                            rate,
                        });
                    }
                    in_audio = true;
                    seen_audio = true;
                }
                "a" if in_audio || !seen_audio => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    match name {
                        "rtpmap" if in_audio => {
                            let mut it = arg.split_whitespace();
                            let (Some(pt), Some(enc)) = (it.next(), it.next()) else {
                                continue;
                            };
                            let Ok(pt) = pt.parse::<u8>() else { continue };
                            let mut enc = enc.split('/');
                            let name = enc.next().unwrap_or_default();
                            let rate = enc.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                            if let Some(f) = formats.iter_mut().find(|f| f.payload_type == pt) {
                                f.name = name.to_string();
                                f.rate = rate;
                            }
                        }
                        "ptime" if in_audio => ptime = arg.trim().parse().ok(),
                        "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                            let d = match name {
                                "sendonly" => Direction::SendOnly,
                                "recvonly" => Direction::RecvOnly,
                                "inactive" => Direction::Inactive,
                                _ => Direction::SendRecv,
                            };
                            if in_audio {
                                direction = d;
                            } else {
                                session_direction = Some(d);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !seen_audio {
            return Err(SdpError::NoAudio);
        }
        let address = media_conn.or(session_conn).ok_or(SdpError::NoConnection)?;
        // A media-level direction overrides the session-level one.
        let has_media_direction = text
            .lines()
            .skip_while(|l| !l.starts_with("m=audio"))
            .any(|l| {
                matches!(
                    l.trim_end(),
                    "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
                )
            });
        if !has_media_direction {
            direction = session_direction.unwrap_or_default();
        }
        Ok(AudioSdp {
            session,
            address,
            port,
            formats,
            ptime,
            direction,
        })
    }

    /// Writes the description.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ip = match self.address {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "v=0\r\no=switchboard {} {} IN {ip} {}\r\ns=switchboard\r\nc=IN {ip} {}\r\nt=0 0\r\nm=audio {} RTP/AVP",
            self.session.0, self.session.1, self.address, self.address, self.port
        );
        for f in &self.formats {
            let _ = write!(s, " {}", f.payload_type);
        }
        s.push_str("\r\n");
        for f in &self.formats {
            let _ = write!(s, "a=rtpmap:{} {}/{}\r\n", f.payload_type, f.name, f.rate);
            if f.name.eq_ignore_ascii_case("telephone-event") {
                let _ = write!(s, "a=fmtp:{} 0-16\r\n", f.payload_type);
            }
        }
        if let Some(p) = self.ptime {
            let _ = write!(s, "a=ptime:{p}\r\n");
        }
        let _ = write!(s, "a={}\r\n", self.direction.attribute());
        s.into_bytes()
    }
}

fn names(formats: &[Format]) -> String {
    let list: Vec<&str> = formats
        .iter()
        .map(|f| {
            if f.name.is_empty() {
                "?"
            } else {
                f.name.as_str()
            }
        })
        .collect();
    list.join(" ")
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() < 3 || f[0] != "IN" {
        return None;
    }
    f[2].split('/').next()?.parse().ok()
}

fn truncate(line: &str) -> String {
    line.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARESIP: &str = "v=0\r\no=- 123 456 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\na=sendonly\r\n";

    #[test]
    fn round_trip_of_our_offer() {
        let offer = AudioSdp::offer("127.0.0.1".parse().expect("ip"), 4000, 7);
        let back = AudioSdp::parse(&offer.to_bytes()).expect("valid");
        assert_eq!(back, offer);
    }

    #[test]
    fn reads_a_foreign_description() {
        let sdp = AudioSdp::parse(BARESIP.as_bytes()).expect("valid");
        assert_eq!(sdp.rtp_address(), "127.0.0.1:40000".parse().expect("addr"));
        assert_eq!(sdp.first_codec(), Some(Codec::Pcma));
        assert_eq!(sdp.telephone_event(), Some(96));
        assert_eq!(sdp.ptime, Some(30));
        assert!(sdp.on_hold());
    }

    #[test]
    fn negotiation_picks_the_answers_first_shared_codec_or_says_why_not() {
        let offer = AudioSdp::offer("127.0.0.1".parse().expect("ip"), 4000, 7);
        let answer = AudioSdp::parse(BARESIP.as_bytes()).expect("valid");
        assert_eq!(offer.negotiate(&answer), Ok(Codec::Pcma));
        let g729 = BARESIP.replace("m=audio 40000 RTP/AVP 8 0 96", "m=audio 40000 RTP/AVP 18");
        let answer = AudioSdp::parse(g729.as_bytes()).expect("valid");
        let err = offer.negotiate(&answer).expect_err("no codec");
        assert_eq!(
            err.to_string(),
            "no common codec (offered PCMU PCMA telephone-event, answered ?)"
        );
    }

    #[test]
    fn hold_offer_gets_recvonly_answer() {
        let ours = AudioSdp::offer("127.0.0.1".parse().expect("ip"), 4000, 7);
        let hold = AudioSdp::parse(BARESIP.as_bytes()).expect("valid");
        let answer = ours.answer_to(&hold, Codec::Pcma).expect("answerable");
        assert_eq!(answer.direction, Direction::RecvOnly);
        assert_eq!(answer.formats[0].name, "PCMA");
        assert_eq!(answer.session.1, 2, "version goes up");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "x",
            "v=0\r\nm=audio",
            "m=audio x RTP/AVP 0",
            "c=IN IP4 nothing\r\nm=audio 1 RTP/AVP 0",
            "m=video 1 RTP/AVP 0",
        ] {
            assert!(AudioSdp::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
