//! The SIP stack's settings: listeners, timers, identity and the trunks.

use std::net::SocketAddr;

use super::super::message::{self, Transport};
use super::super::sdp::Codec;
use super::super::transaction::Timers;
use super::super::{HostPort, SipError, UriHost};

/// A SIP trunk we send calls to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name used by routing and in replies (e.g. `PROXICOM`).
    pub name: String,
    /// Where its SIP service listens: an IP address, or a DNS name located
    /// by RFC 3263 (NAPTR, SRV, A/AAAA; with a port, A/AAAA only), with an
    /// optional port (`sip.carrier.example`, `192.0.2.10:5060`).
    pub address: HostPort,
    /// Transport to reach it; unset: what DNS says (NAPTR, then SRV), UDP
    /// for an IP address or a name without NAPTR and SRV records.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Digest username, if it challenges.
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password.
    #[serde(default)]
    pub password: Option<String>,
    /// Whether to send OPTIONS to it periodically to learn if it is up.
    #[serde(default = "yes")]
    pub keepalive: bool,
    /// Its rate sheet (CSV, see [`crate::billing::import`]), loaded into
    /// billing when the host starts; every row must name this provider.
    /// The SIP stack itself does not read it.
    #[serde(default)]
    pub rates: Option<std::path::PathBuf>,
    /// Caller ID: the user part of our From on calls through it (FreeSWITCH
    /// `from-user`); none: the caller's, else `[sip] user`.
    #[serde(default)]
    pub from_user: Option<String>,
    /// The display name in our From on calls through it.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A user (a number, as a rule) sent as `P-Asserted-Identity`
    /// (RFC 3325) on INVITEs through it.
    #[serde(default)]
    pub asserted_identity: Option<String>,
    /// How the called number is written in the Request-URI and To.
    #[serde(default)]
    pub number_format: NumberFormat,
    /// A proxy every request to it goes through first, named in a loose
    /// `Route` (FreeSWITCH `proxy`, Asterisk `outbound_proxy`).
    #[serde(default)]
    pub outbound_proxy: Option<HostPort>,
    /// The most calls at once through it (its channel limit). A trunk at
    /// its limit is not offered to the router. None: no limit.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// The codecs offered on calls through it, in order of preference
    /// (`["pcma", "pcmu"]`); empty: PCMU, then PCMA.
    #[serde(default)]
    pub codecs: Vec<Codec>,
    /// Register with it (REGISTER, RFC 3261 §10): for trunks that take
    /// calls only from a registered account. Until registered it counts
    /// as down.
    #[serde(default)]
    pub register: bool,
    /// Where to register (an address or a DNS name, as `address`);
    /// default: its `address`.
    #[serde(default)]
    pub registrar: Option<HostPort>,
    /// The registration lifetime asked for, in seconds (the registrar may
    /// grant less, or ask for more with 423).
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// The user of the registered address of record and of the digest
    /// answer; default: `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Answer only challenges of this realm; default: any.
    #[serde(default)]
    pub realm: Option<String>,
    /// The user part of the registered Contact; default: the AoR's user.
    #[serde(default)]
    pub contact_user: Option<String>,
}

fn default_expires() -> u32 {
    600
}

impl Provider {
    /// A provider `name` at `address` over UDP, with keepalives on and
    /// everything else unset (no credentials, no trunk profile).
    pub fn new(name: &str, address: SocketAddr) -> Provider {
        Provider::named(name, HostPort::from(address))
    }

    /// A provider `name` at `address` (a name or an address), over the
    /// transport DNS picks, otherwise as [`Provider::new`].
    pub fn named(name: &str, address: HostPort) -> Provider {
        Provider {
            name: name.to_string(),
            address,
            transport: None,
            username: None,
            password: None,
            keepalive: true,
            rates: None,
            from_user: None,
            display_name: None,
            asserted_identity: None,
            number_format: NumberFormat::default(),
            outbound_proxy: None,
            max_calls: None,
            codecs: Vec::new(),
            register: false,
            registrar: None,
            expires: default_expires(),
            auth_username: None,
            realm: None,
            contact_user: None,
        }
    }

    /// Every host requests to it may go to: its address, outbound proxy
    /// and registrar.
    pub fn hops(&self) -> impl Iterator<Item = &HostPort> {
        [
            Some(&self.address),
            self.outbound_proxy.as_ref(),
            self.registrar.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Where its registrations go: `registrar`, else `address`.
    pub fn registrar(&self) -> &HostPort {
        self.registrar.as_ref().unwrap_or(&self.address)
    }

    /// Where requests outside a dialog go first: `outbound_proxy`, else
    /// `address`.
    pub fn next_hop(&self) -> &HostPort {
        self.outbound_proxy.as_ref().unwrap_or(&self.address)
    }

    /// The user it registers as (and answers challenges for), if any.
    pub fn account(&self) -> Option<&str> {
        self.auth_username.as_deref().or(self.username.as_deref())
    }
}

/// How a trunk wants the called number written: the E.164 digits, less
/// `strip` leading digits, after `prefix`, with a `+` when `plus`.
/// `{ plus = false, strip = 2, prefix = "0" }` writes +44 20 7123 4567 as
/// `0207…` (national); the default writes `+442071234567`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumberFormat {
    /// Whether the number starts with `+`.
    pub plus: bool,
    /// Leading digits of the E.164 number to drop (a country code, say).
    pub strip: u8,
    /// Digits written before the rest (`0`, `00`, a tech prefix).
    pub prefix: String,
}

impl Default for NumberFormat {
    fn default() -> Self {
        NumberFormat {
            plus: true,
            strip: 0,
            prefix: String::new(),
        }
    }
}

impl NumberFormat {
    /// Why the rule cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !self.prefix.bytes().all(|b| b.is_ascii_digit()) || self.prefix.len() > 8 {
            return Err(format!(
                "number_format.prefix {:?} is not up to 8 digits",
                self.prefix
            ));
        }
        if self.strip > 14 {
            return Err(format!(
                "number_format.strip = {} would leave no number (at most 14)",
                self.strip
            ));
        }
        Ok(())
    }

    /// `digits` (E.164, no `+`) written this way; none when fewer than
    /// `strip` + 1 digits are left to write.
    pub fn apply(&self, digits: &str) -> Option<String> {
        let rest = digits
            .get(usize::from(self.strip)..)
            .filter(|r| !r.is_empty())?;
        let plus = if self.plus { "+" } else { "" };
        Some(format!("{plus}{}{rest}", self.prefix))
    }
}

fn yes() -> bool {
    true
}

/// Settings of the SIP stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP listen addresses (one per address family you need).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// What peers reach this host at: Via sent-by, Contact and our From
    /// URI carry it instead of the listen address (behind NAT, the public
    /// address or name; the port defaults to the listener's). An IP address
    /// applies to listeners of its family, a name to all. Needed with a
    /// wildcard listen address.
    pub external_address: Option<HostPort>,
    /// T1, T2, T4.
    pub timers: Timers,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// User part of our From and Contact URIs.
    pub user: String,
    /// User-Agent / Server header.
    pub user_agent: String,
    /// Seconds between OPTIONS to each provider.
    pub options_interval_secs: u64,
    /// The trunks.
    pub providers: Vec<Provider>,
    /// DNS servers for provider and leg names (`["127.0.0.1:5353"]`);
    /// empty: the system's (`/etc/resolv.conf`).
    pub dns: Vec<SocketAddr>,
    /// When a name leads to several servers (SRV, several addresses), how
    /// long an INVITE waits for any answer from one before trying the
    /// next (RFC 3263 §4.3). A server that answers 503, cannot be
    /// connected to or lets the transaction time out is left at once.
    pub failover_secs: u64,
    /// The session interval our INVITEs ask for (RFC 4028 `Session-Expires`;
    /// a trunk may pick a longer one, or ask us to refresh). 0: no session
    /// timers.
    pub session_expires_secs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: Vec::new(),
            external_address: None,
            timers: Timers::default(),
            max_message_bytes: message::DEFAULT_MAX_MESSAGE_BYTES,
            user: "switchboard".into(),
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).into(),
            options_interval_secs: 30,
            providers: Vec::new(),
            dns: Vec::new(),
            failover_secs: 4,
            session_expires_secs: 1800,
        }
    }
}

impl Config {
    /// The external address that stands for listener `local`, if any.
    pub fn external_for(&self, local: SocketAddr) -> Option<&HostPort> {
        let external = self.external_address.as_ref()?;
        match external.host {
            UriHost::Ip(ip) if ip.is_ipv4() != local.is_ipv4() => None,
            _ => Some(external),
        }
    }

    /// Every listen address with its transport's name (`udp`, `tcp`).
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, &SocketAddr)> {
        let udp = self.udp.iter().map(|a| ("udp", a));
        udp.chain(self.tcp.iter().map(|a| ("tcp", a)))
    }

    /// Refuses a wildcard listen address (`0.0.0.0`, `[::]`) with no
    /// external address to advertise in its place: it must never appear in
    /// Via, Contact or From.
    pub fn check_addresses(&self) -> Result<(), SipError> {
        for (transport, addr) in self.listeners() {
            if addr.ip().is_unspecified() && self.external_for(*addr).is_none() {
                return Err(SipError::Wildcard {
                    transport,
                    addr: *addr,
                });
            }
        }
        Ok(())
    }
}
