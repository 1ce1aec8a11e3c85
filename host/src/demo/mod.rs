//! `switchboard demo`: the whole service on embedded defaults. Four
//! simulated providers named as in the seed (PROXICOM, PAKLINE, MKS,
//! AVANGARD) and an IM gateway run on loopback ([`far_end`]), with rates;
//! billing is a SQLite file; the built-in plugins answer; the demo user has
//! an account with credit; the chat is the console.

pub mod far_end;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::billing::Micros;
use crate::config::Config;
use crate::sip::Provider;
use far_end::FarEnd;

/// A demo provider: name, the tone its far end plays, rates (prefix, price
/// per minute in micros).
pub type DemoProvider = (&'static str, f32, &'static [(&'static str, i64)]);

/// The demo's providers.
pub const PROVIDERS: [DemoProvider; 4] = [
    (
        "PROXICOM",
        440.0,
        &[("44", 14_000), ("49", 13_500), ("1", 10_000), ("7", 30_000)],
    ),
    (
        "PAKLINE",
        550.0,
        &[("49", 12_040), ("92", 12_040), ("44", 15_900)],
    ),
    (
        "MKS",
        660.0,
        &[("7", 20_000), ("44", 16_000), ("49", 16_000)],
    ),
    (
        "AVANGARD",
        770.0,
        &[
            ("7", 19_000),
            ("44", 17_500),
            ("49", 17_500),
            ("92", 20_000),
        ],
    ),
];

/// Credit the demo account is topped up to when it runs low.
pub const DEMO_CREDIT: Micros = Micros(5_000_000);

/// The simulated far ends of a demo; dropping it stops them.
pub struct DemoNetwork {
    /// One per provider, in [`PROVIDERS`] order.
    pub providers: Vec<FarEnd>,
    /// The IM gateway (`gtalk:` and `xmpp:` legs).
    pub gateway: FarEnd,
}

impl DemoNetwork {
    /// Starts the far ends on 127.0.0.1; each rings for `ring` and answers.
    pub async fn start(ring: Duration) -> std::io::Result<DemoNetwork> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut providers = Vec::new();
        for (_, hz, _) in PROVIDERS {
            providers.push(FarEnd::start(ip, ring, hz).await?);
        }
        let gateway = FarEnd::start(ip, ring, 880.0).await?;
        Ok(DemoNetwork { providers, gateway })
    }

    /// The demo's configuration: SIP on a free loopback port, the
    /// providers and the gateway, billing in `database`.
    pub fn config(&self, database: &str) -> Config {
        let mut config = Config::default();
        config.sip.udp = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
        config.sip.providers = PROVIDERS
            .iter()
            .zip(&self.providers)
            .map(|((name, _, _), far)| Provider {
                name: (*name).to_string(),
                username: None,
                password: None,
                keepalive: true,
                rates: None,
                ..Provider::new(name, far.address)
            })
            .collect();
        config.billing.database = database.to_string();
        config.billing.host_id = "demo".into();
        config.billing.currency = "USD".into();
        // The demo's far ends are on loopback; its own providers stay
        // refused as sip: hosts all the same.
        config.sessions.sip_legs = crate::session::target::SipLegs::Any;
        for scheme in ["gtalk", "xmpp"] {
            config.sessions.gateways.insert(
                scheme.into(),
                format!("sip:{{user}}@{}", self.gateway.address),
            );
        }
        config
    }
}

/// The demo rate sheet (CSV) for [`crate::billing::Store::import_rates`].
pub fn rate_sheet() -> String {
    let mut csv = String::from("provider,prefix,price_per_minute\n");
    for (name, _, rates) in PROVIDERS {
        for (prefix, price) in rates {
            csv.push_str(&format!("{name},{prefix},{}\n", Micros(*price)));
        }
    }
    csv
}
