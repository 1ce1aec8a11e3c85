//! The `switchboard` command: the demo, tools for plugin authors, a SIP test
//! call, and the billing tools (rates, accounts, CDRs).

mod billing_cli;

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchboard::plugin::{Call, Limits, PluginHost, SlotName};
use switchboard::service::{Control, Service};
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
    /// The whole service on embedded defaults: chat with the bot on this
    /// console; simulated providers on loopback ring, answer and play tones.
    Demo {
        /// A plugin directory to watch (parser.wasm, router.wasm, replies.wasm).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// The chat address the console user has.
        #[arg(long, default_value = "demo@localhost")]
        sender: String,
        /// The billing database (the demo account keeps its credit between runs).
        #[arg(long, default_value = "sqlite://switchboard-demo.db")]
        database: String,
        /// How long the simulated far ends ring before they answer, in ms.
        #[arg(long, default_value_t = 1000)]
        ring_ms: u64,
        /// Where the web pages are served (a free port is taken when this
        /// one is busy).
        #[arg(long, default_value = "127.0.0.1:8080")]
        web: std::net::SocketAddr,
        /// Serve no web pages.
        #[arg(long)]
        no_web: bool,
        /// The admin token of the web pages (default: a random one, printed).
        #[arg(long)]
        admin_token: Option<String>,
    },
    /// The production service: the XMPP bot, providers, gateways, database,
    /// plugin directory and limits of one configuration file, until Ctrl-C.
    #[command(alias = "serve")]
    Run {
        /// The configuration file (see switchboard.example.toml).
        #[arg(long)]
        config: PathBuf,
        /// A plugin directory to watch, instead of the file's [plugins] dir.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// How log lines are written to stderr: `text` for people, `json`
        /// (one object per line) for a log collector. The level is `info`
        /// unless RUST_LOG says otherwise.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
    /// Check a configuration file (the habit of `kamailio -c`, `nginx -t`).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
enum ConfigCommand {
    /// Validate the whole file and resolve every name it holds; print what
    /// the listeners and each provider and gateway resolve to. Exit status
    /// 0 means `switchboard run` would accept it and every name resolved.
    Check {
        /// The configuration file.
        file: PathBuf,
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
    /// The host's compiler child: reads a component on stdin, writes its
    /// compiled code on stdout. Started by the host under rlimits.
    #[command(hide = true)]
    CompileWorker {
        /// The plugin limits, as JSON.
        settings: String,
    },
}

/// How `run` writes its log.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of every open span (the
    /// session, the leg, its SIP Call-ID).
    Json,
}

/// Logs to stderr at RUST_LOG's level, else at `default`.
fn init_log(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // The service logs what an operator needs to follow calls.
        Top::Run { log_format, .. } => init_log("info", *log_format),
        // Tools and the demo's console keep quiet unless something is wrong.
        _ => init_log("warn", LogFormat::Text),
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each once: a cause whose text the message so
/// far already holds (errors that write their source into their own text)
/// is not repeated.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Top::Demo {
            plugins,
            sender,
            database,
            ring_ms,
            web,
            no_web,
            admin_token,
        } => demo(
            plugins,
            &sender,
            &database,
            ring_ms,
            (!no_web).then_some(web),
            admin_token,
        ),
        Top::Plugin {
            command: PluginCommand::Check { slot, file },
        } => check(slot, &file),
        Top::Plugin {
            command: PluginCommand::CompileWorker { settings },
        } => Ok(match switchboard::plugin::compile_worker(&settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(2),
        }),
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
        Top::Run {
            config, plugins, ..
        } => run_service(&config, plugins),
        Top::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
    }
}

/// `switchboard config check FILE`.
fn config_check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = switchboard::config::Config::load(path)?;
    println!("{}: valid", path.display());
    let sip = &config.sip;
    for (transport, addr) in sip.listeners() {
        match sip.external_for(*addr) {
            Some(external) => println!("sip {transport} {addr}: advertised as {external}"),
            None => println!("sip {transport} {addr}"),
        }
    }
    if let Some(ip) = config.media.external_address {
        println!("media {}: advertised as {ip}", config.media.address);
    }
    // Every name a request may go to, located as the SIP stack will
    // (RFC 3263 through `[sip] dns` or the system's resolvers).
    let mut names: Vec<(
        String,
        switchboard::sip::HostPort,
        Option<switchboard::sip::Transport>,
    )> = Vec::new();
    for p in &sip.providers {
        let over = p
            .transport
            .map_or("the transport DNS gives".to_string(), |t| {
                t.to_string().to_ascii_lowercase()
            });
        println!("provider {}: {} over {over}", p.name, p.address);
        names.push((
            format!("provider {}", p.name),
            p.address.clone(),
            p.transport,
        ));
        if let Some(proxy) = &p.outbound_proxy {
            names.push((
                format!("provider {} outbound_proxy", p.name),
                proxy.clone(),
                p.transport,
            ));
        }
        if let Some(registrar) = &p.registrar {
            names.push((
                format!("provider {} registrar", p.name),
                registrar.clone(),
                p.transport,
            ));
        }
    }
    for (scheme, template) in &config.sessions.gateways {
        match switchboard::session::target::gateway_uri(template, "user") {
            Ok(uri) => names.push((
                format!("gateway {scheme}"),
                switchboard::sip::HostPort {
                    host: uri.host().clone(),
                    port: uri.port(),
                },
                None,
            )),
            Err(e) => println!("gateway {scheme}: {e}"),
        }
    }
    if let Some(external) = &sip.external_address {
        // Only addresses matter here: it is what peers are told.
        let port = Some(external.port.unwrap_or(5060));
        names.push((
            "sip.external_address".to_string(),
            switchboard::sip::HostPort {
                host: external.host.clone(),
                port,
            },
            None,
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut unresolved = 0;
    let _inside = runtime.enter();
    let dns = switchboard::sip::dns::system::SystemDns::new(&sip.dns);
    let mut transports = Vec::new();
    if !sip.udp.is_empty() {
        transports.push(switchboard::sip::Transport::Udp);
    }
    if !sip.tcp.is_empty() {
        transports.push(switchboard::sip::Transport::Tcp);
    }
    let listens = || sip.listeners().map(|(_, a)| *a);
    let mut locator = switchboard::sip::dns::Locator::new(
        transports,
        listens().any(|a| a.is_ipv4()),
        listens().any(|a| a.is_ipv6()),
        [0; 32],
    );
    for (what, host, transport) in names {
        let switchboard::sip::UriHost::Name(name) = &host.host else {
            println!("{what}: {host} (an address: no DNS)");
            continue;
        };
        let dns = match &dns {
            Ok(dns) => dns,
            Err(e) => {
                unresolved += 1;
                println!("{what}: {host} cannot be located: {e}");
                continue;
            }
        };
        let wanted = switchboard::sip::dns::Wanted {
            name: name.clone(),
            port: host.port,
            transport,
        };
        match runtime.block_on(dns.locate(&mut locator, wanted)) {
            Ok(targets) => {
                let targets: Vec<String> = targets
                    .iter()
                    .map(|t| {
                        format!(
                            "{} {}",
                            t.transport.to_string().to_ascii_lowercase(),
                            t.addr
                        )
                    })
                    .collect();
                println!("{what}: {host} -> {}", targets.join(", "));
            }
            Err(e) => {
                unresolved += 1;
                println!("{what}: {host} does not resolve ({e})");
            }
        }
    }
    if unresolved > 0 {
        println!("{unresolved} name(s) did not resolve");
        return Ok(ExitCode::FAILURE);
    }
    println!("ok");
    Ok(ExitCode::SUCCESS)
}

fn sip_call(
    text: String,
    config: Option<PathBuf>,
    provider: Option<String>,
    listen: std::net::SocketAddr,
    talk: u64,
    ring: u64,
) -> anyhow::Result<ExitCode> {
    let target = switchboard::sip::TargetUri::parse(&text)
        .map_err(|e| anyhow::anyhow!("cannot call {text:?}: {e}"))?;
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
            public_only: false,
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

/// What `run` and `demo` both start with: the plugin host (watching `dir`
/// when given) and a multi-threaded runtime.
fn service_base(
    dir: Option<&std::path::Path>,
) -> anyhow::Result<(
    Arc<PluginHost>,
    Option<switchboard::plugin::Watcher>,
    tokio::runtime::Runtime,
)> {
    let host = Arc::new(plugin_host()?);
    let watcher = match dir {
        Some(dir) => Some(host.watch(dir)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok((host, watcher, runtime))
}

fn run_service(path: &std::path::Path, plugins: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = switchboard::config::Config::load(path)?;
    let Some(xmpp) = config.xmpp.clone() else {
        bail!(
            "{}: no [xmpp] section: the bot needs an account to serve",
            path.display()
        );
    };
    let plugin_dir = plugins.clone().or_else(|| config.plugins.dir.clone());
    let (host, mut watcher, runtime) = service_base(plugin_dir.as_deref())?;
    runtime.block_on(async move {
        let mut service = Service::start(&config, Arc::clone(&host)).await?;
        let (control_tx, mut control) = tokio::sync::mpsc::unbounded_channel();
        let bot = switchboard::chat::Bot::new(
            Arc::clone(&host),
            service.manager.clone(),
            xmpp.rate_limit,
            xmpp.max_reply_chars,
        );
        let jid = xmpp.jid.clone();
        let chat = Arc::new(switchboard::chat::xmpp::XmppBot::start(xmpp, bot)?);
        let web = match &config.web {
            Some(web) => {
                let listener = switchboard::web::bind(web.listen).await?;
                let addr = listener.local_addr()?;
                let state = switchboard::web::WebState::new(
                    web,
                    service.manager.clone(),
                    chat.clone(),
                    jid.clone(),
                )
                .with_control(control_tx.clone());
                let task = switchboard::web::spawn(listener, Arc::new(state));
                println!("Web pages on http://{addr}/ (admin: http://{addr}/admin)");
                Some(task)
            }
            None => None,
        };
        let sip = service
            .sip
            .local_addrs()
            .iter()
            .map(|(t, a)| format!("{t} {a}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "Switchboard running: XMPP bot {jid}, SIP on {sip}. SIGHUP re-reads the configuration; SIGUSR1 drains (no new calls, live ones finish) and exits; Ctrl-C or SIGTERM ends the calls and stops it."
        );
        use tokio::signal::unix::{SignalKind, signal};
        let manager = service.manager.clone();
        let mut running = config;
        let mut stopping: Option<tokio::task::JoinHandle<()>> = None;
        let mut terminating = false;
        let mut draining = manager.draining();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut drain_signal = signal(SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                _ = async {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate.recv() => {}
                    }
                }, if !terminating => {
                    terminating = true;
                    println!("Stopping: ending calls and settling them.");
                    let m = manager.clone();
                    if stopping.is_some() {
                        // Draining: the calls still up end now; the drain
                        // then sees none left and finishes.
                        tokio::spawn(async move {
                            m.shutdown(std::time::Duration::from_secs(10)).await;
                        });
                        continue;
                    }
                    let sip = service.sip.clone();
                    stopping = Some(tokio::spawn(async move {
                        m.shutdown(std::time::Duration::from_secs(10)).await;
                        // Then the registrations are removed.
                        sip.shutdown().await;
                    }));
                }
                _ = hangup.recv() => {
                    let what = reload(path, &mut running, &service, &host, plugins.is_some(), &mut watcher).await;
                    tell_reload(&what);
                }
                _ = drain_signal.recv() => {
                    manager.begin_drain();
                }
                Some(request) = control.recv() => match request {
                    Control::Reload(reply) => {
                        let what = reload(path, &mut running, &service, &host, plugins.is_some(), &mut watcher).await;
                        tell_reload(&what);
                        let _ = reply.send(what.map_err(|e| report(&e)));
                    }
                    Control::Drain(reply) => {
                        let _ = reply.send(manager.begin_drain());
                    }
                },
                Ok(()) = draining.changed(), if stopping.is_none() => {
                    if *draining.borrow_and_update() {
                        let secs = running.sessions.drain_secs;
                        println!("Draining: no new calls; live calls go on for up to {secs} s, then the process exits.");
                        tracing::warn!(drain_secs = secs, live = manager.live(), "draining");
                        let m = manager.clone();
                        let sip = service.sip.clone();
                        stopping = Some(tokio::spawn(async move {
                            let left = m
                                .drain(
                                    std::time::Duration::from_secs(secs),
                                    std::time::Duration::from_secs(10),
                                )
                                .await;
                            if left > 0 {
                                tracing::warn!(calls = left, "drain time over: calls ended with Shutdown");
                            }
                            sip.shutdown().await;
                        }));
                    }
                }
                notice = service.notices.recv() => match notice {
                    Some(n) => {
                        if let Err(e) = chat.notify(&n.to, n.event) {
                            tracing::warn!(error = %e, "cannot send a notice");
                        }
                    }
                    None => break,
                },
                _ = async { if let Some(s) = stopping.as_mut() { let _ = s.await; } else { std::future::pending::<()>().await } } => {
                    // Give the last notices a moment to leave.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    while let Ok(n) = service.notices.try_recv() {
                        let _ = chat.notify(&n.to, n.event);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    break;
                }
            }
        }
        if let Some(web) = web {
            web.abort();
        }
        chat.stop();
        service.billing.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Re-reads the configuration file and applies what can change live
/// ([`Service::reload`]; the plugin directory here, unless `--plugins`
/// fixed it). `running` keeps what is in force.
async fn reload(
    path: &std::path::Path,
    running: &mut switchboard::config::Config,
    service: &Service,
    host: &Arc<PluginHost>,
    plugins_fixed: bool,
    watcher: &mut Option<switchboard::plugin::Watcher>,
) -> anyhow::Result<switchboard::service::ReloadReport> {
    let new = switchboard::config::Config::load(path)?;
    let mut report = service.reload(running, &new).await?;
    if !plugins_fixed && new.plugins.dir != running.plugins.dir {
        *watcher = match &new.plugins.dir {
            Some(dir) => Some(host.watch(dir)?),
            None => None,
        };
        report.applied.push("[plugins] dir".into());
    }
    running.sessions = new.sessions;
    running.plugins = new.plugins;
    running.billing.emergency_numbers = new.billing.emergency_numbers;
    running.billing.denied_prefixes = new.billing.denied_prefixes;
    Ok(report)
}

fn tell_reload(what: &anyhow::Result<switchboard::service::ReloadReport>) {
    match what {
        Ok(r) => {
            println!("Configuration reloaded: {r}");
            tracing::info!(applied = ?r.applied, restart_needed = ?r.restart_needed, "configuration reloaded");
        }
        Err(e) => {
            println!("Configuration not reloaded: {}", report(e));
            tracing::error!(error = %report(e), "configuration not reloaded; the running one stays");
        }
    }
}

fn demo(
    plugins: Option<PathBuf>,
    sender: &str,
    database: &str,
    ring_ms: u64,
    web: Option<std::net::SocketAddr>,
    admin_token: Option<String>,
) -> anyhow::Result<ExitCode> {
    use switchboard::billing::{Micros, unix_ms};
    use switchboard::demo::{DEMO_CREDIT, DemoNetwork, PROVIDERS, rate_sheet};

    let (host, _watcher, runtime) = service_base(plugins.as_deref())?;
    runtime.block_on(async move {
        let network = DemoNetwork::start(std::time::Duration::from_millis(ring_ms)).await?;
        let config = network.config(database);
        let mut service = Service::start(&config, Arc::clone(&host))
            .await
            .with_context(|| format!("cannot start the demo with database {database}"))?;
        let store = service.billing.store();
        store.import_rates(rate_sheet().as_bytes(), true).await?;
        service.billing.reload_rates().await?;
        let now = unix_ms(std::time::SystemTime::now());
        let available = store
            .account(sender)
            .await?
            .map_or(Micros::ZERO, |a| a.available());
        if available < Micros(1_000_000) {
            store
                .credit(sender, DEMO_CREDIT.minus(available), "USD", now)
                .await?;
        }
        let balance = store
            .account(sender)
            .await?
            .map_or(Micros::ZERO, |a| a.balance);
        println!("Switchboard demo: you are {sender}, chatting with the bot on this console.");
        println!("Your account holds {balance} USD. Simulated providers on loopback:");
        for ((name, hz, rates), far) in PROVIDERS.iter().zip(&network.providers) {
            let list: Vec<String> = rates
                .iter()
                .map(|(p, price)| format!("+{p}… {}", Micros(*price)))
                .collect();
            println!(
                "  {name:<9} {} (plays {hz} Hz): {}",
                far.address,
                list.join(", ")
            );
        }
        println!(
            "  gateway   {} for gtalk: and xmpp: legs (msn: and yahoo: have none)",
            network.gateway.address
        );
        println!("Numbers ending in 486 are busy, 408 never answer, 503 fail at the provider.");
        println!(
            "Try: CALLBACK +442071234567 +4915112345678   then LIST, ADD +442071234568, HANGUP."
        );
        let _web = match web {
            Some(addr) => Some(demo_web(addr, admin_token, &service).await?),
            None => None,
        };
        println!("HELP lists the commands; Ctrl-D ends the demo.");
        let mut bot = switchboard::chat::Bot::new(
            host,
            service.manager.clone(),
            // One person at a keyboard: no flood to guard against.
            switchboard::chat::limit::RateLimit {
                burst: 1000,
                per_minute: 6000,
            },
            2000,
        );
        switchboard::chat::console::run_live(&mut bot, &mut service.notices, io::stdout(), sender)
            .await?;
        if service.manager.live() > 0 {
            service
                .manager
                .shutdown(std::time::Duration::from_secs(5))
                .await;
            while let Ok(n) = service.notices.try_recv() {
                for text in bot.phrase(&n.to, &n.event).unwrap_or_default() {
                    println!("{text}");
                }
            }
        }
        service.billing.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The demo's web pages: on `addr`, or a free port when it is busy.
async fn demo_web(
    addr: std::net::SocketAddr,
    token: Option<String>,
    service: &Service,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), switchboard::web::WebError>>> {
    let token = token.unwrap_or_else(|| {
        let bytes: [u8; 12] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let config = switchboard::web::WebConfig {
        listen: addr,
        admin_token: token.clone(),
        code_ttl_secs: 600,
        max_upload_bytes: 16 << 20,
    };
    if let Err(e) = config.validate() {
        bail!("--admin-token: {e}");
    }
    let listener = match switchboard::web::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            println!("({e}; taking a free port instead)");
            switchboard::web::bind(std::net::SocketAddr::new(addr.ip(), 0)).await?
        }
    };
    let bound = listener.local_addr()?;
    let state = switchboard::web::WebState::new(
        &config,
        service.manager.clone(),
        Arc::new(switchboard::chat::console::ConsoleMessenger),
        "bot@switchboard.demo".into(),
    );
    println!(
        "Web pages on http://{bound}/ ; admin at http://{bound}/admin with token {token} ; your login codes appear here."
    );
    Ok(switchboard::web::spawn(listener, Arc::new(state)))
}

/// The plugin host of the binary: default limits, and candidates compiled
/// in a child process of this binary under the compile budget.
fn plugin_host() -> anyhow::Result<PluginHost> {
    let host = PluginHost::new(Limits::default())?;
    let me = std::env::current_exe().context("cannot find this program to compile plugins with")?;
    host.use_compiler(me)?;
    Ok(host)
}

fn read(file: &Path) -> anyhow::Result<Vec<u8>> {
    switchboard::plugin::read_component(file, Limits::default().component_bytes)
        .with_context(|| format!("cannot read {}", file.display()))
}

fn check(slot: SlotName, file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let host = plugin_host()?;
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

fn try_run(slot: SlotName, file: &Path, input: String, sender: String) -> anyhow::Result<ExitCode> {
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
    let host = plugin_host()?;
    let reply = host.try_plugin(&bytes, &call)?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(ExitCode::SUCCESS)
}
