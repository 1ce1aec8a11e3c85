//! One plugin slot: its active version, the versions it replaced (for
//! fallback and rollback), the embedded default, and its counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::Store;

use super::sandbox::{Failure, IDLE_PER_VERSION, Runtime, Sandbox, WarmInstances};
use super::world::World;
use super::{Answer, PluginError};

/// How many replaced versions a slot keeps for fallback and rollback.
const HISTORY: usize = 4;

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
    warm: WarmInstances<W>,
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
    /// Version calls stopped at the CPU deadline.
    pub deadlines: u64,
    /// Version calls that hit the memory cap.
    pub memory_faults: u64,
    /// Version calls that trapped (panics, stack overflows, stubbed imports...).
    pub traps: u64,
    /// Version calls that returned an invalid result.
    pub invalid: u64,
    /// Version calls that could not be instantiated.
    pub instantiation_failures: u64,
    /// New versions made active.
    pub loads: u64,
    /// Candidate versions refused.
    pub rejected: u64,
    /// Rollbacks made.
    pub rollbacks: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    fallbacks: AtomicU64,
    unanswered: AtomicU64,
    deadlines: AtomicU64,
    memory_faults: AtomicU64,
    traps: AtomicU64,
    invalid: AtomicU64,
    instantiation_failures: AtomicU64,
    loads: AtomicU64,
    rejected: AtomicU64,
    rollbacks: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A slot of world `W`.
pub(crate) struct Slot<W: World> {
    versions: ArcSwap<Versions<W>>,
    embedded: Arc<Version<W>>,
    /// Serialises loads and rollbacks; calls never take it.
    writer: Mutex<()>,
    counters: Counters,
}

impl<W: World> Slot<W> {
    /// A slot running the embedded default `bytes`. The default runs its
    /// conformance set first, so limits it cannot work under are refused
    /// at start rather than failing every call later.
    pub(crate) fn embedded(runtime: &Runtime, bytes: &[u8]) -> Result<Slot<W>, PluginError> {
        let pre = Self::candidate(runtime, bytes).map_err(|e| match e {
            PluginError::Conformance { slot, reason } => PluginError::Limits(format!(
                "the embedded {slot} plugin fails its conformance set under these limits: {reason}"
            )),
            other => other,
        })?;
        Ok(Self::with(bytes, "embedded", pre))
    }

    /// A slot running `bytes` alone, with no other version to fall back to
    /// (a shadow candidate); refused like any candidate that fails its checks.
    pub(crate) fn single(
        runtime: &Runtime,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Slot<W>, PluginError> {
        let pre = Self::candidate(runtime, bytes)?;
        Ok(Self::with(bytes, origin, pre))
    }

    fn with(bytes: &[u8], origin: &str, pre: W::Pre) -> Slot<W> {
        let embedded = Arc::new(Version {
            id: VersionId::of(bytes),
            origin: origin.into(),
            pre,
            warm: WarmInstances::new(IDLE_PER_VERSION),
        });
        tracing::debug!(slot = %W::SLOT, version = %embedded.id, "ready");
        Slot {
            versions: ArcSwap::from_pointee(Versions {
                active: embedded.clone(),
                history: Vec::new(),
            }),
            embedded,
            writer: Mutex::new(()),
            counters: Counters::default(),
        }
    }

    /// Calls the active version; on failure the last known-good version,
    /// then the embedded default. `check` rejects results the contract
    /// forbids.
    pub(crate) fn call<R>(
        &self,
        runtime: &Runtime,
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
            let result = runtime
                .run::<W, R>(
                    &version.pre,
                    version.id.as_str(),
                    Some(&version.warm),
                    &call,
                )
                .and_then(|value| match check(&value) {
                    Ok(()) => Ok(value),
                    Err(why) => Err(Failure::Invalid(why)),
                });
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

    fn count(&self, failure: &Failure) {
        let c = &self.counters;
        bump(match failure {
            Failure::Deadline => &c.deadlines,
            Failure::Memory => &c.memory_faults,
            Failure::StackOverflow | Failure::Trap(_) => &c.traps,
            Failure::Invalid(_) => &c.invalid,
            Failure::Instantiate(_) => &c.instantiation_failures,
        });
    }

    /// Compiles, checks and conformance-tests `bytes`, then makes it active.
    pub(crate) fn load(
        &self,
        runtime: &Runtime,
        bytes: &[u8],
        origin: &str,
    ) -> Result<VersionId, PluginError> {
        let id = VersionId::of(bytes);
        if self.versions.load().active.id == id {
            return Ok(id);
        }
        let pre = match Self::candidate(runtime, bytes) {
            Ok(pre) => pre,
            Err(e) => {
                bump(&self.counters.rejected);
                tracing::warn!(slot = %W::SLOT, version = %id, %origin, "plugin rejected: {e}");
                return Err(e);
            }
        };
        let version = Arc::new(Version {
            id: id.clone(),
            origin: origin.to_string(),
            pre,
            warm: WarmInstances::new(IDLE_PER_VERSION),
        });
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

    /// Checks `bytes` as a candidate without loading it.
    pub(crate) fn check(runtime: &Runtime, bytes: &[u8]) -> Result<VersionId, PluginError> {
        Self::candidate(runtime, bytes).map(|_| VersionId::of(bytes))
    }

    fn candidate(runtime: &Runtime, bytes: &[u8]) -> Result<W::Pre, PluginError> {
        let pre = runtime.prepare::<W>(bytes)?;
        W::conformance(runtime, &pre).map_err(|reason| PluginError::Conformance {
            slot: W::SLOT,
            reason,
        })?;
        Ok(pre)
    }

    /// Makes the version the active one replaced active again.
    pub(crate) fn rollback(&self) -> Result<VersionId, PluginError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.versions.load_full();
        let mut history = current.history.clone();
        let Some(previous) = history.pop() else {
            return Err(PluginError::NothingToRollBack(W::SLOT));
        };
        let id = previous.id.clone();
        self.versions.store(Arc::new(Versions {
            active: previous,
            history,
        }));
        bump(&self.counters.rollbacks);
        tracing::info!(slot = %W::SLOT, version = %id, replaced = %current.active.id, "plugin rolled back");
        Ok(id)
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
            deadlines: read(&c.deadlines),
            memory_faults: read(&c.memory_faults),
            traps: read(&c.traps),
            invalid: read(&c.invalid),
            instantiation_failures: read(&c.instantiation_failures),
            loads: read(&c.loads),
            rejected: read(&c.rejected),
            rollbacks: read(&c.rollbacks),
        }
    }
}
