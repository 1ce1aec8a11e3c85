//! The text of the messages the endpoint sends: requests in (or starting) a
//! call's dialog, CANCEL and the ACK of a failure, and responses. Every
//! value comes from a typed field of the call or a parsed message.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::super::message::{self, ALLOW, Message, NameAddr, SipUri, StartLine, Transport, ip_of};
use super::call::{Call, CallState};
use super::types::CallId;
use super::{Dest, Endpoint};

impl Endpoint {
    /// `addr` as a SIP host:port (IPv6 in brackets).
    pub(super) fn host_port(addr: SocketAddr) -> String {
        match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    /// What listener `local` is advertised as (Via sent-by, Contact, our
    /// From URI): the external address if one stands for it, else itself.
    pub(super) fn advertised(&self, local: SocketAddr) -> String {
        match self.config.external_for(local) {
            Some(external) => format!(
                "{}:{}",
                external.host,
                external.port.unwrap_or(local.port())
            ),
            None => Self::host_port(local),
        }
    }

    /// The host part of [`Endpoint::advertised`] (for Call-IDs).
    pub(super) fn advertised_host(&self, local: SocketAddr) -> String {
        match self.config.external_for(local) {
            Some(external) => external.host.to_string(),
            None => local.ip().to_string(),
        }
    }

    /// The host of [`Endpoint::advertised`] as a URI writes it (IPv6 in
    /// brackets).
    pub(super) fn uri_host(&self, local: SocketAddr) -> String {
        match self.config.external_for(local) {
            Some(external) => external.host.to_string(),
            None => super::super::UriHost::Ip(local.ip()).to_string(),
        }
    }

    /// Our Contact for `local` over `transport`.
    pub(super) fn contact(&self, local: SocketAddr, transport: Transport) -> String {
        let suffix = if transport == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        format!(
            "<sip:{}@{}{}>",
            self.config.user,
            self.advertised(local),
            suffix
        )
    }

    /// Where in-dialog requests go: the first loose route, else the remote target.
    pub(super) fn dialog_dest(&self, call: &Call) -> Dest {
        let first = call
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r, "Route").ok())
            .map(|n| n.uri);
        let target = first.or_else(|| call.remote_target.clone());
        target
            .and_then(|t| SipUri::parse(&t).ok())
            .and_then(|u| uri_dest(&u, call.dest.transport))
            .map(|d| Dest {
                transport: call.dest.transport,
                addr: d.addr,
            })
            .unwrap_or(call.dest)
    }

    /// [`Endpoint::dialog_dest`] of call `id`.
    pub(super) fn dialog_dest_of(&self, id: CallId) -> Option<Dest> {
        self.calls.get(&id).map(|call| self.dialog_dest(call))
    }

    /// Builds a request within (or starting) the call's dialog.
    pub(super) fn build_request(
        &self,
        id: CallId,
        method: rsip::Method,
        branch: &str,
        cseq: Option<u32>,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let call = self.calls.get(&id)?;
        let in_dialog = call.remote_tag.is_some()
            && !matches!(
                (method, &call.state),
                (rsip::Method::Invite, CallState::Inviting(_))
            );
        let dest = if in_dialog {
            self.dialog_dest(call)
        } else {
            call.dest
        };
        let local = self.local(dest.transport, dest.addr)?;
        let request_uri = if in_dialog {
            call.remote_target
                .clone()
                .unwrap_or_else(|| call.target.clone())
        } else {
            call.target.clone()
        };
        let uri = SipUri::parse(&request_uri).ok()?;
        let to = match (&call.remote_tag, in_dialog) {
            (Some(tag), true) => format!("<{}>;tag={tag}", call.remote_uri),
            _ => format!("<{}>", call.remote_uri),
        };
        let display = match &call.local_display {
            Some(name) => format!("\"{name}\" "),
            None => String::new(),
        };
        let mut text = String::with_capacity(512 + body.len());
        let _ = write!(
            text,
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: {display}<{}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            dest.transport,
            self.advertised(local),
            call.local_uri,
            call.local_tag,
            call.call_id,
            cseq.unwrap_or(call.cseq),
        );
        if in_dialog {
            for route in &call.route_set {
                let _ = write!(text, "Route: {route}\r\n");
            }
        } else if let Some(route) = &call.initial_route {
            let _ = write!(text, "Route: {route}\r\n");
        }
        if matches!(method, rsip::Method::Invite) {
            let _ = write!(
                text,
                "Contact: {}\r\nAllow: {ALLOW}\r\n",
                self.contact(local, dest.transport)
            );
            if let Some(user) = &call.asserted {
                let _ = write!(
                    text,
                    "P-Asserted-Identity: <sip:{user}@{}>\r\n",
                    self.uri_host(local)
                );
            }
        }
        for (name, value) in extra {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        let _ = write!(text, "User-Agent: {}\r\n", self.config.user_agent);
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(text, "Content-Length: {}\r\n\r\n", body.len());
        let mut out = text.into_bytes();
        out.extend_from_slice(body);
        Some(out)
    }

    /// Builds a response echoing the request's Via (with received/rport),
    /// From, To (with `to_tag` when the request's To has none and the
    /// response is not a 100), Call-ID and CSeq.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn response(
        &self,
        request: &Message,
        from: SocketAddr,
        status: u16,
        reason: &str,
        to_tag: Option<String>,
        extra: &[(String, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut text = format!("SIP/2.0 {status} {reason}\r\n");
        for (i, via) in request.vias.iter().enumerate() {
            if i == 0 {
                let mut top = via.clone();
                let sent_by_ip = ip_of(&request.via.host);
                if sent_by_ip != Some(from.ip()) {
                    let _ = write!(top, ";received={}", from.ip());
                }
                if request.via.rport {
                    // Replace the bare rport with the source port (RFC 3581 §4).
                    top = top
                        .split(';')
                        .map(|p| {
                            if p.trim().eq_ignore_ascii_case("rport") {
                                format!("rport={}", from.port())
                            } else {
                                p.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(";");
                }
                let _ = write!(text, "Via: {top}\r\n");
            } else {
                let _ = write!(text, "Via: {via}\r\n");
            }
        }
        for v in request.header_values("Record-Route") {
            let _ = write!(text, "Record-Route: {v}\r\n");
        }
        let _ = write!(
            text,
            "From: {}\r\n",
            request.header("From").unwrap_or_default()
        );
        let to = request.header("To").unwrap_or_default();
        match (&request.to.tag, status > 100, to_tag) {
            (None, true, Some(tag)) => {
                let _ = write!(text, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(text, "To: {to}\r\n");
            }
        }
        let _ = write!(
            text,
            "Call-ID: {}\r\nCSeq: {} {}\r\n",
            request.call_id, request.cseq, request.cseq_method
        );
        for (name, value) in extra {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        if (status == 200 || status == 405) && !extra.iter().any(|(n, _)| n == "Allow") {
            let _ = write!(text, "Allow: {ALLOW}\r\n");
        }
        let _ = write!(
            text,
            "Server: {}\r\nContent-Length: {}\r\n\r\n",
            self.config.user_agent,
            body.len()
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// The CANCEL of an INVITE we sent (RFC 3261 §9.1): its Request-URI, top
/// Via, From, To, Call-ID, Route and CSeq number; and the INVITE's branch.
pub(super) fn cancel_for(invite: &[u8]) -> Option<(Vec<u8>, String)> {
    let parsed = message::parse(invite, usize::MAX).ok()?;
    let StartLine::Request { uri, .. } = &parsed.start else {
        return None;
    };
    let mut text = format!("CANCEL {uri} SIP/2.0\r\n");
    let _ = write!(
        text,
        "Via: {}\r\n",
        parsed.vias.first().map(String::as_str).unwrap_or_default()
    );
    for name in ["From", "To", "Call-ID", "Route"] {
        for v in parsed.header_values(name) {
            let _ = write!(text, "{name}: {v}\r\n");
        }
    }
    let _ = write!(
        text,
        "CSeq: {} CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        parsed.cseq
    );
    Some((text.into_bytes(), parsed.via.branch))
}

/// Where a URI points: its host must be an IP address (no DNS here).
pub(super) fn uri_dest(uri: &SipUri, default_transport: Transport) -> Option<Dest> {
    let addr = uri.socket_addr()?;
    Some(Dest {
        transport: uri.transport().unwrap_or(default_transport),
        addr,
    })
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's
/// Request-URI, top Via, From, Call-ID and Route; the response's To.
pub(super) fn ack_for_failure(invite: &[u8], response: &Message) -> Option<Vec<u8>> {
    let parsed = message::parse(invite, usize::MAX).ok()?;
    let StartLine::Request { uri, .. } = &parsed.start else {
        return None;
    };
    let mut text = format!("ACK {uri} SIP/2.0\r\nVia: {}\r\n", parsed.vias.first()?);
    let _ = write!(text, "From: {}\r\n", parsed.header("From")?);
    let _ = write!(text, "To: {}\r\n", response.header("To")?);
    let _ = write!(
        text,
        "Call-ID: {}\r\nCSeq: {} ACK\r\nMax-Forwards: 70\r\n",
        parsed.call_id, parsed.cseq
    );
    for route in parsed.header_values("Route") {
        let _ = write!(text, "Route: {route}\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Some(text.into_bytes())
}
