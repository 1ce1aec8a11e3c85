//! The strict SIP URI every outgoing call is addressed to. User input and
//! plugin results are parsed into it and requests are written from its
//! parts, never from the text it came from, so nothing a user or a plugin
//! writes can break a request line or add a header, tag or parameter.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The longest user part accepted, in bytes.
const MAX_USER: usize = 128;
/// The longest host name (RFC 1035).
const MAX_HOST: usize = 253;

/// Why a text is not a [`TargetUri`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not `sip:` (or `sips:`).
    #[error("not a sip: URI")]
    Scheme,
    /// A character no SIP URI may hold unescaped (space, `<>"`, a control,
    /// anything outside ASCII).
    #[error("the character {0:?} is not allowed in a SIP address")]
    Character(char),
    /// A `?` header part: callers may not add headers.
    #[error("headers (?...) are not allowed in a SIP address")]
    Headers,
    /// The user part is empty, too long, or has a bad escape.
    #[error("the user part {0}")]
    User(&'static str),
    /// The host is not a name, an IPv4 address or a bracketed IPv6 address.
    #[error("the host is not a valid host name or address")]
    Host,
    /// The port is not 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    Port,
    /// A parameter other than `transport` and `user`, or a bad value.
    #[error("the parameter {0:?} is not allowed")]
    Parameter(String),
    /// A parameter given twice.
    #[error("the parameter {0:?} is given twice")]
    DuplicateParameter(String),
}

/// A transport named by a `transport=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriTransport {
    /// `transport=udp`.
    Udp,
    /// `transport=tcp`.
    Tcp,
    /// `transport=tls`.
    Tls,
}

/// The host part of a [`TargetUri`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriHost {
    /// A DNS name, lower-cased.
    Name(String),
    /// An IP address.
    Ip(IpAddr),
}

/// A `sip:`/`sips:` URI with nothing in it but a user, a host, a port and
/// the `transport` and `user` parameters, each checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUri {
    secure: bool,
    user: Option<String>,
    host: UriHost,
    port: Option<u16>,
    transport: Option<UriTransport>,
    user_phone: bool,
}

/// A host and an optional port, as a SIP `hostport` (RFC 3261 §25.1):
/// what peers reach this host at, for example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host: a name or an address.
    pub host: UriHost,
    /// The port, if given.
    pub port: Option<u16>,
}

impl HostPort {
    /// Reads `name`, `name:port`, `192.0.2.1`, `192.0.2.1:5060`, `[2001:db8::1]`
    /// or `[2001:db8::1]:5060`.
    pub fn parse(text: &str) -> Result<HostPort, UriError> {
        if let Some(c) = text
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || " <>\"@;?".contains(*c))
        {
            return Err(UriError::Character(c));
        }
        let (host, port) = parse_host_port(text)?;
        Ok(HostPort { host, port })
    }
}

/// Whether `ip` is a public address: not loopback, private, link-local,
/// unspecified, multicast, broadcast, documentation, shared (100.64/10) or
/// unique-local. What `sip_legs = "public-only"` lets a user's leg reach.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> HostPort {
        HostPort {
            host: UriHost::Ip(addr.ip()),
            port: Some(addr.port()),
        }
    }
}

impl HostPort {
    /// The socket address, when the host is an IP address (port 5060 if
    /// none is given).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            UriHost::Ip(ip) => Some(SocketAddr::new(ip, self.port.unwrap_or(5060))),
            UriHost::Name(_) => None,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPort::parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a host[:port]: {e}")))
    }
}

impl TargetUri {
    /// Parses `text` strictly: `sip:` or `sips:`, an optional user part of
    /// RFC 3261 user characters (and `%XX` escapes) up to 128 bytes, a host,
    /// an optional port, and only the `transport` and `user` parameters,
    /// once each. Headers (`?...`) are refused.
    pub fn parse(text: &str) -> Result<TargetUri, UriError> {
        if let Some(c) = text
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || " <>\"".contains(*c))
        {
            return Err(UriError::Character(c));
        }
        let (scheme, rest) = text.split_once(':').ok_or(UriError::Scheme)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "sip" => false,
            "sips" => true,
            _ => return Err(UriError::Scheme),
        };
        if rest.contains('?') {
            return Err(UriError::Headers);
        }
        let (user, host_params) = match rest.rsplit_once('@') {
            Some((user, hp)) => (Some(parse_user(user)?), hp),
            None => (None, rest),
        };
        let mut parts = host_params.split(';');
        let (host, port) = parse_host_port(parts.next().unwrap_or_default())?;
        let mut uri = TargetUri {
            secure,
            user,
            host,
            port,
            transport: None,
            user_phone: false,
        };
        let mut seen: Vec<String> = Vec::new();
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(UriError::DuplicateParameter(name));
            }
            match (name.as_str(), value.to_ascii_lowercase().as_str()) {
                ("transport", "udp") => uri.transport = Some(UriTransport::Udp),
                ("transport", "tcp") => uri.transport = Some(UriTransport::Tcp),
                ("transport", "tls") => uri.transport = Some(UriTransport::Tls),
                ("user", "phone") => uri.user_phone = true,
                _ => return Err(UriError::Parameter(param.chars().take(32).collect())),
            }
            seen.push(name);
        }
        Ok(uri)
    }

    /// The same URI with another user part (a number written the way a
    /// trunk wants it).
    pub fn with_user(&self, user: &str) -> Result<TargetUri, UriError> {
        Ok(TargetUri {
            user: Some(parse_user(user)?),
            ..self.clone()
        })
    }

    /// Whether `user` may stand as a SIP user part (RFC 3261 `user`
    /// characters, escapes checked, at most 128 bytes).
    pub fn valid_user(user: &str) -> Result<(), UriError> {
        parse_user(user).map(|_| ())
    }

    /// `sip:+<number>@<host>`: a phone number sent to a trunk.
    pub fn phone(number: &str, host: UriHost, port: Option<u16>) -> Result<TargetUri, UriError> {
        if number.is_empty() || number.len() > 15 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UriError::User("is not a phone number"));
        }
        Ok(TargetUri {
            secure: false,
            user: Some(format!("+{number}")),
            host,
            port,
            transport: None,
            user_phone: false,
        })
    }

    /// The user part as written (escapes kept).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The user part read as a phone number: the digits when it is digits
    /// only once a leading `+` and visual separators (`-`, `.`, `(`, `)`)
    /// are taken out and `%XX` escapes are decoded; none otherwise.
    pub fn user_digits(&self) -> Option<String> {
        let user = unescape(self.user.as_deref()?)?;
        let user = user.strip_prefix('+').unwrap_or(&user);
        let digits: String = user
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect();
        let digits = digits
            .strip_prefix("00")
            .map(str::to_string)
            .unwrap_or(digits);
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
    }

    /// The host.
    pub fn host(&self) -> &UriHost {
        &self.host
    }

    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The socket address when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            UriHost::Ip(ip) => Some(SocketAddr::new(ip, self.port.unwrap_or(5060))),
            UriHost::Name(_) => None,
        }
    }
}

impl fmt::Display for UriHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriHost::Name(name) => f.write_str(name),
            UriHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            UriHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for TargetUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        match self.transport {
            Some(UriTransport::Udp) => f.write_str(";transport=udp")?,
            Some(UriTransport::Tcp) => f.write_str(";transport=tcp")?,
            Some(UriTransport::Tls) => f.write_str(";transport=tls")?,
            None => {}
        }
        if self.user_phone {
            f.write_str(";user=phone")?;
        }
        Ok(())
    }
}

/// RFC 3261 `user`: unreserved / escaped / user-unreserved, without `;`
/// and `?` (which would start parameters or headers in our own requests).
fn parse_user(user: &str) -> Result<String, UriError> {
    if user.is_empty() {
        return Err(UriError::User("is empty"));
    }
    if user.len() > MAX_USER {
        return Err(UriError::User("is longer than 128 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,/%".contains(c);
    if let Some(c) = user.chars().find(|c| !allowed(*c)) {
        return Err(UriError::Character(c));
    }
    let decoded = unescape(user).ok_or(UriError::User("has a bad %-escape"))?;
    if decoded.chars().any(|c| c.is_control() || c == ' ') {
        return Err(UriError::User(
            "hides a control character or space in an escape",
        ));
    }
    Ok(user.to_string())
}

/// Decodes `%XX` escapes; none when one is malformed or the result is not UTF-8.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_host_port(text: &str) -> Result<(UriHost, Option<u16>), UriError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or(UriError::Host)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| UriError::Host)?;
        (UriHost::Ip(IpAddr::V6(ip)), after)
    } else {
        let (host, after) = match text.find(':') {
            Some(at) => (&text[..at], &text[at..]),
            None => (text, ""),
        };
        (parse_host(host)?, after)
    };
    let port = match port.strip_prefix(':') {
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(UriError::Port),
            Ok(p) => Some(p),
        },
        None if port.is_empty() => None,
        None => return Err(UriError::Host),
    };
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<UriHost, UriError> {
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(UriHost::Ip(IpAddr::V4(ip)));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST {
        return Err(UriError::Host);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let labels: Vec<&str> = host.split('.').collect();
    // A name whose last label is all digits would be a mistyped IPv4 address.
    let numeric_tld = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !labels.iter().all(|l| label_ok(l)) || numeric_tld {
        return Err(UriError::Host);
    }
    Ok(UriHost::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_parse_and_print_canonically() {
        for (text, printed) in [
            ("sip:alice@example.com", "sip:alice@example.com"),
            ("SIP:Bob@Example.COM:5070", "sip:Bob@example.com:5070"),
            (
                "sip:bob@127.0.0.1:5080;transport=TCP",
                "sip:bob@127.0.0.1:5080;transport=tcp",
            ),
            (
                "sip:+442071234567@[::1]:5060;user=phone",
                "sip:+442071234567@[::1]:5060;user=phone",
            ),
            ("sips:carol@sip.example.org", "sips:carol@sip.example.org"),
            (
                "sip:bob%40gmail.com@gw.example",
                "sip:bob%40gmail.com@gw.example",
            ),
            ("sip:gw.example", "sip:gw.example"),
        ] {
            let uri = TargetUri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(uri.to_string(), printed);
            assert_eq!(TargetUri::parse(printed).as_ref(), Ok(&uri));
        }
    }

    #[test]
    fn injections_are_refused() {
        let long = format!("sip:{}@example.com", "a".repeat(1000));
        for text in [
            "sip:x;y=z>;tag=forged@example.com",
            "sip:x@example.com;tag=forged",
            "sip:x@example.com>;tag=1",
            "sip:a b@example.com",
            "sip:a@exa mple.com",
            "sip:a\u{2028}@example.com",
            "sip:a\r\nVia: x@example.com",
            "sip:112@10.0.0.1?X-Injected=1&Subject=hello",
            "sip:a@example.com;transport=udp;transport=tcp",
            "sip:a@example.com;maddr=10.0.0.1",
            "sip:a@example.com;lr",
            "sip:a%0d%0a@example.com",
            "sip:a%zz@example.com",
            "sip:\"a\"@example.com",
            "sip:a@example.com:0",
            "sip:a@example.com:99999",
            "sip:a@-bad-.com",
            "sip:a@1.2.3.999",
            "sip:a@",
            "sip:@example.com",
            "tel:+442071234567",
            "sip:ü@example.com",
            &long,
        ] {
            assert!(TargetUri::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn user_parts_read_as_numbers() {
        let digits = |t: &str| TargetUri::parse(t).ok().and_then(|u| u.user_digits());
        assert_eq!(digits("sip:112@trunk.example").as_deref(), Some("112"));
        assert_eq!(
            digits("sip:+44-20-7123-4567@h.example").as_deref(),
            Some("442071234567")
        );
        assert_eq!(digits("sip:%31%31%32@h.example").as_deref(), Some("112"));
        assert_eq!(digits("sip:00491511@h.example").as_deref(), Some("491511"));
        assert_eq!(digits("sip:alice@h.example"), None);
        let phone = TargetUri::phone(
            "4915112345678",
            UriHost::Name("t.example".into()),
            Some(5060),
        );
        assert_eq!(
            phone.map(|u| u.to_string()),
            Ok("sip:+4915112345678@t.example:5060".into())
        );
    }
}
