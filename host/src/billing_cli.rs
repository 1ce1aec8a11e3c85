//! `switchboard billing …`: the operator's tools for rates, accounts and CDRs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use switchboard::billing::{self, Billing, Micros, unix_ms};
use switchboard::config::Config;

/// What `switchboard billing` can do.
#[derive(Subcommand)]
pub enum BillingCommand {
    /// Import a rate sheet (CSV: provider,prefix,price_per_minute
    /// [,increment_secs][,connect_fee]). Every row is checked first; one bad
    /// row and nothing is imported. Use `-` for stdin.
    ImportRates {
        /// The CSV file.
        file: PathBuf,
        /// Remove the named providers' other rates first.
        #[arg(long)]
        replace: bool,
    },
    /// Show what each provider charges for a number, cheapest first.
    Rate {
        /// The number in international format (+442071234567 or 442071234567).
        number: String,
    },
    /// Add credit to an account (opened if new). A negative amount debits.
    Credit {
        /// The account (its chat address).
        account: String,
        /// The amount, e.g. 10 or 2.50.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// The currency of a new account (default: billing.currency).
        #[arg(long)]
        currency: Option<String>,
    },
    /// Show an account's balance, reservations and limits.
    Account {
        /// The account.
        account: String,
    },
    /// Set an account's limits.
    Limits {
        /// The account.
        account: String,
        /// Most paid legs up at once (0 = no limit).
        #[arg(long)]
        max_paid_legs: Option<u32>,
        /// Most spent per UTC day (0 = no limit).
        #[arg(long)]
        daily_cap: Option<String>,
        /// Block the account (no paid legs).
        #[arg(long, conflicts_with = "unblock")]
        block: bool,
        /// Unblock the account.
        #[arg(long)]
        unblock: bool,
    },
    /// List an account's call detail records, newest first.
    Cdrs {
        /// The account.
        account: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// Runs one billing command against the configured database (or `database`).
pub fn run(
    config: Option<PathBuf>,
    database: Option<String>,
    command: BillingCommand,
) -> anyhow::Result<ExitCode> {
    let config = match &config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let mut settings = config
        .as_ref()
        .map(|c| c.billing.clone())
        .unwrap_or_default();
    if let Some(url) = database {
        settings.database = url;
    }
    let providers = config.as_ref().map(Config::provider_records);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // No lease and no recovery: a running host's live calls are its own.
        let billing = Billing::open(&settings, providers.as_deref())
            .await
            .with_context(|| format!("opening {}", settings.database))?;
        let result = execute(&billing, &settings, command).await;
        billing.close().await;
        result
    })
}

async fn execute(
    billing: &Billing,
    settings: &billing::Config,
    command: BillingCommand,
) -> anyhow::Result<ExitCode> {
    let store = billing.store();
    let now = unix_ms(SystemTime::now());
    match command {
        BillingCommand::ImportRates { file, replace } => {
            let sheet: Box<dyn std::io::Read> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                )
            };
            match store.import_rates(sheet, replace).await {
                Ok(n) => println!("imported {n} rates"),
                Err(e @ billing::BillingError::Import(_)) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        BillingCommand::Rate { number } => {
            let digits = number.strip_prefix('+').unwrap_or(&number);
            match billing.offers(digits) {
                Ok(mut offers) => {
                    offers.sort_by_key(|o| (o.rate.price_per_minute, o.provider.clone()));
                    println!(
                        "{:<16} {:<10} {:>12} {:>9} {:>11}",
                        "provider", "prefix", "per minute", "increment", "connect fee"
                    );
                    for o in offers {
                        println!(
                            "{:<16} {:<10} {:>12} {:>8}s {:>11}",
                            o.provider,
                            o.prefix,
                            o.rate.price_per_minute.to_string(),
                            o.rate.increment_secs,
                            o.rate.connect_fee.to_string()
                        );
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        BillingCommand::Credit {
            account,
            amount,
            currency,
        } => {
            let amount: Micros = amount.parse()?;
            let currency = currency.unwrap_or_else(|| settings.currency.clone());
            let balance = store.credit(&account, amount, &currency, now).await?;
            println!("{account}: balance {balance} {currency}");
        }
        BillingCommand::Account { account } => {
            let Some(a) = store.account(&account).await? else {
                eprintln!("no account {account:?}");
                return Ok(ExitCode::FAILURE);
            };
            let spent = store.spent_on_day(&account, now).await?;
            println!("account          {}", a.id);
            println!("balance          {} {}", a.balance, a.currency);
            println!("reserved         {} (live sessions)", a.reserved);
            println!("available        {}", a.available());
            println!("paid legs up     {}", a.live_paid_legs);
            println!(
                "max paid legs    {}",
                a.max_paid_legs.map_or("no limit".into(), |n| n.to_string())
            );
            println!("spent today      {}", spent);
            println!(
                "daily cap        {}",
                a.daily_spend_cap
                    .map_or("no limit".into(), |m| m.to_string())
            );
            println!("blocked          {}", if a.blocked { "yes" } else { "no" });
        }
        BillingCommand::Limits {
            account,
            max_paid_legs,
            daily_cap,
            block,
            unblock,
        } => {
            let Some(a) = store.account(&account).await? else {
                eprintln!("no account {account:?}");
                return Ok(ExitCode::FAILURE);
            };
            let max_paid_legs = match max_paid_legs {
                Some(0) => None,
                Some(n) => Some(n),
                None => a.max_paid_legs,
            };
            let daily_cap = match daily_cap {
                Some(text) => Some(text.parse::<Micros>()?).filter(|m| m.0 > 0),
                None => a.daily_spend_cap,
            };
            let blocked = (a.blocked || block) && !unblock;
            store
                .set_limits(&account, max_paid_legs, daily_cap, blocked)
                .await?;
            println!("{account}: limits set");
        }
        BillingCommand::Cdrs { account, limit } => {
            let cdrs = store.cdrs(&account, limit).await?;
            if cdrs.is_empty() {
                println!("no CDRs for {account}");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<11} {:<28} {:<10} {:>6} {:>10} {:>4} reason",
                "started (UTC)", "role", "address", "provider", "secs", "cost", "sip"
            );
            for c in cdrs {
                let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:<11} {:<28} {:<10} {:>6} {:>10} {:>4} {}",
                    utc(c.started_ms),
                    c.role,
                    c.address,
                    or_dash(c.provider),
                    or_dash(c.billed_secs.map(|s| s.to_string())),
                    or_dash(c.cost.map(|m| m.to_string())),
                    or_dash(c.sip_status.map(|s| s.to_string())),
                    c.end_reason.unwrap_or_else(|| "(live)".into()),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A Unix millisecond time as `2026-11-25T08:00:00`.
fn utc(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.trim_end_matches('Z').to_string()
}
