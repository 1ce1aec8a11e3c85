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
        for p in &config.sip.providers {
            let Some(path) = &p.rates else { continue };
            let rates_error = |reason: String| ServiceError::Rates {
                provider: p.name.clone(),
                path: path.display().to_string(),
                reason,
            };
            let file = std::fs::File::open(path).map_err(|e| rates_error(e.to_string()))?;
            // Only this provider is named as existing: rows for another are refused.
            let rows = billing::import::read_rates(file, std::slice::from_ref(&p.name)).map_err(
                |errors| {
                    rates_error(
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                },
            )?;
            billing.store().write_rates(&rows, true).await?;
            tracing::info!(provider = %p.name, rates = rows.len(), "rate sheet loaded");
        }
        billing.reload_rates().await?;
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
}
