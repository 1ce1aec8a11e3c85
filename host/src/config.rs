//! The TOML configuration file and its validation.
//!
//! Sections appear as the modules that own them land; today that is `[sip]`
//! (listen addresses, timers, providers with their credentials). Every key
//! has a default, so an empty file is a valid configuration.
//!
//! ```toml
//! [sip]
//! udp = ["0.0.0.0:5060", "[::]:5060"]
//! tcp = ["0.0.0.0:5060"]
//! options_interval_secs = 30
//! timers = { t1_ms = 500, t2_ms = 4000, t4_ms = 5000 }
//!
//! [[sip.providers]]
//! name = "PROXICOM"
//! address = "192.0.2.10:5060"
//! transport = "udp"
//! username = "switchboard"
//! password = "secret"
//! ```

use std::collections::HashSet;
use std::path::Path;

use crate::sip;

/// Everything a Switchboard host is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SIP signalling: listeners, timers, providers.
    pub sip: sip::Config,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key that does not exist, or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Syntax(#[from] toml::de::Error),
    /// Valid TOML that does not make sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Reads and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let sip = &self.sip;
        if sip.udp.is_empty() && sip.tcp.is_empty() {
            return invalid("sip: no udp or tcp listen address".into());
        }
        let t = sip.timers;
        if t.t1_ms == 0 || t.t1_ms > t.t2_ms {
            return invalid(format!(
                "sip.timers: need 0 < t1_ms <= t2_ms (got t1_ms = {}, t2_ms = {})",
                t.t1_ms, t.t2_ms
            ));
        }
        if t.t1_ms > 60_000 || t.t2_ms > 600_000 || t.t4_ms > 600_000 {
            return invalid(
                "sip.timers: t1_ms is at most 60000, t2_ms and t4_ms at most 600000".into(),
            );
        }
        if !(1..=86_400).contains(&sip.options_interval_secs) {
            return invalid(format!(
                "sip.options_interval_secs = {} is not between 1 and 86400",
                sip.options_interval_secs
            ));
        }
        if sip.max_message_bytes < 1500 {
            return invalid(format!(
                "sip.max_message_bytes = {} is below 1500",
                sip.max_message_bytes
            ));
        }
        let mut names = HashSet::new();
        for p in &sip.providers {
            if p.name.trim().is_empty() {
                return invalid(format!(
                    "sip.providers: a provider at {} has no name",
                    p.address
                ));
            }
            if !names.insert(p.name.as_str()) {
                return invalid(format!(
                    "sip.providers: the name {:?} is used twice",
                    p.name
                ));
            }
            if p.username.is_some() != p.password.is_some() {
                return invalid(format!(
                    "sip.providers.{}: give both username and password, or neither",
                    p.name
                ));
            }
            let listens = match p.transport {
                sip::Transport::Udp => &sip.udp,
                sip::Transport::Tcp => &sip.tcp,
            };
            if !listens.iter().any(|l| l.is_ipv4() == p.address.is_ipv4()) {
                return invalid(format!(
                    "sip.providers.{}: no {} listener for its address family ({})",
                    p.name, p.transport, p.address
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").expect("valid"), Config::default());
    }

    #[test]
    fn providers_with_credentials_and_timers() {
        let c = Config::parse(
            r#"
            [sip]
            udp = ["127.0.0.1:5070", "[::1]:5070"]
            tcp = ["127.0.0.1:5070"]
            timers = { t1_ms = 250, t2_ms = 4000, t4_ms = 5000 }
            [[sip.providers]]
            name = "PROXICOM"
            address = "127.0.0.1:5080"
            transport = "tcp"
            username = "alice"
            password = "s3cret"
            "#,
        )
        .expect("valid");
        assert_eq!(c.sip.timers.t1_ms, 250);
        let p = &c.sip.providers[0];
        assert_eq!(
            (p.transport, p.username.as_deref(), p.keepalive),
            (sip::Transport::Tcp, Some("alice"), true)
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[sip]\nudpp = []", "unknown field `udpp`"),
            ("[sip]\nudp = []", "no udp or tcp listen address"),
            (
                "[sip.timers]\nt1_ms = 5000\nt2_ms = 4000",
                "need 0 < t1_ms <= t2_ms",
            ),
            (
                "[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:1\"\n[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:2\"",
                "used twice",
            ),
            (
                "[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:1\"\nusername = \"u\"",
                "both username and password",
            ),
            (
                "[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:1\"\ntransport = \"tcp\"",
                "no TCP listener",
            ),
            (
                "[[sip.providers]]\nname = \"A\"\naddress = \"nowhere\"",
                "invalid socket address",
            ),
        ];
        for (text, expected) in cases {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
