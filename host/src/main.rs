//! The `switchboard` command: the demo, tools for plugin authors, a SIP test
//! call, and the billing tools (rates, accounts, CDRs).

mod billing_cli;

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchboard::plugin::{Call, Limits, PluginHost, SlotName};
use tracing_subscriber::EnvFilter;

/// Switchboard: callback calls and conferences driven by chat commands.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Chat with the bot on this console, with the built-in plugins.
    Demo {
        /// A plugin directory to watch (parser.wasm, router.wasm, replies.wasm).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// The chat address the console user has.
        #[arg(long, default_value = "demo@localhost")]
        sender: String,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Tools for the SIP stack.
    Sip {
        #[command(subcommand)]
        command: SipCommand,
    },
    /// Run the XMPP bot of the configuration's [xmpp] section until Ctrl-C.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A plugin directory to watch (parser.wasm, router.wasm, replies.wasm).
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Rates, accounts and call detail records.
    Billing {
        /// A configuration file: its [billing] section names the database,
        /// its [[sip.providers]] the providers rates may name.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The database, instead of the configuration's
        /// (sqlite://file.db or postgres://user@host/db).
        #[arg(long, global = true)]
        database: Option<String>,
        #[command(subcommand)]
        command: billing_cli::BillingCommand,
    },
}

#[derive(Subcommand)]
enum SipCommand {
    /// Place one call, print its events, hang up after --talk seconds.
    /// Exit status 0 means it was answered and ended cleanly.
    Call {
        /// Request-URI, e.g. sip:+442071234567@127.0.0.1:5080.
        target: String,
        /// A configuration file (its [sip] section: listeners, timers, providers).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Send through this provider from the configuration.
        #[arg(long)]
        provider: Option<String>,
        /// UDP listen address when no configuration is given.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Seconds to stay on the call once answered.
        #[arg(long, default_value_t = 2)]
        talk: u64,
        /// Seconds to let it ring before cancelling.
        #[arg(long, default_value_t = 30)]
        ring: u64,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a plugin, check it against its slot's world and run the
    /// slot's conformance set. Exit status 0 means it would be accepted.
    Check {
        /// parser, router or replies.
        slot: SlotName,
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Run one call on a plugin offline and print the result as JSON.
    ///
    /// For the parser, INPUT is the chat message. For the router it is JSON,
    /// `{"route": REQUEST}` or `{"on-failure": {"request": REQUEST,
    /// "failed": {"provider": "X"}, "sip_status": 486}}`. For replies it is
    /// the event as JSON, e.g. `"Help"`. Use `-` to read INPUT from stdin.
    Run {
        /// parser, router or replies.
        slot: SlotName,
        /// The component (.wasm).
        file: PathBuf,
        /// The message, request or event.
        input: String,
        /// The sender of a parser message.
        #[arg(long, default_value = "author@localhost")]
        sender: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Top::Demo { plugins, sender } => demo(plugins, &sender),
        Top::Plugin {
            command: PluginCommand::Check { slot, file },
        } => check(slot, &file),
        Top::Plugin {
            command:
                PluginCommand::Run {
                    slot,
                    file,
                    input,
                    sender,
                },
        } => try_run(slot, &file, input, sender),
        Top::Sip {
            command:
                SipCommand::Call {
                    target,
                    config,
                    provider,
                    listen,
                    talk,
                    ring,
                },
        } => sip_call(target, config, provider, listen, talk, ring),
        Top::Billing {
            config,
            database,
            command,
        } => billing_cli::run(config, database, command),
        Top::Serve { config, plugins } => serve(&config, plugins),
    }
}

fn sip_call(
    target: String,
    config: Option<PathBuf>,
    provider: Option<String>,
    listen: std::net::SocketAddr,
    talk: u64,
    ring: u64,
) -> anyhow::Result<ExitCode> {
    use std::time::Duration;
    use switchboard::sip::{AudioSdp, CallEvent, CallRequest, SipService};

    let sip_config = match &config {
        Some(path) => switchboard::config::Config::load(path)?.sip,
        None => switchboard::sip::Config {
            udp: vec![listen],
            ..Default::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sip = SipService::start(sip_config).await?;
        let local = sip
            .local_addrs()
            .first()
            .map(|(_, a)| a.ip())
            .unwrap_or(listen.ip());
        for (transport, addr) in sip.local_addrs() {
            println!("listening on {transport} {addr}");
        }
        // No media yet: the offer names a port nothing listens on.
        let request = CallRequest {
            target,
            provider,
            offer: AudioSdp::offer(local, 40_000, 1),
            ring_timeout: Some(Duration::from_secs(ring)),
            caller: None,
        };
        let mut call = sip.place_call(request).await?;
        let mut answered = false;
        while let Some(event) = call.events.recv().await {
            println!("{event:?}");
            match event {
                CallEvent::Answered { .. } => {
                    answered = true;
                    tokio::time::sleep(Duration::from_secs(talk)).await;
                    sip.hangup(call.id);
                }
                CallEvent::Failed { .. } => return Ok(ExitCode::FAILURE),
                CallEvent::Ended { .. } => break,
                _ => {}
            }
        }
        Ok(if answered {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn serve(config: &std::path::Path, plugins: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = switchboard::config::Config::load(config)?;
    let Some(xmpp) = config.xmpp else {
        bail!("the configuration has no [xmpp] section: nothing to serve");
    };
    let host = Arc::new(PluginHost::new(Limits::default())?);
    let _watcher = match &plugins {
        Some(dir) => Some(host.watch(dir)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bot = switchboard::chat::Bot::new(
            host,
            Arc::new(switchboard::chat::Unwired),
            xmpp.rate_limit,
            xmpp.max_reply_chars,
        );
        let jid = xmpp.jid.clone();
        let running = switchboard::chat::xmpp::XmppBot::start(xmpp, bot)?;
        println!("XMPP bot {jid} started; calls are not wired yet (they are answered as unavailable). Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
        running.stop();
        Ok(ExitCode::SUCCESS)
    })
}

fn demo(plugins: Option<PathBuf>, sender: &str) -> anyhow::Result<ExitCode> {
    let host = Arc::new(PluginHost::new(Limits::default())?);
    let _watcher = match &plugins {
        Some(dir) => Some(host.watch(dir)?),
        None => None,
    };
    println!("Switchboard demo: you are {sender}, chatting with the bot on this console.");
    println!(
        "Commands are parsed and answered by the built-in plugins, but calls are not wired yet:"
    );
    println!(
        "CALLBACK, LIST, ADD, DEL and HANGUP are understood and answered with \"calls are not available\"."
    );
    println!("Type HELP for the commands; Ctrl-D ends the demo.");
    if let Some(dir) = &plugins {
        println!(
            "Watching {} for parser.wasm, router.wasm and replies.wasm.",
            dir.display()
        );
    }
    let stdin = io::stdin();
    let mut bot = switchboard::chat::Bot::new(
        host,
        Arc::new(switchboard::chat::Unwired),
        switchboard::chat::limit::RateLimit::default(),
        2000,
    );
    switchboard::chat::console::run(&mut bot, stdin.lock(), io::stdout(), sender)?;
    Ok(ExitCode::SUCCESS)
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn check(slot: SlotName, file: &PathBuf) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let host = PluginHost::new(Limits::default())?;
    match host.check(slot, &bytes) {
        Ok(version) => {
            println!(
                "ok: {} passes as a {slot} plugin (version {version})",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("refused: {}: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn try_run(
    slot: SlotName,
    file: &PathBuf,
    input: String,
    sender: String,
) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let input = if input == "-" {
        let mut text = String::new();
        for line in io::stdin().lock().lines() {
            text.push_str(&line?);
            text.push('\n');
        }
        text
    } else {
        input
    };
    let call = match slot {
        SlotName::Parser => Call::Parse {
            message: input,
            sender,
        },
        SlotName::Router => serde_json::from_str::<Call>(&input)
            .context("router input must be {\"route\": ...} or {\"on-failure\": ...} as JSON")?,
        SlotName::Replies => Call::Render(
            serde_json::from_str(&input).context("replies input must be an event as JSON")?,
        ),
    };
    if call.slot() != slot {
        bail!("that input is for the {} slot, not {slot}", call.slot());
    }
    let host = PluginHost::new(Limits::default())?;
    let reply = host.try_plugin(&bytes, &call)?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(ExitCode::SUCCESS)
}
