//! Where a leg is rung: phone numbers through a provider the router picks,
//! `sip:` URIs directly, IM addresses through the configured gateway.

use crate::plugin::types::{Leg, Scheme};
use crate::sip::message::SipUri;

/// How to reach one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A phone number (digits, country code first): routed through providers, paid.
    Phone(String),
    /// A SIP URI called directly, free.
    Direct(String),
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
}

/// The name of a leg's scheme as written before the colon.
pub fn scheme_name(scheme: &Scheme) -> &str {
    match scheme {
        Scheme::Phone => "phone",
        Scheme::Sip => "sip",
        Scheme::Gtalk => "gtalk",
        Scheme::Msn => "msn",
        Scheme::Yahoo => "yahoo",
        Scheme::Xmpp => "xmpp",
        Scheme::Other(name) => name,
    }
}

/// The SIP URI a gateway template gives for `user`; the template must hold
/// `{user}` and make a SIP URI.
pub fn gateway_uri(template: &str, user: &str) -> Result<String, TargetError> {
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
    SipUri::parse(&uri).map_err(|e| TargetError::BadAddress(format!("{uri:?}: {e}")))?;
    Ok(uri)
}

/// Where `leg` is rung, given the gateway templates.
pub fn resolve(
    leg: &Leg,
    gateways: &std::collections::BTreeMap<String, String>,
) -> Result<Target, TargetError> {
    match &leg.scheme {
        Scheme::Phone => Ok(Target::Phone(leg.address.clone())),
        Scheme::Sip => {
            let uri = format!("sip:{}", leg.address);
            SipUri::parse(&uri).map_err(|e| TargetError::BadAddress(format!("{uri:?}: {e}")))?;
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
        assert_eq!(
            resolve(&leg(Scheme::Phone, "442071234567"), &gateways),
            Ok(Target::Phone("442071234567".into()))
        );
        assert_eq!(
            resolve(&leg(Scheme::Sip, "alice@127.0.0.1:5080"), &gateways),
            Ok(Target::Direct("sip:alice@127.0.0.1:5080".into()))
        );
        assert_eq!(
            resolve(&leg(Scheme::Gtalk, "bob@gmail.com"), &gateways),
            Ok(Target::Direct("sip:bob%40gmail.com@127.0.0.1:5090".into()))
        );
        assert_eq!(
            resolve(&leg(Scheme::Msn, "carol@live.com"), &gateways),
            Err(TargetError::Unreachable("msn".into()))
        );
        assert!(gateway_uri("sip:gw.example", "x").is_err());
        assert!(gateway_uri("sip:{user}@127.0.0.1", "a b").is_err());
    }
}
