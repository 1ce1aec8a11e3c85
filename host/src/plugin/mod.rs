//! The plugin runtime: three sandboxed WebAssembly slots (parser, router,
//! replies) that operators replace while calls are up.
//!
//! Every call runs in a sandboxed instance (fresh, or reused for a bounded
//! number of calls and discarded after any failure) under a CPU deadline, a
//! memory cap and an output-size cap ([`Limits`]). A call that traps,
//! overruns, or returns something invalid falls back to the slot's last
//! known-good version and then to the embedded default, so a plugin can
//! never take down a call or the process. New versions are compiled, type-checked against their world and
//! run through the slot's conformance set before they replace the running one
//! atomically ([`PluginHost::load`], [`PluginHost::watch`]).

mod bindings;
mod compile;
mod conformance;
mod limits;
mod names;
mod precheck;
mod sandbox;
mod shadow;
mod slot;
mod validate;
mod watch;
mod world;

pub use compile::compile_worker;
pub use limits::Limits;
pub use names::{end_reason_name, role_name, scheme_name};
pub use shadow::{Difference, PrefixFigures, ShadowStats};
pub use slot::{SlotStats, VersionId};
pub use watch::Watcher;

/// Hooks for fuzz targets and benchmarks; not part of the supported surface.
#[doc(hidden)]
pub mod _internal_test_exports {
    use super::types::{Command, ParseError};
    use super::{Limits, validate};

    /// [`validate`]'s check of a parser result.
    pub fn validate_parsed(
        parsed: &Result<Command, ParseError>,
        limits: &Limits,
    ) -> Result<(), String> {
        validate::parsed(parsed, limits)
    }

    /// [`validate`]'s check of a rendered reply.
    pub fn validate_rendered(text: &str, limits: &Limits) -> Result<(), String> {
        validate::rendered(text, limits)
    }
}

/// The types plugins exchange with the host, as generated from `wit/types.wit`.
pub mod types {
    pub use super::bindings::parser::switchboard::plugin::types::*;
}

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use slot::Slot;
use types::{Attempt, Command, Event, Failover, ParseError, RouteRequest};
use world::{Parser, Replies, Router};

/// The version of the plugin contract (the `switchboard:plugin` package of
/// `wit/`) this host speaks. Plugins must be built against exactly it.
pub const PACKAGE_VERSION: &str = "0.2.0";

/// Errors of the plugin runtime.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be set up with the given limits.
    #[error("cannot set up the plugin engine: {0}")]
    Engine(String),
    /// The limits are too tight for the embedded default plugins to work.
    #[error("unusable plugin limits: {0}")]
    Limits(String),
    /// A plugin file could not be read.
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The component is over a size or shape cap; refused before compiling.
    #[error("the plugin is too big: {0}")]
    TooBig(String),
    /// The same bytes were refused before; they are not compiled again.
    #[error("refused before: {0}")]
    RefusedBefore(String),
    /// Compiling the component went over the compile budget (memory, CPU
    /// or wall-clock time of the compiler child).
    #[error("the plugin is too costly to compile: {0}")]
    CompileBudget(String),
    /// The bytes are not a WebAssembly component that wasmtime can compile.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component imports something the host does not give plugins.
    #[error(
        "the plugin imports {0}, which plugins are not given (only switchboard:plugin/host and the standard library's stdio stubs are)"
    )]
    Import(String),
    /// The component was built against another version of the plugin
    /// contract (`wit/`): rebuild it against this host's.
    #[error("built for switchboard:plugin@{built}, this host speaks {PACKAGE_VERSION}")]
    Version {
        /// The version it was built for.
        built: String,
    },
    /// The component does not implement the slot's world.
    #[error("the plugin does not implement the {slot} world: {reason}")]
    WrongWorld {
        /// The slot it was loaded into.
        slot: SlotName,
        /// wasmtime's explanation.
        reason: String,
    },
    /// The component failed the slot's conformance set.
    #[error("the plugin fails the {slot} conformance set: {reason}")]
    Conformance {
        /// The slot it was loaded into.
        slot: SlotName,
        /// The first case that failed, and how.
        reason: String,
    },
    /// Rollback was asked for but the slot has no earlier version.
    #[error("the {0} slot has no earlier version to roll back to")]
    NothingToRollBack(SlotName),
    /// No version of the slot, not even the embedded default, answered.
    #[error("no version of the {0} plugin answered")]
    Unanswered(SlotName),
    /// The plugin directory cannot be watched.
    #[error("cannot watch plugin directory {path}: {reason}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A call tried with [`PluginHost::try_plugin`] did not give a usable answer.
    #[error("the plugin call {0}")]
    CallFailed(String),
    /// A slot name that is not parser, router or replies.
    #[error("unknown plugin slot '{0}' (expected parser, router or replies)")]
    UnknownSlot(String),
    /// Promotion was asked for but no shadow router runs.
    #[error("no shadow router is loaded")]
    NoShadow,
}

/// One of the three plugin slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Chat message to command.
    Parser,
    /// Provider ranking and failover.
    Router,
    /// Event to chat message.
    Replies,
}

impl SlotName {
    /// Every slot, in data-flow order.
    pub const ALL: [SlotName; 3] = [SlotName::Parser, SlotName::Router, SlotName::Replies];

    /// The slot's name as used in file names, logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::Parser => "parser",
            SlotName::Router => "router",
            SlotName::Replies => "replies",
        }
    }

    /// The file a watched plugin directory holds for this slot.
    pub fn file_name(self) -> &'static str {
        match self {
            SlotName::Parser => "parser.wasm",
            SlotName::Router => "router.wasm",
            SlotName::Replies => "replies.wasm",
        }
    }

    /// The slot whose watched file is called `name`, if any.
    pub fn from_file_name(name: &str) -> Option<SlotName> {
        SlotName::ALL.into_iter().find(|s| s.file_name() == name)
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SlotName {
    type Err = PluginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotName::ALL
            .into_iter()
            .find(|slot| slot.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PluginError::UnknownSlot(s.to_string()))
    }
}

/// A plugin's answer and which version gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    /// What the plugin returned.
    pub value: T,
    /// The version that answered.
    pub version: VersionId,
    /// Whether the active version failed and an older one or the default answered.
    pub fell_back: bool,
}

/// One call to a plugin, as given to [`PluginHost::try_plugin`] (and as JSON
/// to `switchboard plugin run`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// `parse(message, sender)` of the parser slot.
    Parse {
        /// The chat message.
        message: String,
        /// Its sender's bare address.
        sender: String,
    },
    /// `route(request)` of the router slot.
    Route(RouteRequest),
    /// `on-failure(request, failed, sip-status)` of the router slot.
    OnFailure {
        /// The request the failed attempt was routed for.
        request: RouteRequest,
        /// The attempt that failed.
        failed: Attempt,
        /// Its SIP final status.
        sip_status: u16,
    },
    /// `render(event)` of the replies slot.
    Render(Event),
}

impl Call {
    /// The slot that answers this call.
    pub fn slot(&self) -> SlotName {
        match self {
            Call::Parse { .. } => SlotName::Parser,
            Call::Route(_) | Call::OnFailure { .. } => SlotName::Router,
            Call::Render(_) => SlotName::Replies,
        }
    }
}

/// What a plugin answered to a [`Call`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// The parser's result.
    Parsed(Result<Command, ParseError>),
    /// The router's ranking.
    Routed(Vec<Attempt>),
    /// The router's failover decision.
    Failover(Failover),
    /// The replies plugin's text.
    Rendered(String),
}

/// The three plugin slots and the sandbox they run in. Shared by every task
/// of the host; all methods take `&self`.
pub struct PluginHost {
    limits: Limits,
    parser: Slot<Parser>,
    router: Slot<Router>,
    replies: Slot<Replies>,
    /// A candidate router answering beside the active one, if loaded.
    shadow: arc_swap::ArcSwapOption<shadow::Shadow>,
    /// How long each call took, per slot.
    calls: crate::metrics::Histograms<crate::metrics::SlotLabel>,
}

/// Reads a component file, refusing one over `max` bytes before reading it.
pub fn read_component(path: &Path, max: usize) -> Result<Vec<u8>, PluginError> {
    let read_error = |source| PluginError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > max as u64 {
        return Err(PluginError::TooBig(format!(
            "{size} bytes, over the {max} byte limit for a component"
        )));
    }
    std::fs::read(path).map_err(read_error)
}

/// Whether a SIP final status means the callee refused the call (486 Busy
/// Here, 600 Busy Everywhere, 603 Decline): they must not be rung again
/// through another provider. Conformance requires routers to stop there;
/// the session's floor stops whatever the router says.
pub fn callee_refused(sip_status: u16) -> bool {
    matches!(sip_status, 486 | 600 | 603)
}

/// The embedded default plugins, built from `guest-examples/` by `host/build.rs`.
mod embedded {
    pub const PARSER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parser.wasm"));
    pub const ROUTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/router.wasm"));
    pub const REPLIES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/replies.wasm"));
}

impl PluginHost {
    /// A host running the embedded default plugins under `limits`.
    pub fn new(limits: Limits) -> Result<PluginHost, PluginError> {
        let parser = Slot::embedded(limits.clone(), embedded::PARSER)?;
        let router = Slot::embedded(limits.clone(), embedded::ROUTER)?;
        let replies = Slot::embedded(limits.clone(), embedded::REPLIES)?;
        Ok(PluginHost {
            limits,
            parser,
            router,
            replies,
            shadow: arc_swap::ArcSwapOption::empty(),
            calls: crate::metrics::plugin_calls(),
        })
    }

    /// How long plugin calls took, per slot (for `/metrics`).
    pub fn call_seconds(&self) -> crate::metrics::Histograms<crate::metrics::SlotLabel> {
        self.calls.clone()
    }

    fn timed(&self, slot: SlotName, started: std::time::Instant) {
        self.calls
            .get_or_create(&crate::metrics::SlotLabel {
                slot: slot.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Compiles every candidate from now on (loads, checks, shadows, tries)
    /// in a child process of `program` (the `switchboard` binary, which has
    /// the `plugin compile-worker` subcommand) under the compile budget of
    /// the limits. The embedded defaults were compiled in this process.
    pub fn use_compiler(&self, program: PathBuf) -> Result<(), PluginError> {
        let program = compile::program(program)?;
        self.parser.runtime().set_compiler(Some(program.clone()));
        self.router.runtime().set_compiler(Some(program.clone()));
        self.replies.runtime().set_compiler(Some(program));
        Ok(())
    }

    /// The limits every plugin call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses a chat message with the parser slot. An instance is reused
    /// only for the same `sender`.
    pub fn parse(
        &self,
        message: &str,
        sender: &str,
    ) -> Result<Answer<Result<Command, ParseError>>, PluginError> {
        let limits = self.limits();
        let started = std::time::Instant::now();
        let answer = self.parser.call(
            sender,
            |bindings, store| bindings.call_parse(store, message, sender),
            |parsed| validate::parsed(parsed, limits),
        );
        self.timed(SlotName::Parser, started);
        let answer = answer?;
        if let Ok(command) = &answer.value
            && let Some(leg) = validate::phone_leg_not_in(command, message)
        {
            self.parser.flag(
                &answer.version,
                &format!("phone leg {leg} does not appear in the message"),
            );
        }
        Ok(answer)
    }

    /// Ranks the providers for one leg with the router slot. An instance is
    /// reused only for the same account.
    pub fn route(&self, request: &RouteRequest) -> Result<Answer<Vec<Attempt>>, PluginError> {
        let limits = self.limits();
        let started = std::time::Instant::now();
        let answer = self.router.call(
            &request.account.id,
            |bindings, store| bindings.call_route(store, request),
            |attempts| validate::attempts(attempts, request, limits),
        );
        self.timed(SlotName::Router, started);
        let answer = answer?;
        if let Some(shadow) = self.shadow.load().as_ref() {
            shadow.offer(request, &answer.value);
        }
        Ok(answer)
    }

    /// Runs `bytes` as a shadow router: from now on every routing request
    /// is also given to it, on a thread and sandbox of its own, and where its
    /// answer differs from the active router's is counted
    /// ([`PluginHost::shadow_stats`]). Its answers never reach a call. It
    /// replaces any earlier shadow; it must pass the router's checks.
    pub fn load_shadow(&self, bytes: &[u8], origin: &str) -> Result<VersionId, PluginError> {
        let rt = self.router.runtime();
        let shadow = shadow::Shadow::start(self.limits(), rt.fuel(), rt.compiler(), bytes, origin)?;
        self.shadow.store(Some(Arc::new(shadow)));
        tracing::info!(version = %VersionId::of(bytes), origin, "shadow router loaded");
        Ok(VersionId::of(bytes))
    }

    /// Stops the shadow router; false when none ran.
    pub fn clear_shadow(&self) -> bool {
        self.shadow.swap(None).is_some()
    }

    /// The shadow router's figures, when one runs.
    pub fn shadow_stats(&self) -> Option<ShadowStats> {
        self.shadow.load().as_ref().map(|s| s.stats())
    }

    /// Makes the shadow router the active router (as an upload would) and
    /// stops the shadow.
    pub fn promote_shadow(&self) -> Result<VersionId, PluginError> {
        let Some(shadow) = self.shadow.load_full() else {
            return Err(PluginError::NoShadow);
        };
        let origin = format!("promoted shadow ({})", shadow.stats().origin);
        let version = self.load(SlotName::Router, shadow.bytes(), &origin)?;
        self.shadow.store(None);
        Ok(version)
    }

    /// Asks the router slot whether to try the next provider after `failed`
    /// ended with `sip_status`.
    pub fn on_failure(
        &self,
        request: &RouteRequest,
        failed: &Attempt,
        sip_status: u16,
    ) -> Result<Answer<Failover>, PluginError> {
        let started = std::time::Instant::now();
        let answer = self.router.call(
            &request.account.id,
            |bindings, store| bindings.call_on_failure(store, request, failed, sip_status),
            |_| Ok(()),
        );
        self.timed(SlotName::Router, started);
        let answer = answer?;
        if callee_refused(sip_status) && answer.value == Failover::TryNext {
            // Conformance demands stop here; the host's floor stops anyway.
            self.router.flag(
                &answer.version,
                &format!("on-failure after SIP {sip_status} said try-next"),
            );
        }
        Ok(answer)
    }

    /// Phrases an event for `recipient` (the user the message goes to) with
    /// the replies slot. An instance is reused only for the same recipient.
    pub fn render(&self, recipient: &str, event: &Event) -> Result<Answer<String>, PluginError> {
        let limits = self.limits();
        let started = std::time::Instant::now();
        let answer = self.replies.call(
            recipient,
            |bindings, store| bindings.call_render(store, event),
            |text| validate::rendered(text, limits),
        );
        self.timed(SlotName::Replies, started);
        answer
    }

    /// Compiles, type-checks and conformance-tests `bytes` as a new version of
    /// `slot`, and makes it the active version if it passes. Calls already
    /// running finish on the version they started with. On failure the
    /// running version stays and the error says why.
    pub fn load(
        &self,
        slot: SlotName,
        bytes: &[u8],
        origin: &str,
    ) -> Result<VersionId, PluginError> {
        match slot {
            SlotName::Parser => self.parser.load(bytes, origin),
            SlotName::Router => self.router.load(bytes, origin),
            SlotName::Replies => self.replies.load(bytes, origin),
        }
    }

    /// [`PluginHost::load`] from a file.
    /// A file over [`Limits::component_bytes`] is refused without being read.
    pub fn load_file(&self, slot: SlotName, path: &Path) -> Result<VersionId, PluginError> {
        let bytes = read_component(path, self.limits.component_bytes)?;
        self.load(slot, &bytes, &path.display().to_string())
    }

    /// Loads every slot file (`parser.wasm`, `router.wasm`, `replies.wasm`)
    /// present in `dir`; returns what happened to each file found.
    pub fn load_dir(&self, dir: &Path) -> Vec<(SlotName, Result<VersionId, PluginError>)> {
        SlotName::ALL
            .into_iter()
            .filter_map(|slot| {
                let path = dir.join(slot.file_name());
                path.is_file().then(|| (slot, self.load_file(slot, &path)))
            })
            .collect()
    }

    /// Makes the version that the active one replaced active again.
    pub fn rollback(&self, slot: SlotName) -> Result<VersionId, PluginError> {
        match slot {
            SlotName::Parser => self.parser.rollback(),
            SlotName::Router => self.router.rollback(),
            SlotName::Replies => self.replies.rollback(),
        }
    }

    /// Counters and versions of a slot.
    pub fn stats(&self, slot: SlotName) -> SlotStats {
        match slot {
            SlotName::Parser => self.parser.stats(),
            SlotName::Router => self.router.stats(),
            SlotName::Replies => self.replies.stats(),
        }
    }

    /// Runs one call on the component `bytes` alone, without loading it and
    /// without fallback: for trying a plugin offline. The component is
    /// compiled and type-checked but not conformance-tested; the call runs
    /// under the usual limits and its result is checked against the contract.
    pub fn try_plugin(&self, bytes: &[u8], call: &Call) -> Result<Reply, PluginError> {
        let limits = self.limits();
        let id = VersionId::of(bytes);
        let failed = |f: sandbox::Failure| PluginError::CallFailed(f.to_string());
        match call {
            Call::Parse { message, sender } => {
                let rt = self.parser.runtime();
                let pre = rt.prepare::<Parser>(bytes)?;
                let (parsed, _) = rt
                    .run::<Parser, _>(
                        &pre,
                        id.as_str(),
                        None,
                        |p, s| p.call_parse(s, message, sender),
                        |parsed| validate::parsed(parsed, limits),
                    )
                    .map_err(failed)?;
                Ok(Reply::Parsed(parsed))
            }
            Call::Route(request) => {
                let rt = self.router.runtime();
                let pre = rt.prepare::<Router>(bytes)?;
                let (attempts, _) = rt
                    .run::<Router, _>(
                        &pre,
                        id.as_str(),
                        None,
                        |r, s| r.call_route(s, request),
                        |attempts| validate::attempts(attempts, request, limits),
                    )
                    .map_err(failed)?;
                Ok(Reply::Routed(attempts))
            }
            Call::OnFailure {
                request,
                failed: attempt,
                sip_status,
            } => {
                let rt = self.router.runtime();
                let pre = rt.prepare::<Router>(bytes)?;
                let (decision, _) = rt
                    .run::<Router, _>(
                        &pre,
                        id.as_str(),
                        None,
                        |r, s| r.call_on_failure(s, request, attempt, *sip_status),
                        |_| Ok(()),
                    )
                    .map_err(failed)?;
                Ok(Reply::Failover(decision))
            }
            Call::Render(event) => {
                let rt = self.replies.runtime();
                let pre = rt.prepare::<Replies>(bytes)?;
                let (text, _) = rt
                    .run::<Replies, _>(
                        &pre,
                        id.as_str(),
                        None,
                        |r, s| r.call_render(s, event),
                        |text| validate::rendered(text, limits),
                    )
                    .map_err(failed)?;
                Ok(Reply::Rendered(text))
            }
        }
    }

    /// Checks `bytes` as a candidate for `slot` (compile, imports, world,
    /// conformance) without loading it; returns the version id it would have.
    pub fn check(&self, slot: SlotName, bytes: &[u8]) -> Result<VersionId, PluginError> {
        match slot {
            SlotName::Parser => self.parser.check(bytes),
            SlotName::Router => self.router.check(bytes),
            SlotName::Replies => self.replies.check(bytes),
        }
    }
}
