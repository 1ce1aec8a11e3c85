//! Reading SIP messages off the wire into checked, typed values.
//!
//! rsip tokenises the start line, headers and URIs; this module first puts
//! the text into the shape rsip expects (unfolded header lines, long header
//! names instead of compact ones, the body cut to its Content-Length) and then
//! pulls out, once, everything the transaction and dialog layers key on: the
//! top Via with its branch, Call-ID, tags and CSeq. Code above this module
//! never re-checks those fields.
//!
//! URIs are read by [`SipUri`], not rsip: rsip 0.4 splits host and port at
//! the first colon, so it cannot read IPv6 references (`sip:a@[::1]:5060`).
//! rsip is handed the request line with a neutral URI for that reason.

use std::fmt;
use std::net::IpAddr;

use rsip::message::HasHeaders;

/// The prefix of every RFC 3261 branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The methods this stack implements, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

/// Messages larger than this are refused unless the configuration says otherwise.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Why a message could not be used. The text becomes the reason phrase of
/// the 400 response when one can be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Bigger than the configured limit.
    #[error("Message Too Large ({size} bytes, limit {limit})")]
    TooLarge {
        /// Size of the message as received.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No blank line ends the header section.
    #[error("Bad Request (no end of headers)")]
    NoEndOfHeaders,
    /// Something that is not text where text is required.
    #[error("Bad Request (header section is not UTF-8 text)")]
    NotText,
    /// A header line without a colon, or a header name with invalid characters.
    #[error("Bad Request (malformed header line)")]
    BadHeaderLine,
    /// A required header is missing.
    #[error("Bad Request (missing {0} header)")]
    Missing(&'static str),
    /// A header appears more than once where only one is allowed.
    #[error("Bad Request (more than one {0} header)")]
    Duplicate(&'static str),
    /// A header's value could not be read.
    #[error("Bad Request (malformed {0} header)")]
    Malformed(&'static str),
    /// The CSeq method differs from the request method.
    #[error("Bad Request (CSeq method does not match the request method)")]
    CSeqMismatch,
    /// Content-Length says more bytes than arrived.
    #[error("Bad Request (body shorter than Content-Length)")]
    ShortBody,
    /// The start line (request line or status line) could not be read.
    #[error("Bad Request (malformed start line)")]
    StartLine,
    /// A version other than SIP/2.0.
    #[error("SIP Version Not Supported")]
    Version,
    /// A Request-URI scheme other than `sip` or `sips`.
    #[error("Unsupported URI Scheme ({0})")]
    UnsupportedScheme(String),
    /// A well-formed request with a method we do not implement.
    #[error("Not Implemented (method {0})")]
    UnknownMethod(String),
}

impl MessageError {
    /// The status code to answer a request that failed this way with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 513,
            Self::Version => 505,
            Self::UnknownMethod(_) => 501,
            Self::UnsupportedScheme(_) => 416,
            _ => 400,
        }
    }
}

/// The transport a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams, each one message; retransmissions are ours to do.
    Udp,
    /// A byte stream framed by Content-Length; reliable.
    Tcp,
}

impl Transport {
    /// Whether the transport itself retransmits (RFC 3261 §17: reliable transports
    /// switch off timers A, E and G and zero D, I, J, K).
    pub fn reliable(self) -> bool {
        matches!(self, Self::Tcp)
    }

    /// The name used in Via headers.
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_name())
    }
}

/// A parsed `Via` header value (the topmost one is what matters to us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, ... as written.
    pub transport: String,
    /// Host part of sent-by.
    pub host: String,
    /// Port part of sent-by, if given.
    pub port: Option<u16>,
    /// The branch parameter (transaction id); empty when an RFC 2543 peer
    /// sent none.
    pub branch: String,
    /// Whether `rport` was asked for (RFC 3581).
    pub rport: bool,
    /// A `received` parameter, if present.
    pub received: Option<String>,
    /// An `maddr` parameter, if present.
    pub maddr: Option<String>,
}

impl Via {
    /// Whether the branch is an RFC 3261 transaction id: the `z9hG4bK`
    /// cookie and something after it (a bare cookie is no unique id).
    pub fn rfc3261_branch(&self) -> bool {
        self.branch.len() > MAGIC_COOKIE.len() && self.branch.starts_with(MAGIC_COOKIE)
    }

    /// Reads one Via value (`SIP/2.0/UDP host:port;branch=...;rport`).
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        let bad = MessageError::Malformed("Via");
        // sent-protocol allows whitespace around its slashes: `SIP / 2.0 / UDP`.
        let mut parts = value.trim().splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad);
        };
        let (name, version) = (name.trim(), version.trim());
        let (transport, rest) = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .ok_or(bad.clone())?;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(bad);
        }
        let mut params = rest.split(';');
        let sent_by = params.next().map(str::trim).ok_or(bad.clone())?;
        let (host, port) = split_host_port(sent_by).ok_or(bad.clone())?;
        let mut via = Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            branch: String::new(),
            rport: false,
            received: None,
            maddr: None,
        };
        for param in params {
            let (key, val) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (param.trim(), None),
            };
            if key.eq_ignore_ascii_case("branch") {
                via.branch = val
                    .filter(|v| !v.is_empty())
                    .ok_or(bad.clone())?
                    .to_string();
            } else if key.eq_ignore_ascii_case("rport") {
                via.rport = true;
            } else if key.eq_ignore_ascii_case("received") {
                via.received = val.map(str::to_string);
            } else if key.eq_ignore_ascii_case("maddr") {
                via.maddr = val.map(str::to_string);
            }
        }
        // No branch at all is an RFC 2543 peer: its requests are matched
        // the old way (RFC 3261 §17.2.3), so `branch` stays empty.
        Ok(via)
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.trim().is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.trim().parse().ok()?)),
        None => (text, None),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if host.is_empty() || !host.chars().all(valid) {
        return None;
    }
    Some((host.to_string(), port))
}

/// A name-addr or addr-spec header value (From, To, Contact, Route, Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI between the angle brackets (or the whole addr-spec).
    pub uri: String,
    /// The `tag` parameter, if any.
    pub tag: Option<String>,
}

impl NameAddr {
    /// Reads one value; parameters after `>` belong to the header, not the URI.
    pub fn parse(value: &str, header: &'static str) -> Result<Self, MessageError> {
        let value = value.trim();
        let (uri, params) = if let Some(open) = find_unquoted(value, '<') {
            let after = &value[open + 1..];
            let close = after.find('>').ok_or(MessageError::Malformed(header))?;
            (&after[..close], &after[close + 1..])
        } else {
            // addr-spec: parameters after the first ';' are header parameters.
            match value.split_once(';') {
                Some((u, p)) => (u, p),
                None => (value, ""),
            }
        };
        let uri = uri.trim();
        if uri.is_empty() || !uri.contains(':') {
            return Err(MessageError::Malformed(header));
        }
        let tag = params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("tag")
                .then(|| v.trim().to_string())
        });
        Ok(NameAddr {
            uri: uri.to_string(),
            tag: tag.filter(|t| !t.is_empty()),
        })
    }
}

fn find_unquoted(text: &str, wanted: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == wanted && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`.
    pub scheme: String,
    /// The user part, if any (a phone number for trunks).
    pub user: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// URI parameters (`transport`, `lr`, ...).
    pub params: Vec<(String, Option<String>)>,
    text: String,
}

impl SipUri {
    /// Reads a URI.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        let bad = || MessageError::Malformed("URI");
        let text = text.trim();
        let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            let valid = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if valid {
                return Err(MessageError::UnsupportedScheme(
                    scheme.chars().take(16).collect(),
                ));
            }
            return Err(bad());
        }
        let rest = rest.split('?').next().unwrap_or_default();
        let (user, host_part) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        if user
            .as_deref()
            .is_some_and(|u| u.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(bad());
        }
        let mut parts = host_part.split(';');
        let (host, port) = split_host_port(parts.next().unwrap_or_default()).ok_or_else(bad)?;
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
            .collect();
        Ok(SipUri {
            scheme: scheme.to_ascii_lowercase(),
            user,
            host,
            port,
            params,
            text: text.to_string(),
        })
    }

    /// The `transport` parameter, if it names one we speak.
    pub fn transport(&self) -> Option<Transport> {
        let (_, value) = self.params.iter().find(|(k, _)| k == "transport")?;
        match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("udp") => Some(Transport::Udp),
            Some("tcp") => Some(Transport::Tcp),
            _ => None,
        }
    }

    /// Whether the URI has the `lr` (loose routing) parameter.
    pub fn loose_route(&self) -> bool {
        self.params.iter().any(|(k, _)| k == "lr")
    }

    /// The socket address, when the host is an IP address (we do no DNS).
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip = ip_of(&self.host)?;
        Some(std::net::SocketAddr::new(ip, self.port.unwrap_or(5060)))
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request with its method and Request-URI.
    Request {
        /// The method, as rsip reads it.
        method: rsip::Method,
        /// The Request-URI.
        uri: SipUri,
    },
    /// A response with its status code and reason phrase.
    Response {
        /// The status code (100–699).
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// A message that passed every check, with the fields the stack keys on.
#[derive(Debug, Clone)]
pub struct Message {
    /// Request or response line.
    pub start: StartLine,
    /// All headers, as rsip holds them (long names, unfolded).
    pub headers: rsip::Headers,
    /// The body, exactly Content-Length bytes.
    pub body: Vec<u8>,
    /// The topmost Via.
    pub via: Via,
    /// Every Via value, topmost first, as written.
    pub vias: Vec<String>,
    /// The Call-ID.
    pub call_id: String,
    /// From header (with its tag).
    pub from: NameAddr,
    /// To header (with its tag, if any).
    pub to: NameAddr,
    /// CSeq sequence number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: rsip::Method,
}

impl Message {
    /// The method of a request, or the CSeq method of a response.
    pub fn method(&self) -> rsip::Method {
        match &self.start {
            StartLine::Request { method, .. } => *method,
            StartLine::Response { .. } => self.cseq_method,
        }
    }

    /// The status code if this is a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// Values of every header with this (long, case-insensitive) name, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        self.headers.iter().filter_map(move |h| {
            let text = h.to_string();
            let (n, v) = text.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).next()
    }
}

/// What could be read of a request that failed the checks: enough, perhaps, to answer it.
#[derive(Debug, Clone)]
pub struct Unusable {
    /// What was wrong.
    pub error: MessageError,
    /// Whether the message looked like a request (responses are never answered).
    pub is_request: bool,
    /// The raw header lines a response echoes (Via, From, To, Call-ID, CSeq,
    /// those that were found), present only when there is a Via to send
    /// the response by.
    pub echo: Option<Vec<(String, String)>>,
}

const COMPACT: &[(&str, &str)] = &[
    ("v", "Via"),
    ("i", "Call-ID"),
    ("f", "From"),
    ("t", "To"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("k", "Supported"),
    ("s", "Subject"),
    ("e", "Content-Encoding"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("u", "Allow-Events"),
];

fn long_name(name: &str) -> &str {
    COMPACT
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map_or(name, |(_, long)| long)
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Reads one message. `limit` is the largest size accepted.
pub fn parse(bytes: &[u8], limit: usize) -> Result<Message, Unusable> {
    let unusable = |error, is_request, echo| Unusable {
        error,
        is_request,
        echo,
    };
    let looks_like_request = !bytes.starts_with(b"SIP/");
    if bytes.len() > limit {
        return Err(unusable(
            MessageError::TooLarge {
                size: bytes.len(),
                limit,
            },
            looks_like_request,
            None,
        ));
    }
    // Leading CRLFs are keep-alives or stray line ends (RFC 3261 §7.5).
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        return Err(unusable(
            MessageError::NoEndOfHeaders,
            looks_like_request,
            None,
        ));
    };
    let Ok(head) = std::str::from_utf8(&bytes[..head_end]) else {
        return Err(unusable(MessageError::NotText, looks_like_request, None));
    };
    let body_in = &bytes[head_end + 4..];

    // Unfold continuation lines and split into (name, value).
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut bad_line = false;
    // Unfold first: a header name may itself be followed by a folded line
    // holding the colon (RFC 4475 §3.1.1.1).
    let mut logical: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            match logical.last_mut() {
                Some(prev) => {
                    prev.push(' ');
                    prev.push_str(line.trim());
                }
                None => bad_line = true,
            }
            continue;
        }
        logical.push(line.to_string());
    }
    for line in &logical {
        match line.split_once(':') {
            Some((name, value)) if is_token(name.trim()) => {
                fields.push((long_name(name.trim()).to_string(), value.trim().to_string()))
            }
            _ => bad_line = true,
        }
    }
    let echo = {
        let wanted = ["Via", "From", "To", "Call-ID", "CSeq"];
        let picked: Vec<(String, String)> = fields
            .iter()
            .filter(|(n, _)| wanted.iter().any(|w| w.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        // A Via is what a response is routed by; the rest is echoed if present.
        let routable = picked.iter().any(|(n, _)| n.eq_ignore_ascii_case("Via"));
        routable.then_some(picked)
    };
    let fail = |error: MessageError| Err(unusable(error, looks_like_request, echo.clone()));
    if bad_line {
        return fail(MessageError::BadHeaderLine);
    }
    let version = if looks_like_request {
        first.rsplit(' ').next()
    } else {
        first.split(' ').next()
    };
    match version {
        Some("SIP/2.0") => {}
        Some(v) if v.starts_with("SIP/") => return fail(MessageError::Version),
        _ => return fail(MessageError::StartLine),
    }

    if looks_like_request {
        let method = first.split(' ').next().unwrap_or_default();
        if is_token(method) && method.parse::<rsip::Method>().is_err() {
            let shown: String = method.chars().take(32).collect();
            return fail(MessageError::UnknownMethod(shown));
        }
    }
    let single = |name: &'static str| -> Result<Option<&str>, MessageError> {
        let mut found = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(MessageError::Duplicate(name));
        }
        Ok(first)
    };
    let required = |name: &'static str| -> Result<&str, MessageError> {
        single(name)?.ok_or(MessageError::Missing(name))
    };
    let checked = (|| {
        let call_id = required("Call-ID")?.to_string();
        if call_id.is_empty() || call_id.contains(char::is_whitespace) {
            return Err(MessageError::Malformed("Call-ID"));
        }
        let from = NameAddr::parse(required("From")?, "From")?;
        let to = NameAddr::parse(required("To")?, "To")?;
        let (cseq, cseq_method) = {
            let raw = required("CSeq")?;
            let mut parts = raw.split_whitespace();
            let (Some(n), Some(m), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(MessageError::Malformed("CSeq"));
            };
            let n: u32 = n.parse().map_err(|_| MessageError::Malformed("CSeq"))?;
            if n >= 1 << 31 || !is_token(m) {
                return Err(MessageError::Malformed("CSeq"));
            }
            (
                n,
                m.parse::<rsip::Method>()
                    .map_err(|_| MessageError::Malformed("CSeq"))?,
            )
        };
        let vias: Vec<String> = fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Via"))
            .flat_map(|(_, v)| {
                split_list(v)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let via = Via::parse(vias.first().ok_or(MessageError::Missing("Via"))?)?;
        let length = match single("Content-Length")? {
            Some(raw) => raw
                .parse::<usize>()
                .map_err(|_| MessageError::Malformed("Content-Length"))?,
            // Stream transports require Content-Length; the framer enforces that.
            None => body_in.len(),
        };
        if length > body_in.len() {
            return Err(MessageError::ShortBody);
        }
        Ok((call_id, from, to, cseq, cseq_method, vias, via, length))
    })();
    let (call_id, from, to, cseq, cseq_method, vias, via, length) = match checked {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    // Give rsip the normalised text: start line, long-name headers, no body.
    let mut text = String::with_capacity(head.len() + 2);
    text.push_str(&first);
    text.push_str("\r\n");
    for (name, value) in &fields {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    let request_uri = if looks_like_request {
        let uri_text = first.split(' ').nth(1).unwrap_or_default();
        match SipUri::parse(uri_text) {
            Ok(u) => Some(u),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    if let Some(uri) = &request_uri {
        let neutral = first.replacen(&uri.to_string(), "sip:uri.invalid", 1);
        text.replace_range(..first.len(), &neutral);
    }
    let parsed = match rsip::SipMessage::try_from(text.as_str()) {
        Ok(m) => m,
        Err(_) => return fail(MessageError::StartLine),
    };
    let start = match &parsed {
        rsip::SipMessage::Request(r) => match request_uri {
            Some(uri) => StartLine::Request {
                method: r.method,
                uri,
            },
            None => return fail(MessageError::StartLine),
        },
        rsip::SipMessage::Response(r) => {
            let status: u16 = r.status_code.code();
            if !(100..=699).contains(&status) {
                return fail(MessageError::StartLine);
            }
            let reason = first.splitn(3, ' ').nth(2).unwrap_or_default().to_string();
            StartLine::Response { status, reason }
        }
    };
    if let StartLine::Request { method, .. } = &start {
        if !looks_like_request {
            return fail(MessageError::StartLine);
        }
        let acked_or_cancelled =
            matches!(method, rsip::Method::Ack | rsip::Method::Cancel) && cseq_method == *method;
        if *method != cseq_method && !acked_or_cancelled {
            return fail(MessageError::CSeqMismatch);
        }
    }
    Ok(Message {
        start,
        headers: parsed.headers().clone(),
        body: body_in[..length].to_vec(),
        via,
        vias,
        call_id,
        from,
        to,
        cseq,
        cseq_method,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes a response to a request that could not be parsed, echoing what it
/// could read. Returns `None` when too little was readable to answer.
pub fn error_response(unusable: &Unusable, server: &str) -> Option<Vec<u8>> {
    if !unusable.is_request {
        return None;
    }
    let echo = unusable.echo.as_ref()?;
    let mut out = format!("SIP/2.0 {} {}\r\n", unusable.error.status(), unusable.error);
    for (name, value) in echo {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let MessageError::UnknownMethod(_) = unusable.error {
        out.push_str(&format!("Allow: {ALLOW}\r\n"));
    }
    out.push_str(&format!("Server: {server}\r\nContent-Length: 0\r\n\r\n"));
    Some(out.into_bytes())
}

/// Turns a host string (from a Via or URI) into an IP address if it is one.
pub fn ip_of(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport\r\n\
        Max-Forwards: 70\r\n\
        f: <sip:alice@127.0.0.1>;tag=1\r\n\
        t: sip:bob@127.0.0.1\r\n\
        i: abc@host\r\n\
        CSeq: 1 INVITE\r\n\
        Subject: folded\r\n  header\r\n\
        l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn compact_folded_and_body_cut_to_length() {
        let m = parse(INVITE.as_bytes(), 4096).expect("valid");
        assert_eq!(m.via.branch, "z9hG4bKabc");
        assert!(m.via.rport);
        assert_eq!(m.via.port, Some(5070));
        assert_eq!(m.call_id, "abc@host");
        assert_eq!(m.from.tag.as_deref(), Some("1"));
        assert_eq!(m.to.tag, None);
        assert_eq!(m.cseq, 1);
        assert_eq!(m.body, b"body");
        assert_eq!(m.header("Subject").as_deref(), Some("folded header"));
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let no_call_id = INVITE.replace("i: abc@host\r\n", "");
        let e = parse(no_call_id.as_bytes(), 4096).expect_err("invalid");
        assert_eq!(e.error, MessageError::Missing("Call-ID"));
        // Still answerable: the Via says where to (RFC 4475 §3.1.2.10).
        let reply = error_response(&e, "test").expect("answerable without a Call-ID");
        let reply = String::from_utf8(reply).expect("text");
        assert!(
            reply.starts_with("SIP/2.0 400 Bad Request (missing Call-ID"),
            "{reply}"
        );
        assert!(
            reply.contains("\r\nVia: ") && !reply.contains("Call-ID:"),
            "{reply}"
        );
        let no_via = INVITE.replace(
            "v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport\r\n",
            "",
        );
        let e = parse(no_via.as_bytes(), 4096).expect_err("invalid");
        assert!(e.echo.is_none(), "nowhere to send an answer without a Via");
        let mismatch = INVITE.replace("1 INVITE", "1 BYE");
        let e = parse(mismatch.as_bytes(), 4096).expect_err("invalid");
        assert_eq!(e.error, MessageError::CSeqMismatch);
        let reply = error_response(&e, "test").expect("answerable");
        let reply = String::from_utf8(reply).expect("text");
        assert!(
            reply.starts_with("SIP/2.0 400 Bad Request (CSeq method"),
            "{reply}"
        );
        assert!(reply.contains("Call-ID: abc@host"));
        let e = parse(INVITE.as_bytes(), 100).expect_err("too big");
        assert_eq!(e.error.status(), 513);
    }

    #[test]
    fn uris_with_ipv6_params_and_users() {
        let u = SipUri::parse("sip:+4420;npdi@[::1]:5070;transport=TCP;lr").expect("valid");
        assert_eq!(u.user.as_deref(), Some("+4420;npdi"));
        assert_eq!(u.socket_addr(), Some("[::1]:5070".parse().expect("addr")));
        assert_eq!(u.transport(), Some(Transport::Tcp));
        assert!(u.loose_route());
        assert_eq!(u.to_string(), "sip:+4420;npdi@[::1]:5070;transport=TCP;lr");
        for bad in [
            "tel:+44",
            "sip:",
            "sip:@host",
            "sip:a b@host",
            "sip:host:port",
            "sip:[::1",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("[::1]:5060"),
            Some(("::1".into(), Some(5060)))
        );
        assert_eq!(
            split_host_port("example.com"),
            Some(("example.com".into(), None))
        );
        assert_eq!(split_host_port("a b:1"), None);
        assert_eq!(split_host_port("host:99999"), None);
    }

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v = split_list("<sip:a@x;lr>, \"B, C\" <sip:b@y>,<sip:c@z>");
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], "\"B, C\" <sip:b@y>");
    }
}
