//! Where a leg is rung: phone numbers through a provider the router picks,
//! `sip:` URIs directly, IM addresses through the configured gateway.

use std::net::SocketAddr;

use crate::billing::policy::Policy;
use crate::plugin::types::{Error, Leg, Scheme, WrongState};
use crate::sip::{TargetUri, UriHost};

/// How to reach one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A phone number (digits, country code first): routed through providers, paid.
    Phone(String),
    /// A SIP URI called directly, free.
    Direct(TargetUri),
}

/// Why a leg has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The scheme has no gateway configured.
    #[error("no gateway for {0}: legs")]
    Unreachable(String),
    /// The address does not make a SIP URI.
    #[error("{0}")]
    BadAddress(String),
    /// The user part of a `sip:` leg is a number the policy refuses
    /// (emergency, denied or premium-rate).
    #[error("{0}")]
    NumberRefused(String),
    /// The host of a `sip:` leg may not be called directly.
    #[error("{0}")]
    HostRefused(String),
}

impl TargetError {
    /// What to tell the user who asked for `leg` with `command` when the
    /// leg is refused: the number policy's refusal, or the reason for a
    /// refused host or address. None when the leg is unreachable (its
    /// failure is told when it is dialled).
    pub fn refusal(self, leg: &Leg, command: &str) -> Option<Error> {
        match self {
            TargetError::Unreachable(_) => None,
            TargetError::NumberRefused(_) => Some(Error::NumberRefused(leg.clone())),
            TargetError::HostRefused(why) | TargetError::BadAddress(why) => {
                tracing::info!(%why, "sip: leg refused");
                Some(Error::WrongState(WrongState {
                    command: command.into(),
                    state: why,
                }))
            }
        }
    }
}

/// Which hosts `sip:` legs may reach (`[sessions] sip_legs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SipLegs {
    /// Any host, loopback and private ones included (labs, tests, the demo).
    Any,
    /// Public hosts only: no loopback, private, link-local, unspecified,
    /// multicast or shared (CGNAT) address, and no `localhost`, `.local`,
    /// `.internal`, `.lan` or `.home.arpa` name.
    #[default]
    PublicOnly,
    /// No `sip:` legs at all.
    Off,
}

/// What a `sip:` leg may not reach, whatever `sip_legs` says: the
/// configured providers, the gateways and our own SIP addresses. A call to
/// a number goes through a phone leg, which is routed and billed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipLegRules {
    /// Which hosts are allowed at all.
    pub mode: SipLegs,
    /// Hosts (with their port, 5060 when none is written) that are ours or
    /// our trunks'.
    pub refused: Vec<(UriHost, u16)>,
    /// The number policy applied to user parts that are numbers.
    pub policy: Policy,
}

impl SipLegRules {
    /// Rules for `mode` that refuse every provider, gateway and own address in `refused`.
    pub fn new(mode: SipLegs, refused: Vec<(UriHost, u16)>, policy: Policy) -> SipLegRules {
        SipLegRules {
            mode,
            refused,
            policy,
        }
    }

    /// Adds a socket address to the refused hosts.
    pub fn refuse_addr(&mut self, addr: SocketAddr) {
        self.refused.push((UriHost::Ip(addr.ip()), addr.port()));
    }

    /// Checks a `sip:` leg's URI against the rules.
    pub fn check(&self, uri: &TargetUri) -> Result<(), TargetError> {
        if self.mode == SipLegs::Off {
            return Err(TargetError::HostRefused(
                "sip: legs are turned off on this service".into(),
            ));
        }
        if let Some(digits) = uri.user_digits()
            && let Err(refusal) = self.policy.check(&digits)
            && !matches!(refusal, crate::billing::policy::Refusal::NotANumber { .. })
        {
            return Err(TargetError::NumberRefused(refusal.to_string()));
        }
        let port = uri.port().unwrap_or(5060);
        let ours = self.refused.iter().any(|(host, p)| {
            host == uri.host() && (*p == port || self.mode == SipLegs::PublicOnly)
        });
        if ours {
            return Err(TargetError::HostRefused(format!(
                "sip: legs may not go to this service's own trunks or addresses ({}); to call a number, use a phone leg, which is billed",
                uri.host()
            )));
        }
        if self.mode == SipLegs::PublicOnly && !public(uri.host()) {
            return Err(TargetError::HostRefused(format!(
                "sip: legs may only reach public hosts, and {} is not one",
                uri.host()
            )));
        }
        Ok(())
    }
}

/// Whether a host is a public one (see [`SipLegs::PublicOnly`]).
fn public(host: &UriHost) -> bool {
    match host {
        UriHost::Ip(ip) => crate::sip::is_public_ip(*ip),
        UriHost::Name(name) => {
            let name = name.as_str();
            !(name == "localhost"
                || [".localhost", ".local", ".internal", ".lan", ".home.arpa"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix))
                || !name.contains('.'))
        }
    }
}

pub use crate::plugin::{role_name, scheme_name};

/// The SIP URI a gateway template gives for `user`; the template must hold
/// `{user}` and make a SIP URI.
pub fn gateway_uri(template: &str, user: &str) -> Result<TargetUri, TargetError> {
    if !template.contains("{user}") {
        return Err(TargetError::BadAddress(
            "the template must contain {user}".into(),
        ));
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
    {
        return Err(TargetError::BadAddress(format!(
            "{user:?} cannot be put in a SIP URI"
        )));
    }
    let uri = template.replace("{user}", user);
    TargetUri::parse(&uri).map_err(|e| TargetError::BadAddress(format!("{uri:?}: {e}")))
}

/// Where `leg` is rung, given the gateway templates and the rules for
/// `sip:` legs. A `sip:` leg is parsed strictly and checked against `rules`.
pub fn resolve(
    leg: &Leg,
    gateways: &std::collections::BTreeMap<String, String>,
    rules: &SipLegRules,
) -> Result<Target, TargetError> {
    match &leg.scheme {
        Scheme::Phone => Ok(Target::Phone(leg.address.clone())),
        Scheme::Sip => {
            let text = format!("sip:{}", leg.address);
            let uri = TargetUri::parse(&text).map_err(|e| {
                TargetError::BadAddress(format!(
                    "{:?} is not a SIP address: {e}",
                    text.chars().take(80).collect::<String>()
                ))
            })?;
            rules.check(&uri)?;
            Ok(Target::Direct(uri))
        }
        other => {
            let name = scheme_name(other);
            let template = gateways
                .get(name)
                .ok_or_else(|| TargetError::Unreachable(name.to_string()))?;
            // The gateway is told the IM address in the user part; `@` must be escaped there.
            let user = leg.address.replace('@', "%40");
            Ok(Target::Direct(gateway_uri(template, &user)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn leg(scheme: Scheme, address: &str) -> Leg {
        Leg {
            scheme,
            address: address.into(),
        }
    }

    #[test]
    fn schemes_resolve() {
        let mut gateways = BTreeMap::new();
        gateways.insert("gtalk".to_string(), "sip:{user}@127.0.0.1:5090".to_string());
        let any = SipLegRules::new(SipLegs::Any, Vec::new(), Policy::default());
        let uri = |t: &str| TargetUri::parse(t).expect("uri");
        assert_eq!(
            resolve(&leg(Scheme::Phone, "442071234567"), &gateways, &any),
            Ok(Target::Phone("442071234567".into()))
        );
        assert_eq!(
            resolve(&leg(Scheme::Sip, "alice@127.0.0.1:5080"), &gateways, &any),
            Ok(Target::Direct(uri("sip:alice@127.0.0.1:5080")))
        );
        assert_eq!(
            resolve(&leg(Scheme::Gtalk, "bob@gmail.com"), &gateways, &any),
            Ok(Target::Direct(uri("sip:bob%40gmail.com@127.0.0.1:5090")))
        );
        assert_eq!(
            resolve(&leg(Scheme::Msn, "carol@live.com"), &gateways, &any),
            Err(TargetError::Unreachable("msn".into()))
        );
        assert!(gateway_uri("sip:gw.example", "x").is_err());
        assert!(gateway_uri("sip:{user}@127.0.0.1", "a b").is_err());
    }

    #[test]
    fn sip_legs_keep_to_the_rules() {
        let trunk: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
        let mut rules = SipLegRules::new(SipLegs::Any, Vec::new(), Policy::default());
        rules.refuse_addr(trunk);
        let gateways = BTreeMap::new();
        let sip = |a: &str, rules: &SipLegRules| resolve(&leg(Scheme::Sip, a), &gateways, rules);
        assert!(matches!(
            sip("112@203.0.113.9", &rules),
            Err(TargetError::NumberRefused(_))
        ));
        assert!(matches!(
            sip("%2B44999@198.51.100.1", &rules),
            Err(TargetError::NumberRefused(_))
        ));
        assert!(matches!(
            sip("+4420712345@127.0.0.1:5070", &rules),
            Err(TargetError::HostRefused(_))
        ));
        assert!(
            sip("alice@127.0.0.1:5080", &rules).is_ok(),
            "another port on loopback, in any mode"
        );
        assert!(matches!(
            sip("x@h.example?X-Injected=1", &rules),
            Err(TargetError::BadAddress(_))
        ));
        assert!(matches!(
            sip("x;y=z>;tag=forged@h.example", &rules),
            Err(TargetError::BadAddress(_))
        ));

        let public = SipLegRules {
            mode: SipLegs::PublicOnly,
            ..rules.clone()
        };
        for host in [
            "alice@127.0.0.1:5080",
            "a@10.1.2.3",
            "a@192.168.1.1",
            "a@[::1]",
            "a@[fd00::1]",
            "a@localhost",
            "a@printer.local",
            "a@100.64.0.1",
            "a@intranet",
        ] {
            assert!(
                matches!(sip(host, &public), Err(TargetError::HostRefused(_))),
                "{host}"
            );
        }
        assert!(sip("alice@sip.example.com", &public).is_ok());
        assert!(matches!(
            sip("alice@127.0.0.1:5999", &public),
            Err(TargetError::HostRefused(_))
        ));
        let off = SipLegRules {
            mode: SipLegs::Off,
            ..rules
        };
        assert!(matches!(
            sip("alice@sip.example.com", &off),
            Err(TargetError::HostRefused(_))
        ));
    }
}
