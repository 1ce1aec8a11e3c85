//! The whole host assembled from one [`Config`]: billing (with each
//! provider's rate sheet), SIP, the mixer and the session manager, on the
//! current tokio runtime. `switchboard run` and `switchboard demo` both
//! start it; they differ only in the chat front end in front of it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::billing::{self, Billing, BillingError};
use crate::config::Config;
use crate::media::{MediaEngine, MediaError};
use crate::plugin::PluginHost;
use crate::session::{Notice, SessionManager};
use crate::sip::{SipError, SipService};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The billing database could not be opened or prepared.
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// A provider's rate sheet could not be read or was refused.
    #[error("sip.providers.{provider}.rates = {path}: {reason}")]
    Rates {
        /// The provider.
        provider: String,
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The SIP listeners could not be opened.
    #[error(transparent)]
    Sip(#[from] SipError),
    /// The mixer could not start.
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// A running host.
pub struct Service {
    /// Sessions: give it to the chat front end.
    pub manager: Arc<SessionManager>,
    /// What sessions tell their owners, for the chat front end to send.
    pub notices: mpsc::UnboundedReceiver<Notice>,
    /// Billing, for the CLI and the web pages.
    pub billing: Arc<Billing>,
    /// Signalling.
    pub sip: SipService,
}

impl Service {
    /// Opens billing as this host (taking its lease, then settling what a
    /// crash left open), loads the providers'
    /// rate sheets, starts SIP and the mixer, and the session manager.
    pub async fn start(config: &Config, plugins: Arc<PluginHost>) -> Result<Service, ServiceError> {
        let (billing, recovered) =
            Billing::open_host(&config.billing, Some(&config.provider_records())).await?;
        if !recovered.is_empty() {
            tracing::warn!(
                legs = recovered.len(),
                "settled legs left open by an earlier run of this host"
            );
        }
        load_rate_sheets(config, &billing).await?;
        let billing = Arc::new(billing);
        let sip = SipService::start(config.sip.clone()).await?;
        let (media, media_events) = MediaEngine::start(config.media.engine_config())?;
        let (manager, notices) = SessionManager::start(
            sip.clone(),
            Arc::new(media),
            media_events,
            Arc::clone(&billing),
            plugins,
            config.sessions.clone(),
            &config.sip.providers,
            config.billing.currency.clone(),
            config.billing.host_id.clone(),
        );
        Ok(Service {
            manager,
            notices,
            billing,
            sip,
        })
    }

    /// Applies what can change while calls are up from `new` (the file
    /// read again), `old` being what runs: each provider's rate sheet, the
    /// fraud lists, the session limits and gateways. Calls that are up go
    /// on. What needs a restart (listeners, the database, providers) is
    /// named in the report and left as it was. The plugin directory is the
    /// caller's (it owns the watcher).
    pub async fn reload(&self, old: &Config, new: &Config) -> Result<ReloadReport, ServiceError> {
        let mut report = ReloadReport::default();
        let rates = load_rate_sheets(new, &self.billing).await?;
        report.applied.push(format!("rate sheets ({rates} rates)"));
        if (&old.billing.emergency_numbers, &old.billing.denied_prefixes)
            != (&new.billing.emergency_numbers, &new.billing.denied_prefixes)
        {
            self.billing
                .set_policy(&new.billing.emergency_numbers, &new.billing.denied_prefixes);
            report
                .applied
                .push("billing.emergency_numbers and denied_prefixes".into());
        }
        if old.sessions != new.sessions {
            self.manager.set_config(new.sessions.clone());
            report.applied.push("[sessions] limits and gateways".into());
        }
        let mut billing = new.billing.clone();
        billing
            .emergency_numbers
            .clone_from(&old.billing.emergency_numbers);
        billing
            .denied_prefixes
            .clone_from(&old.billing.denied_prefixes);
        for (name, changed) in [
            (
                "[sip] (listeners, timers, providers: not applied live yet)",
                old.sip != new.sip,
            ),
            (
                "[billing] database, host_id or clocks",
                old.billing != billing,
            ),
            ("[media]", old.media != new.media),
            ("[xmpp]", old.xmpp != new.xmpp),
            ("[web]", old.web != new.web),
        ] {
            if changed {
                report.restart_needed.push(name.to_string());
            }
        }
        Ok(report)
    }
}

/// What a configuration reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// What was applied while calls went on.
    pub applied: Vec<String>,
    /// What changed in the file but needs a restart to apply.
    pub restart_needed: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "applied: {}", self.applied.join(", "))?;
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; changed but needs a restart: {}",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// What the admin API asks of the running process (`switchboard run`
/// answers; the demo does not take these).
#[derive(Debug)]
pub enum Control {
    /// Re-read the configuration file, as SIGHUP does.
    Reload(tokio::sync::oneshot::Sender<Result<ReloadReport, String>>),
    /// Drain and exit, as SIGUSR1 does; the answer says whether this
    /// started the drain (false: one was under way).
    Drain(tokio::sync::oneshot::Sender<bool>),
}

/// Imports every provider's rate sheet (replacing its rates) and reloads
/// the rate table. Every sheet is read and checked before any is written:
/// one bad sheet and nothing changes. Returns how many rates were read.
async fn load_rate_sheets(config: &Config, billing: &Billing) -> Result<usize, ServiceError> {
    let mut sheets = Vec::new();
    for p in &config.sip.providers {
        let Some(path) = &p.rates else { continue };
        let rates_error = |reason: String| ServiceError::Rates {
            provider: p.name.clone(),
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| rates_error(e.to_string()))?;
        // Only this provider is named as existing: rows for another are refused.
        let rows =
            billing::import::read_rates(file, std::slice::from_ref(&p.name)).map_err(|errors| {
                rates_error(
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        sheets.push((&p.name, rows));
    }
    let mut total = 0;
    for (provider, rows) in sheets {
        billing.store().write_rates(&rows, true).await?;
        tracing::info!(%provider, rates = rows.len(), "rate sheet loaded");
        total += rows.len();
    }
    billing.reload_rates().await?;
    Ok(total)
}
