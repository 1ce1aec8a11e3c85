//! The TOML configuration file and its validation.
//!
//! Each section belongs to the module that reads it: `[xmpp]` (the bot's
//! account), `[sip]` (listen addresses, timers, providers with their
//! credentials and rate sheets), `[media]` (the RTP port range and jitter
//! buffer bounds), `[billing]` (the database, fraud controls, statistics
//! window), `[sessions]`, `[plugins]` and `[web]` (the pages and admin
//! API). Every key has a default, so an empty file is a valid configuration
//! (with no chat and no web pages); `switchboard.example.toml` shows all of
//! them.
//!
//! ```toml
//! [xmpp]
//! jid = "callback@example.org"
//! password = "secret"
//! server = "xmpp.example.org:5222"       # optional: instead of the SRV lookup
//! allow_plaintext = false                # true only for tests on loopback
//! rate_limit = { burst = 10, per_minute = 30 }
//! max_reply_chars = 2000
//! outbox = 1000
//!
//! [billing]
//! database = "sqlite://switchboard.db"   # or postgres://user@db-host/switchboard
//! host_id = "host-a"                     # unique per host sharing a database
//! currency = "USD"
//! emergency_numbers = ["110"]            # refused besides 112, 911, 999
//! denied_prefixes = ["1900", "44909"]
//! credit_warning_secs = 60
//! progress_interval_secs = 5
//! stats = { secs = 3600, attempts = 500, min_samples = 10 }
//!
//! [media]
//! address = "0.0.0.0"            # RTP sockets bind here
//! external_address = "203.0.113.7"  # SDP offers name it (needed with a wildcard)
//! rtp_ports = [20000, 29999]     # each leg takes an even port and the next
//! jitter_min_ms = 20
//! jitter_max_ms = 200
//!
//! [sip]
//! udp = ["0.0.0.0:5060", "[::]:5060"]
//! tcp = ["0.0.0.0:5060"]
//! external_address = "sip.example.org"  # Via, Contact, From (needed with a wildcard)
//! options_interval_secs = 30
//! timers = { t1_ms = 500, t2_ms = 4000, t4_ms = 5000 }
//!
//! [[sip.providers]]
//! name = "PROXICOM"
//! address = "192.0.2.10:5060"
//! transport = "udp"
//! username = "switchboard"
//! password = "secret"
//!
//! [web]
//! listen = "127.0.0.1:8080"
//! admin_token = "change-me-to-a-long-random-string"
//! ```

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use crate::billing;
use crate::media::MediaConfig;
use crate::media::jitter::JitterConfig;
use crate::sip;

/// Everything a Switchboard host is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SIP signalling: listeners, timers, providers.
    pub sip: sip::Config,
    /// Billing: the database, fraud controls, credit warnings, statistics.
    pub billing: billing::Config,
    /// The XMPP bot's account; none: no XMPP front end.
    pub xmpp: Option<crate::chat::xmpp::XmppConfig>,
    /// Media: where RTP ports come from, jitter buffer bounds.
    pub media: MediaSection,
    /// Sessions: limits per user, ring timeout, IM gateways.
    pub sessions: crate::session::SessionConfig,
    /// Plugins: the directory watched for new versions.
    pub plugins: PluginsSection,
    /// The web pages and admin API; none: no web front end.
    pub web: Option<crate::web::WebConfig>,
}

/// The `[plugins]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsSection {
    /// A directory watched for `parser.wasm`, `router.wasm` and
    /// `replies.wasm`; each new file is checked and swapped in while calls
    /// are up. None: the built-in plugins only.
    pub dir: Option<std::path::PathBuf>,
}

/// The `[media]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// The address leg sockets bind to, and that SDP offers advertise
    /// unless `external_address` is set.
    pub address: IpAddr,
    /// The address SDP offers give instead (behind NAT, the public one).
    /// Needed when `address` is a wildcard.
    pub external_address: Option<IpAddr>,
    /// First and last port of the RTP range (RTP on even ports, RTCP on the
    /// next odd one).
    pub rtp_ports: [u16; 2],
    /// Smallest jitter buffer delay, in milliseconds.
    pub jitter_min_ms: u64,
    /// Largest jitter buffer delay, in milliseconds.
    pub jitter_max_ms: u64,
    /// Pin the mixer thread to this CPU (none: the scheduler decides).
    pub cpu: Option<usize>,
    /// A leg that sends neither RTP nor RTCP this long is ended
    /// (`media-timeout`): the far end vanished without a BYE.
    pub rtp_timeout_secs: u64,
    /// The same while the leg is on hold (it may send nothing for long).
    pub hold_timeout_secs: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            external_address: None,
            rtp_ports: [20000, 29999],
            jitter_min_ms: 20,
            jitter_max_ms: 200,
            cpu: None,
            rtp_timeout_secs: 30,
            hold_timeout_secs: 3600,
        }
    }
}

impl MediaSection {
    /// The media engine's configuration from this section.
    pub fn engine_config(&self) -> MediaConfig {
        MediaConfig {
            address: self.address,
            external_address: self.external_address,
            ports: (self.rtp_ports[0], self.rtp_ports[1]),
            jitter: JitterConfig {
                min_delay: Duration::from_millis(self.jitter_min_ms),
                max_delay: Duration::from_millis(self.jitter_max_ms),
            },
            cpu: self.cpu,
            rtp_timeout: Duration::from_secs(self.rtp_timeout_secs),
            hold_timeout: Duration::from_secs(self.hold_timeout_secs),
            ..MediaConfig::default()
        }
    }
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
    /// Valid TOML that does not make sense, with the line of the key.
    #[error("invalid configuration, line {line}: {message}")]
    InvalidAt {
        /// The line (1-based) of the key or section that is wrong.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file. Relative paths in it (rate
    /// sheets, the plugin directory) are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut config.sip.providers {
            if let Some(rates) = &mut p.rates
                && rates.is_relative()
            {
                *rates = base.join(&*rates);
            }
        }
        if let Some(dir) = &mut config.plugins.dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        Ok(config)
    }

    /// Reads and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid(message) => match line_of(text, &message) {
                Some(line) => ConfigError::InvalidAt { line, message },
                None => ConfigError::Invalid(message),
            },
            other => other,
        })?;
        Ok(config)
    }

    /// The configured SIP providers as the billing database records them.
    pub fn provider_records(&self) -> Vec<billing::ProviderRecord> {
        self.sip
            .providers
            .iter()
            .map(|p| billing::ProviderRecord {
                name: p.name.clone(),
                target: match p.transport {
                    Some(t) => format!(
                        "sip:{};transport={}",
                        p.address,
                        t.to_string().to_ascii_lowercase()
                    ),
                    None => format!("sip:{}", p.address),
                },
                username: p.username.clone(),
                password: p.password.clone(),
                enabled: true,
            })
            .collect()
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
        if sip.session_expires_secs != 0 && !(90..=86_400).contains(&sip.session_expires_secs) {
            return invalid(format!(
                "sip.session_expires_secs = {} is neither 0 (off) nor between 90 and 86400",
                sip.session_expires_secs
            ));
        }
        if !(1..=60).contains(&sip.failover_secs) {
            return invalid(format!(
                "sip.failover_secs = {} is not between 1 and 60",
                sip.failover_secs
            ));
        }
        if let Some(server) = sip
            .dns
            .iter()
            .find(|s| s.port() == 0 || s.ip().is_unspecified())
        {
            return invalid(format!(
                "sip.dns: {server} is not a DNS server's address (an IP address and a port, such as 127.0.0.1:53)"
            ));
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
        if let Err(e) = sip.check_addresses() {
            return invalid(e.to_string());
        }
        if let Some(external) = &sip.external_address
            && let crate::sip::UriHost::Ip(ip) = external.host
            && ip.is_unspecified()
        {
            return invalid(format!(
                "sip.external_address = \"{external}\" is itself a wildcard: give the address peers reach this host at"
            ));
        }
        let media = &self.media;
        if media.address.is_unspecified() && media.external_address.is_none() {
            return invalid(format!(
                "media.address = {} is a wildcard, which SDP cannot give: set media.external_address to the address peers send RTP to (behind NAT, the public one)",
                media.address
            ));
        }
        if media.external_address.is_some_and(|ip| ip.is_unspecified()) {
            return invalid(
                "media.external_address is itself a wildcard: give the address peers send RTP to"
                    .into(),
            );
        }
        if !(10..=1000).contains(&media.jitter_min_ms)
            || !(media.jitter_min_ms..=2000).contains(&media.jitter_max_ms)
        {
            return invalid(format!(
                "media: need 10 <= jitter_min_ms <= jitter_max_ms <= 2000 (got {} and {})",
                media.jitter_min_ms, media.jitter_max_ms
            ));
        }
        if !(5..=3600).contains(&media.rtp_timeout_secs) {
            return invalid(format!(
                "media.rtp_timeout_secs = {} is not between 5 and 3600",
                media.rtp_timeout_secs
            ));
        }
        if !(media.rtp_timeout_secs..=86_400).contains(&media.hold_timeout_secs) {
            return invalid(format!(
                "media.hold_timeout_secs = {} is not between rtp_timeout_secs and 86400",
                media.hold_timeout_secs
            ));
        }
        if let Err(e) = media.engine_config().validate() {
            return invalid(format!("media: {e}"));
        }
        if let Err(e) = self.billing.validate() {
            return invalid(e);
        }
        if let Err(e) = self.sessions.validate() {
            return invalid(e);
        }
        if let Some(web) = &self.web
            && let Err(e) = web.validate()
        {
            return invalid(e);
        }
        if let Some(x) = &self.xmpp {
            if !x.jid.contains('@') || x.password.is_empty() {
                return invalid("xmpp: give jid (name@domain) and password".into());
            }
            if x.max_reply_chars < 100 {
                return invalid("xmpp.max_reply_chars is below 100".into());
            }
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
            if let Err(e) = p.number_format.check() {
                return invalid(format!("sip.providers.{}: {e}", p.name));
            }
            for (key, user) in [
                ("from_user", &p.from_user),
                ("asserted_identity", &p.asserted_identity),
            ] {
                if let Some(user) = user
                    && let Err(e) = sip::TargetUri::valid_user(user)
                {
                    return invalid(format!(
                        "sip.providers.{}: {key} {user:?} is not a SIP user part ({e})",
                        p.name
                    ));
                }
            }
            if let Some(name) = &p.display_name
                && (name.is_empty()
                    || name.chars().count() > 64
                    || name
                        .chars()
                        .any(|c| c.is_control() || c == '"' || c == '\\'))
            {
                return invalid(format!(
                    "sip.providers.{}: display_name {name:?} must be 1 to 64 characters without quotes, backslashes or controls",
                    p.name
                ));
            }
            if p.max_calls == Some(0) {
                return invalid(format!(
                    "sip.providers.{}: max_calls = 0 would never place a call (leave it out for no limit)",
                    p.name
                ));
            }
            if p.register && !(1..=86_400).contains(&p.expires) {
                return invalid(format!(
                    "sip.providers.{}: expires = {} is not between 1 and 86400",
                    p.name, p.expires
                ));
            }
            if p.register && p.account().is_none() {
                return invalid(format!(
                    "sip.providers.{}: register = true needs the account: set username (or auth_username)",
                    p.name
                ));
            }
            let mut codecs = HashSet::new();
            if !p.codecs.iter().all(|c| codecs.insert(*c)) {
                return invalid(format!(
                    "sip.providers.{}: codecs names a codec twice",
                    p.name
                ));
            }
            // An address (not a name) must be reachable from a listener
            // of its transport and family; a name is checked when located.
            for hop in p.hops() {
                let Some(addr) = hop.socket_addr() else {
                    continue;
                };
                let transport = p.transport.unwrap_or(sip::Transport::Udp);
                let listens = match transport {
                    sip::Transport::Udp => &sip.udp,
                    sip::Transport::Tcp => &sip.tcp,
                };
                if !listens.iter().any(|l| l.is_ipv4() == addr.is_ipv4()) {
                    return invalid(format!(
                        "sip.providers.{}: no {transport} listener for its address family ({hop})",
                        p.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The line of the key a validation message starts with (`sip.timers: …`,
/// `sessions.max_per_user = 0 …`, `sip.providers.NAME: …`), if the text
/// has it: the key's own line, else its section's header.
fn line_of(text: &str, message: &str) -> Option<usize> {
    let key: String = message
        .chars()
        .take_while(|c| !matches!(c, ':' | ' ' | '='))
        .collect();
    let mut parts: Vec<&str> = key.split('.').collect();
    // `sip.providers.NAME`: the provider's `name = "NAME"` line.
    if parts.len() >= 3 && parts[..2] == ["sip", "providers"] {
        let quoted = format!("\"{}\"", parts[2]);
        return text
            .lines()
            .position(|l| {
                let l = l.trim();
                l.starts_with("name") && l.contains(&quoted)
            })
            .map(|i| i + 1);
    }
    let mut table = String::new();
    let mut header = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            if table == key && header.is_none() {
                header = Some(i + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let full = if table.is_empty() {
            name.to_string()
        } else {
            format!("{table}.{name}")
        };
        if full == key {
            return Some(i + 1);
        }
    }
    while header.is_none() && parts.len() > 1 {
        parts.pop();
        let section = parts.join(".");
        header = text
            .lines()
            .position(|l| {
                l.trim().trim_matches(|c| c == '[' || c == ']').trim() == section
                    && l.trim().starts_with('[')
            })
            .map(|i| i + 1);
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let c = Config::parse(include_str!("../../switchboard.example.toml")).expect("valid");
        assert_eq!(c.sip.providers.len(), 2);
        assert_eq!(c.sessions.gateways.len(), 2);
        assert!(c.xmpp.is_some() && c.plugins.dir.is_some());
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("switchboard.toml");
        std::fs::write(
            &path,
            "[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:5080\"\nrates = \"rates/a.csv\"\n[plugins]\ndir = \"/abs/plugins\"\n",
        )
        .expect("write");
        let c = Config::load(&path).expect("valid");
        assert_eq!(
            c.sip.providers[0].rates.as_deref(),
            Some(dir.path().join("rates/a.csv").as_path())
        );
        assert_eq!(c.plugins.dir.as_deref(), Some(Path::new("/abs/plugins")));
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let e = Config::parse("[sip]\nudp = [\"127.0.0.1:0\"]\n\n[[sip.providers]]\nname = \"A\"\naddress = \"127.0.0.1:1\"\nusername = \"u\"\n")
            .expect_err("no password")
            .to_string();
        assert!(e.contains("line 5: sip.providers.A"), "{e}");
    }

    /// A wildcard listen or media address is refused unless an external
    /// address stands for it; the error says which key to set.
    #[test]
    fn wildcard_addresses_need_an_external_address() {
        let e = Config::parse("[sip]\nudp = [\"0.0.0.0:5060\"]\n")
            .expect_err("a wildcard SIP bind alone")
            .to_string();
        assert!(
            e.contains("0.0.0.0:5060") && e.contains("sip.external_address"),
            "{e}"
        );
        let e = Config::parse("[sip]\ntcp = [\"[::]:5060\"]\nexternal_address = \"203.0.113.7\"\n")
            .expect_err("an IPv4 external address does not stand for an IPv6 listener")
            .to_string();
        assert!(e.contains("sip.tcp") && e.contains("[::]:5060"), "{e}");
        let e = Config::parse("[media]\naddress = \"0.0.0.0\"\n")
            .expect_err("a wildcard media bind alone")
            .to_string();
        assert!(e.contains("media.external_address"), "{e}");
        let e = Config::parse("[sip]\nexternal_address = \"0.0.0.0\"\n")
            .expect_err("a wildcard as the external address")
            .to_string();
        assert!(e.contains("itself a wildcard"), "{e}");
        let e = Config::parse("[sip]\nexternal_address = \"bad host!\"\n")
            .expect_err("not a host")
            .to_string();
        assert!(e.contains("external_address"), "{e}");

        let c = Config::parse(
            "[sip]\nudp = [\"0.0.0.0:5060\", \"[::]:5060\"]\nexternal_address = \"sip.example.org:5070\"\n\
             [media]\naddress = \"0.0.0.0\"\nexternal_address = \"203.0.113.7\"\n",
        )
        .expect("a name stands for both families");
        assert_eq!(
            c.sip.external_address.map(|a| a.to_string()).as_deref(),
            Some("sip.example.org:5070")
        );
        assert_eq!(c.media.external_address, "203.0.113.7".parse().ok());
    }

    /// A trunk profile's keys are read, and a bad one is refused naming the
    /// provider's line.
    #[test]
    fn trunk_profiles() {
        let c = Config::parse(
            "[sip]\nudp = [\"127.0.0.1:0\"]\n\n[[sip.providers]]\nname = \"T\"\naddress = \"127.0.0.1:5080\"\n\
             from_user = \"+15551230000\"\ndisplay_name = \"Acme\"\nasserted_identity = \"+15551230000\"\n\
             number_format = { plus = false, strip = 2, prefix = \"0\" }\noutbound_proxy = \"127.0.0.1:5090\"\n\
             max_calls = 30\ncodecs = [\"pcma\", \"pcmu\"]\n",
        )
        .expect("valid");
        let p = &c.sip.providers[0];
        assert_eq!(
            p.number_format.apply("442071234567").as_deref(),
            Some("02071234567")
        );
        assert_eq!(p.max_calls, Some(30));
        assert_eq!(p.codecs, vec![sip::Codec::Pcma, sip::Codec::Pcmu]);
        for (key, expected) in [
            (
                "number_format = { prefix = \"0x\" }",
                "number_format.prefix",
            ),
            ("number_format = { strip = 20 }", "number_format.strip"),
            ("number_format = { plus = 1 }", "line 7"),
            ("from_user = \"a b\"", "from_user"),
            ("display_name = \"say \\\"hi\\\"\"", "display_name"),
            ("max_calls = 0", "max_calls = 0"),
            (
                "codecs = [\"pcma\", \"pcma\"]",
                "codecs names a codec twice",
            ),
            ("codecs = [\"g729\"]", "line 7"),
        ] {
            let e = Config::parse(&format!(
                "[sip]\nudp = [\"127.0.0.1:0\"]\n\n[[sip.providers]]\nname = \"T\"\naddress = \"127.0.0.1:5080\"\n{key}\n"
            ))
            .expect_err(key)
            .to_string();
            assert!(e.contains(expected), "{key}: {e}");
            assert!(
                e.contains("line 5") || e.contains("line 7"),
                "{key}: the line: {e}"
            );
        }
    }

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
            (Some(sip::Transport::Tcp), Some("alice"), true)
        );
    }

    #[test]
    fn media_section() {
        let c = Config::parse(
            "[media]\naddress = \"::1\"\nrtp_ports = [30000, 30999]\njitter_max_ms = 120",
        )
        .expect("valid");
        let e = c.media.engine_config();
        assert_eq!(e.address, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(e.ports, (30000, 30999));
        assert_eq!(e.jitter.min_delay, Duration::from_millis(20));
        assert_eq!(e.jitter.max_delay, Duration::from_millis(120));
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
                "[[sip.providers]]\nname = \"A\"\naddress = \"sip.carrier.example:99999\"",
                "the port is not a number from 1 to 65535",
            ),
            (
                "[[sip.providers]]\nname = \"A\"\naddress = \"sip carrier\"",
                "the character ' ' is not allowed",
            ),
            ("[sip]\nfailover_secs = 0", "sip.failover_secs = 0"),
            ("[sip]\ndns = [\"0.0.0.0:53\"]", "sip.dns: 0.0.0.0:53"),
            (
                "[sip]\ndns = [\"resolver\"]",
                "invalid socket address syntax",
            ),
            ("[media]\nrtp_ports = [5000, 5000]", "port range 5000-5000"),
            (
                "[media]\njitter_min_ms = 300\njitter_max_ms = 100",
                "jitter_min_ms <= jitter_max_ms",
            ),
            ("[media]\nrtp_port = [1, 2]", "unknown field `rtp_port`"),
            ("[billing]\ncurrency = \"usd\"", "not an ISO 4217 code"),
            (
                "[billing]\ndenied_prefixes = [\"19x\"]",
                "\"19x\" is not digits",
            ),
            (
                "[billing]\nstats = { secs = 0, attempts = 0 }",
                "not neither",
            ),
        ];
        for (text, expected) in cases {
            let e = Config::parse(text).expect_err(text).to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
