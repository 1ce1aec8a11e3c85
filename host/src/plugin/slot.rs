//! One plugin slot: its active version, the versions it replaced (for
//! fallback and rollback), the embedded default, and its counters.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::Store;

use super::sandbox::{
    Failure, IDLE_PER_VERSION, Runtime, SPARES_PER_VERSION, Sandbox, WarmInstances,
};
use super::world::World;
use super::{Answer, Limits, PluginError, conformance};

/// How many replaced versions a slot keeps for fallback and rollback.
const HISTORY: usize = 4;

/// How many refused content hashes a slot remembers.
const REFUSED_MEMORY: usize = 64;

/// A loaded plugin version's id: the first 16 hex digits of the SHA-256 of
/// its bytes. The same file always has the same id; it appears in logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VersionId(Arc<str>);

impl serde::Serialize for VersionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl VersionId {
    /// The id of a component's bytes.
    pub fn of(bytes: &[u8]) -> VersionId {
        let digest = Sha256::digest(bytes);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        VersionId(hex.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One compiled version of a slot's plugin.
struct Version<W: World> {
    id: VersionId,
    origin: String,
    pre: W::Pre,
    warm: Arc<WarmInstances<W>>,
    /// Outcomes of its recent calls as the active version.
    recent: Mutex<Recent>,
}

/// The outcomes of a version's last calls (true = failed), with the
/// failures among them counted as they come and go.
#[derive(Default)]
struct Recent {
    outcomes: VecDeque<bool>,
    failed: usize,
}

impl<W: World> Version<W> {
    fn new(id: VersionId, origin: &str, pre: W::Pre) -> Version<W> {
        Version {
            id,
            origin: origin.to_string(),
            pre,
            warm: Arc::new(WarmInstances::new(IDLE_PER_VERSION, SPARES_PER_VERSION)),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// Records one call's outcome; true when more than `failures` of the
    /// last `window` calls failed.
    fn record(&self, failed: bool, failures: u32, window: u32) -> bool {
        if failures == 0 || window == 0 {
            return false;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.outcomes.push_back(failed);
        recent.failed += usize::from(failed);
        while recent.outcomes.len() > window as usize {
            if recent.outcomes.pop_front() == Some(true) {
                recent.failed -= 1;
            }
        }
        recent.failed > failures as usize
    }
}

/// The versions a slot can answer with, swapped as a whole on reload.
struct Versions<W: World> {
    active: Arc<Version<W>>,
    /// Versions the active one replaced, oldest first.
    history: Vec<Arc<Version<W>>>,
}

/// A snapshot of a slot's counters and versions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlotStats {
    /// The version answering calls.
    pub active: VersionId,
    /// Where it came from (`embedded` or a file path).
    pub active_origin: String,
    /// The last known-good version: fallback and rollback target.
    pub previous: Option<VersionId>,
    /// The embedded default's version.
    pub embedded: VersionId,
    /// Calls made.
    pub calls: u64,
    /// Calls answered by a version other than the active one.
    pub fallbacks: u64,
    /// Calls no version answered.
    pub unanswered: u64,
    /// Version calls that used up their fuel budget.
    pub out_of_fuel: u64,
    /// Version calls stopped at the wall-clock backstop.
    pub deadlines: u64,
    /// Version calls that hit the memory cap.
    pub memory_faults: u64,
    /// Version calls that trapped (panics, stack overflows, stubbed imports...).
    pub traps: u64,
    /// Version calls that returned an invalid result.
    pub invalid: u64,
    /// Answers accepted but unlike anything conformance accepts (parser: a
    /// phone leg whose digits do not appear in the message; router:
    /// try-next after 486, 600 or 603). A version that behaves only while
    /// it is checked shows up here.
    pub suspicious: u64,
    /// Version calls that could not be instantiated.
    pub instantiation_failures: u64,
    /// New versions made active.
    pub loads: u64,
    /// Candidate versions refused.
    pub rejected: u64,
    /// Rollbacks made (by an operator or by the breaker).
    pub rollbacks: u64,
    /// Automatic rollbacks by the circuit breaker.
    pub breaker_trips: u64,
    /// The breaker's last trip: which version it rolled back, and why.
    pub last_breaker_trip: Option<String>,
    /// The fuel budget of one call (instructions).
    pub fuel_budget: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    fallbacks: AtomicU64,
    unanswered: AtomicU64,
    out_of_fuel: AtomicU64,
    deadlines: AtomicU64,
    memory_faults: AtomicU64,
    traps: AtomicU64,
    invalid: AtomicU64,
    suspicious: AtomicU64,
    instantiation_failures: AtomicU64,
    loads: AtomicU64,
    rejected: AtomicU64,
    rollbacks: AtomicU64,
    breaker_trips: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A slot of world `W`.
pub(crate) struct Slot<W: World> {
    /// The slot's own engine and instance pool.
    runtime: Runtime,
    versions: ArcSwap<Versions<W>>,
    embedded: Arc<Version<W>>,
    /// Serialises loads and rollbacks; calls never take it.
    writer: Mutex<()>,
    counters: Counters,
    /// Content hashes refused before, with the reason, oldest first.
    refused: Mutex<VecDeque<(VersionId, String)>>,
    last_trip: Mutex<Option<String>>,
}

impl<W: World> Slot<W> {
    /// A slot running the embedded default `bytes` in a runtime of its own
    /// under `limits`. The default runs its conformance set first, so
    /// limits it cannot work under are refused at start rather than failing
    /// every call later; the fuel it used sizes the slot's budget.
    pub(crate) fn embedded(limits: Limits, bytes: &[u8]) -> Result<Slot<W>, PluginError> {
        let runtime = Runtime::new(limits, W::SLOT)?;
        let limits_error = |e: PluginError| match e {
            PluginError::Conformance { slot, reason } => PluginError::Limits(format!(
                "the embedded {slot} plugin fails its conformance set under these limits: {reason}"
            )),
            other => other,
        };
        let pre = runtime.prepare::<W>(bytes).map_err(limits_error)?;
        let conforms = |runtime: &Runtime| {
            W::conformance(runtime, &pre, &mut conformance::Draw::fresh()).map_err(|reason| {
                limits_error(PluginError::Conformance {
                    slot: W::SLOT,
                    reason,
                })
            })
        };
        runtime.size_fuel(conforms(&runtime)?);
        // The budget it will live under must be enough for it too.
        conforms(&runtime)?;
        Ok(Self::with(runtime, bytes, "embedded", pre))
    }

    /// A slot running `bytes` alone, with no other version to fall back to
    /// (a shadow candidate), in a runtime of its own whose fuel budget is
    /// `fuel`; refused like any candidate that fails its checks.
    pub(crate) fn single(
        limits: Limits,
        fuel: u64,
        compiler: Option<std::path::PathBuf>,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Slot<W>, PluginError> {
        let runtime = Runtime::new(limits, W::SLOT)?;
        runtime.set_fuel(fuel);
        runtime.set_compiler(compiler);
        let pre = Self::candidate(&runtime, bytes)?;
        Ok(Self::with(runtime, bytes, origin, pre))
    }

    fn with(runtime: Runtime, bytes: &[u8], origin: &str, pre: W::Pre) -> Slot<W> {
        let embedded = Arc::new(Version::new(VersionId::of(bytes), origin, pre));
        tracing::debug!(slot = %W::SLOT, version = %embedded.id, fuel = runtime.fuel(), "ready");
        Slot {
            runtime,
            versions: ArcSwap::from_pointee(Versions {
                active: embedded.clone(),
                history: Vec::new(),
            }),
            embedded,
            writer: Mutex::new(()),
            counters: Counters::default(),
            refused: Mutex::new(VecDeque::new()),
            last_trip: Mutex::new(None),
        }
    }

    /// The slot's runtime (its limits and fuel budget).
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Calls the active version; on failure the last known-good version,
    /// then the embedded default. `check` rejects results the contract
    /// forbids.
    /// An instance is reused only for calls of the same `owner` (the user
    /// the call is made for).
    pub(crate) fn call<R>(
        &self,
        owner: &str,
        call: impl Fn(&W, &mut Store<Sandbox>) -> wasmtime::Result<R>,
        check: impl Fn(&R) -> Result<(), String>,
    ) -> Result<Answer<R>, PluginError> {
        bump(&self.counters.calls);
        let versions = self.versions.load();
        let mut chain: Vec<&Arc<Version<W>>> = Vec::with_capacity(3);
        for version in [
            Some(&versions.active),
            versions.history.last(),
            Some(&self.embedded),
        ]
        .into_iter()
        .flatten()
        {
            if chain.iter().all(|tried| tried.id != version.id) {
                chain.push(version);
            }
        }

        for (index, version) in chain.into_iter().enumerate() {
            let result = self
                .runtime
                .run::<W, R>(
                    &version.pre,
                    version.id.as_str(),
                    Some((&version.warm, owner)),
                    &call,
                    &check,
                )
                .map(|(value, _fuel)| value);
            if index == 0 {
                self.breaker(version, result.as_ref().err());
            }
            match result {
                Ok(value) => {
                    if index > 0 {
                        bump(&self.counters.fallbacks);
                    }
                    return Ok(Answer {
                        value,
                        version: version.id.clone(),
                        fell_back: index > 0,
                    });
                }
                Err(failure) => {
                    self.count(&failure);
                    tracing::warn!(
                        slot = %W::SLOT,
                        version = %version.id,
                        origin = %version.origin,
                        "plugin call {failure}; falling back"
                    );
                }
            }
        }
        bump(&self.counters.unanswered);
        tracing::error!(slot = %W::SLOT, "no plugin version answered");
        Err(PluginError::Unanswered(W::SLOT))
    }

    /// Counts the active version's outcome, and rolls it back to the last
    /// known-good version when too many of its recent calls failed.
    fn breaker(&self, version: &Arc<Version<W>>, failure: Option<&Failure>) {
        let limits = self.runtime.limits();
        if !version.record(
            failure.is_some(),
            limits.breaker_failures,
            limits.breaker_window,
        ) {
            return;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.versions.load_full();
        if current.active.id != version.id {
            return; // someone else swapped it meanwhile
        }
        let Some(fallback) = self.step_back(&current, true) else {
            return; // the embedded default has nothing to fall back to
        };
        let why = format!(
            "version {} ({}) failed more than {} of its last {} calls, the last one {}; rolled back to {}",
            version.id,
            version.origin,
            limits.breaker_failures,
            limits.breaker_window,
            failure.map(ToString::to_string).unwrap_or_default(),
            fallback.id
        );
        bump(&self.counters.breaker_trips);
        tracing::error!(slot = %W::SLOT, "circuit breaker: {why}");
        *self.last_trip.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Counts an answer that conformance would not have accepted.
    pub(crate) fn flag(&self, version: &VersionId, why: &str) {
        bump(&self.counters.suspicious);
        tracing::warn!(slot = %W::SLOT, %version, "suspicious plugin answer: {why}");
    }

    fn count(&self, failure: &Failure) {
        let c = &self.counters;
        bump(match failure {
            Failure::Fuel => &c.out_of_fuel,
            Failure::Deadline => &c.deadlines,
            Failure::Memory => &c.memory_faults,
            Failure::StackOverflow | Failure::Trap(_) => &c.traps,
            Failure::Invalid(_) => &c.invalid,
            Failure::Instantiate(_) => &c.instantiation_failures,
        });
    }

    /// Compiles, checks and conformance-tests `bytes`, then makes it active.
    /// Bytes refused before are refused again at once, without compiling.
    pub(crate) fn load(&self, bytes: &[u8], origin: &str) -> Result<VersionId, PluginError> {
        let id = VersionId::of(bytes);
        if self.versions.load().active.id == id {
            return Ok(id);
        }
        if let Some(why) = self.refused_before(&id) {
            bump(&self.counters.rejected);
            tracing::warn!(slot = %W::SLOT, version = %id, %origin, "plugin refused before, not compiled again: {why}");
            return Err(PluginError::RefusedBefore(why));
        }
        let pre = match Self::candidate(&self.runtime, bytes) {
            Ok(pre) => pre,
            Err(e) => {
                bump(&self.counters.rejected);
                tracing::warn!(slot = %W::SLOT, version = %id, %origin, "plugin rejected: {e}");
                self.remember_refusal(id, &e);
                return Err(e);
            }
        };
        let version = Arc::new(Version::new(id.clone(), origin, pre));
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.versions.load_full();
        let mut history: Vec<_> = current
            .history
            .iter()
            .filter(|v| v.id != id)
            .cloned()
            .collect();
        if current.active.id != id {
            history.push(current.active.clone());
        }
        if history.len() > HISTORY {
            history.drain(..history.len() - HISTORY);
        }
        let previous = current.active.id.clone();
        self.versions.store(Arc::new(Versions {
            active: version,
            history,
        }));
        bump(&self.counters.loads);
        tracing::info!(slot = %W::SLOT, version = %id, %previous, %origin, "plugin version active");
        Ok(id)
    }

    fn refused_before(&self, id: &VersionId) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .iter()
            .find(|(r, _)| r == id)
            .map(|(_, why)| why.clone())
    }

    /// Remembers why `id` was refused, unless the refusal may not happen
    /// again (a file that could not be read, an instance pool that was full).
    fn remember_refusal(&self, id: VersionId, error: &PluginError) {
        if matches!(error, PluginError::Read { .. } | PluginError::Engine(_)) {
            return;
        }
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.push_back((id, error.to_string()));
        while refused.len() > REFUSED_MEMORY {
            refused.pop_front();
        }
    }

    /// Checks `bytes` as a candidate without loading it.
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<VersionId, PluginError> {
        Self::candidate(&self.runtime, bytes).map(|_| VersionId::of(bytes))
    }

    /// Compiles and checks `bytes` and runs the conformance set, drawn
    /// afresh, under the slot's fuel budget.
    fn candidate(runtime: &Runtime, bytes: &[u8]) -> Result<W::Pre, PluginError> {
        let pre = runtime.prepare::<W>(bytes)?;
        W::conformance(runtime, &pre, &mut conformance::Draw::fresh()).map_err(|reason| {
            PluginError::Conformance {
                slot: W::SLOT,
                reason,
            }
        })?;
        Ok(pre)
    }

    /// Makes the version the active one replaced active again.
    pub(crate) fn rollback(&self) -> Result<VersionId, PluginError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.versions.load_full();
        let Some(previous) = self.step_back(&current, false) else {
            return Err(PluginError::NothingToRollBack(W::SLOT));
        };
        tracing::info!(slot = %W::SLOT, version = %previous.id, replaced = %current.active.id, "plugin rolled back");
        Ok(previous.id.clone())
    }

    /// Makes the version `current.active` replaced active again, or, with
    /// `to_default` and none left, the embedded default; counts a rollback.
    /// None when there is nothing to go back to. The caller holds `writer`.
    fn step_back(&self, current: &Versions<W>, to_default: bool) -> Option<Arc<Version<W>>> {
        let mut history = current.history.clone();
        let previous = match history.pop() {
            Some(previous) => previous,
            None if to_default => self.embedded.clone(),
            None => return None,
        };
        if previous.id == current.active.id {
            return None;
        }
        self.versions.store(Arc::new(Versions {
            active: previous.clone(),
            history,
        }));
        bump(&self.counters.rollbacks);
        Some(previous)
    }

    /// Counters and versions.
    pub(crate) fn stats(&self) -> SlotStats {
        let versions = self.versions.load();
        let c = &self.counters;
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SlotStats {
            active: versions.active.id.clone(),
            active_origin: versions.active.origin.clone(),
            previous: versions.history.last().map(|v| v.id.clone()),
            embedded: self.embedded.id.clone(),
            calls: read(&c.calls),
            fallbacks: read(&c.fallbacks),
            unanswered: read(&c.unanswered),
            out_of_fuel: read(&c.out_of_fuel),
            deadlines: read(&c.deadlines),
            memory_faults: read(&c.memory_faults),
            traps: read(&c.traps),
            invalid: read(&c.invalid),
            suspicious: read(&c.suspicious),
            instantiation_failures: read(&c.instantiation_failures),
            loads: read(&c.loads),
            rejected: read(&c.rejected),
            rollbacks: read(&c.rollbacks),
            breaker_trips: read(&c.breaker_trips),
            last_breaker_trip: self
                .last_trip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            fuel_budget: self.runtime.fuel(),
        }
    }
}
