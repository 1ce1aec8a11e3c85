//! The sandbox every plugin call runs in: one wasmtime engine with a pooling
//! allocator, a clock thread for epoch deadlines, a store per instance with a
//! memory limiter (instances fresh per call or reused, see
//! [`Limits::calls_per_instance`]), and the one host function plugins get
//! (`log`).
//!
//! An instance only ever serves one user ([`WarmInstances`]). A user with
//! no idle instance of their own takes a spare: an instance made ahead by
//! the clock thread and never used. Used instances are dropped (their
//! memory reset for the pool) on the clock thread too, so neither cost
//! lands on a call while the clock thread keeps up; when it cannot, calls
//! do their own work.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};

use super::bindings::parser::switchboard::plugin::{host, types};
use super::world::World;
use super::{Limits, PluginError, SlotName};
use super::{compile, precheck, validate};

/// How often the clock thread advances the engine's epoch.
const TICK: Duration = Duration::from_millis(1);

/// Imports that Rust's standard library links into every `wasm32-wasip2`
/// component even when the plugin never uses them (panic messages, stdio,
/// process exit). The host satisfies them with functions that trap, so a
/// plugin that really calls one fails like any other trap. Every other
/// import (files, clocks, randomness, sockets, ...) is refused at load.
const STD_STUBS: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:io/poll",
];

/// Pool room for idle instances of one slot: up to six versions (active,
/// four replaced, embedded), [`IDLE_PER_VERSION`] idle instances and
/// [`SPARES_PER_VERSION`] spares each.
const IDLE_BUDGET: u32 = 6 * (IDLE_PER_VERSION + SPARES_PER_VERSION) as u32;

/// Idle instances one version keeps for reuse (each kept for one user).
pub(crate) const IDLE_PER_VERSION: usize = 8;

/// Instances one version keeps instantiated ahead, never used: a user with
/// no idle instance of their own takes one, so a first call pays no
/// instantiation while the clock thread keeps up.
pub(crate) const SPARES_PER_VERSION: usize = 8;

/// Chores that may wait for the clock thread before a refill is skipped.
const CHORES: usize = 64;

/// Used instances that may wait on the clock thread to be dropped; past
/// that, the calling thread drops its own. The pool has room for them.
const PENDING_DROPS: usize = 8;

/// Work taken off the calling thread: dropping used instances (resetting
/// their memory) and instantiating spares.
type Job = Box<dyn FnOnce() + Send>;

/// The fuel budget before a slot has measured its embedded default.
const UNMEASURED_FUEL: u64 = 1_000_000_000;

/// The interfaces the host itself provides, at a compatible version.
const PROVIDED: &[&str] = &["switchboard:plugin/host", "switchboard:plugin/types"];

/// The engine, its instance pool and linker for one slot, and the limits of
/// each call. Every slot (and a shadow router) has its own, so a plugin that
/// fills its pool cannot starve another slot.
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: Limits,
    slot: SlotName,
    /// Fuel each call and each instantiation gets.
    fuel: AtomicU64,
    /// The program candidates are compiled in (a child process under the
    /// compile budget); none compiles in this process.
    compiler: Mutex<Option<PathBuf>>,
    clock_stop: Arc<AtomicBool>,
    /// Work for the clock thread's next tick: a caller queues it without
    /// waking anyone.
    chores: Arc<Mutex<Vec<Job>>>,
    /// Instances queued on the clock thread to be dropped.
    pending_drops: Arc<AtomicUsize>,
}

impl Runtime {
    /// Sets up an engine for `slot` under `limits` and starts its clock thread.
    pub(crate) fn new(limits: Limits, slot: SlotName) -> Result<Runtime, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let config = engine_config(&limits, true);
        let engine = Engine::new(&config).map_err(engine_error)?;

        let mut linker = Linker::new(&engine);
        host::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
            .map_err(engine_error)?;
        types::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)
            .map_err(engine_error)?;

        let clock_stop = Arc::new(AtomicBool::new(false));
        let chores: Arc<Mutex<Vec<Job>>> = Arc::default();
        let (clock_engine, stop, todo) = (engine.clone(), clock_stop.clone(), chores.clone());
        thread::Builder::new()
            .name(format!("plugin-clock-{slot}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    clock_engine.increment_epoch();
                    let jobs = std::mem::take(&mut *todo.lock().unwrap_or_else(|e| e.into_inner()));
                    for job in jobs {
                        job();
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the clock thread: {e}")))?;

        Ok(Runtime {
            engine,
            linker,
            limits,
            slot,
            fuel: AtomicU64::new(UNMEASURED_FUEL),
            compiler: Mutex::new(None),
            clock_stop,
            chores,
            pending_drops: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The limits of every call.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The fuel each call and each instantiation gets.
    pub(crate) fn fuel(&self) -> u64 {
        self.fuel.load(Ordering::Relaxed)
    }

    /// The program candidates are compiled in, if any.
    pub(crate) fn compiler(&self) -> Option<PathBuf> {
        self.compiler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Compiles candidates in child processes of `program` from now on.
    pub(crate) fn set_compiler(&self, program: Option<PathBuf>) {
        *self.compiler.lock().unwrap_or_else(|e| e.into_inner()) = program;
    }

    /// Sets the fuel budget.
    pub(crate) fn set_fuel(&self, fuel: u64) {
        self.fuel.store(fuel, Ordering::Relaxed);
    }

    /// Sizes the fuel budget from what the embedded default used at most in
    /// one conformance case: that times [`Limits::fuel_margin`], at least
    /// [`Limits::min_fuel`].
    pub(crate) fn size_fuel(&self, measured: u64) -> u64 {
        let budget = measured
            .saturating_mul(self.limits.fuel_margin.max(1))
            .max(self.limits.min_fuel);
        self.fuel.store(budget, Ordering::Relaxed);
        tracing::debug!(slot = %self.slot, measured, budget, "plugin fuel budget");
        budget
    }

    /// Checks the component's shape with `wasmparser` (size, functions,
    /// code, data, per the limits), then compiles `bytes`, checks its
    /// imports and type-checks it against `W`'s world.
    pub(crate) fn prepare<W: World>(&self, bytes: &[u8]) -> Result<W::Pre, PluginError> {
        precheck::check(bytes, &self.limits)?;
        let component = match self.compiler() {
            Some(program) => {
                let code = compile::in_child(&program, &self.limits, bytes)?;
                // SAFETY: `code` is what wasmtime's `serialize` wrote in our
                // own compiler child for these engine settings; wasmtime
                // checks its header (version, settings) before using it.
                unsafe { Component::deserialize(&self.engine, &code) }
                    .map_err(|e| PluginError::Compile(format!("{e:#}")))?
            }
            None => Component::new(&self.engine, bytes)
                .map_err(|e| PluginError::Compile(format!("{e:#}")))?,
        };
        let mut linker = self.linker.clone();
        check_imports(&self.engine, &component)?;
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            slot: W::SLOT,
            reason: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        W::prepare(pre).map_err(wrong_world)
    }

    /// Runs `call` on an instance of `pre` under the limits: an idle one
    /// that served the same `owner` from `warm` if there is one, else one
    /// of `warm`'s spares (instantiated ahead, never used), else a fresh
    /// one. `check` judges the result; the instance goes back to `warm`
    /// only if the call succeeded, its result passed `check`, and it has
    /// served fewer than [`Limits::calls_per_instance`] calls. With no
    /// `warm`, every call gets a fresh instance. Instances that are done
    /// are dropped, and spares made, on the runtime's clock thread.
    /// Returns the result and the fuel the call used.
    pub(crate) fn run<W: World, R>(
        &self,
        pre: &W::Pre,
        version: &str,
        warm: Option<(&Arc<WarmInstances<W>>, &str)>,
        call: impl FnOnce(&W, &mut Store<Sandbox>) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<(R, u64), Failure> {
        let mut reused = None;
        if let Some((warm, owner)) = warm {
            let (instance, refill) = warm.take(owner);
            reused = instance;
            if refill {
                self.refill(pre, version, warm);
            }
        }
        // A call that finds neither an instance of its owner's nor a spare
        // means calls come faster than spares are made: it does its own
        // work, so the clock thread is not also asked to drop.
        let keeping_up = reused.is_some();
        let mut instance = match reused {
            Some(instance) => instance,
            None => instantiate(&self.engine, &self.limits, self.fuel(), pre, version)?,
        };
        let store = &mut instance.store;
        store.data_mut().start_call(&self.limits);
        arm(store, &self.limits, self.fuel());
        let result = call(&instance.bindings, store);
        let used = match store.get_fuel() {
            Ok(left) => self.fuel().saturating_sub(left),
            Err(_) => 0,
        };
        let sandbox = store.data();
        if sandbox.logs_dropped > 0 {
            tracing::warn!(
                slot = %sandbox.slot,
                version = %sandbox.version,
                dropped = sandbox.logs_dropped,
                "plugin log lines over the per-call limit were dropped"
            );
        }
        let memory_denied = sandbox.memory_denied;
        instance.calls += 1;
        let outcome = match result {
            Err(e) => Err(Failure::classify(&e, memory_denied)),
            Ok(value) => match check(&value) {
                Err(why) => Err(Failure::Invalid(why)),
                Ok(()) => Ok(value),
            },
        };
        let done = match (&outcome, warm) {
            (Ok(_), Some((warm, owner))) if instance.calls < self.limits.calls_per_instance => {
                warm.put(owner, instance)
            }
            _ => Some(instance),
        };
        match done {
            Some(done) if keeping_up => self.discard(done),
            done => drop(done),
        }
        outcome.map(|value| (value, used))
    }

    /// Drops `instance` (which resets its memory for the pool) on the
    /// clock thread, or here if [`PENDING_DROPS`] are queued already.
    fn discard<W: World>(&self, instance: Instance<W>) {
        if self.pending_drops.fetch_add(1, Ordering::AcqRel) >= PENDING_DROPS {
            self.pending_drops.fetch_sub(1, Ordering::AcqRel);
            return drop(instance);
        }
        let pending = self.pending_drops.clone();
        let job: Job = Box::new(move || {
            drop(instance);
            pending.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(job) = self.chore(job) {
            job();
        }
    }

    /// Queues `job` for the clock thread's next tick, unless [`CHORES`] are
    /// queued already.
    fn chore(&self, job: Job) -> Result<(), Job> {
        let mut chores = self.chores.lock().unwrap_or_else(|e| e.into_inner());
        if chores.len() >= CHORES {
            return Err(job);
        }
        chores.push(job);
        Ok(())
    }

    /// Asks the clock thread to bring `warm`'s spares back up to
    /// [`SPARES_PER_VERSION`]. A spare that cannot be made (the pool is
    /// full, say) is left to the calls, which then instantiate their own.
    fn refill<W: World>(&self, pre: &W::Pre, version: &str, warm: &Arc<WarmInstances<W>>) {
        let (engine, limits, fuel) = (self.engine.clone(), self.limits.clone(), self.fuel());
        let (pre, version, target) = (pre.clone(), version.to_string(), warm.clone());
        let job: Job = Box::new(move || {
            // More new users since the last refill than there are spares
            // means calls come faster than spares are made, and they
            // instantiate their own: make one, so that their
            // instantiations do not also compete with ours.
            let mut budget = if target.take_demand() > target.spares {
                1
            } else {
                usize::MAX
            };
            while budget > 0 && target.spare_count() < target.spares {
                match instantiate(&engine, &limits, fuel, &pre, &version) {
                    Ok(instance) => target.add_spare(instance),
                    Err(_) => break,
                }
                budget -= 1;
            }
            target.refilled();
        });
        if self.chore(job).is_err() {
            warm.refilled();
        }
    }
}

/// Gives `store` a fresh fuel budget of `fuel`, a fresh copy budget and the
/// wall-clock backstop from now.
fn arm(store: &mut Store<Sandbox>, limits: &Limits, fuel: u64) {
    let ticks = limits
        .deadline
        .as_millis()
        .div_ceil(TICK.as_millis())
        .max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    if !limits.bench_without_fuel {
        // Fuel is enabled on this engine, so this cannot fail.
        let _ = store.set_fuel(fuel);
    }
    store.set_hostcall_fuel(hostcall_fuel(limits));
}

/// A fresh instance of `pre` in a store of its own on `engine`.
fn instantiate<W: World>(
    engine: &Engine,
    limits: &Limits,
    fuel: u64,
    pre: &W::Pre,
    version: &str,
) -> Result<Instance<W>, Failure> {
    let sandbox = Sandbox {
        slot: W::SLOT,
        version: version.to_string(),
        memory_cap: limits.memory_bytes,
        memory_denied: false,
        log_budget: 0,
        log_line_bytes: limits.log_line_bytes,
        logs_dropped: 0,
    };
    let mut store = Store::new(engine, sandbox);
    store.limiter(|s| s);
    arm(&mut store, limits, fuel);
    let bindings = W::instantiate(pre, &mut store).map_err(|e| match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::Fuel,
        Some(Trap::Interrupt) => Failure::Deadline,
        _ => Failure::Instantiate(format!("{e:#}")),
    })?;
    Ok(Instance {
        store,
        bindings,
        calls: 0,
    })
}

/// The engine settings of a slot under `limits`; `pooled` adds the instance
/// pool (the compiler child compiles without one: code is the same).
pub(crate) fn engine_config(limits: &Limits, pooled: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(!limits.bench_without_fuel)
        .max_wasm_stack(limits.stack_bytes);
    if !pooled {
        return config;
    }
    // Calls in flight, plus the idle instances and spares each version may
    // keep, plus the used ones waiting on the clock thread to be dropped.
    let instances = limits
        .max_concurrent_calls
        .max(1)
        .saturating_add(IDLE_BUDGET)
        .saturating_add(PENDING_DROPS as u32);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .max_memories_per_component(limits.memories_per_component)
        .max_tables_per_component(limits.tables_per_component)
        .max_core_instances_per_component(limits.core_instances_per_component)
        .max_memory_size(limits.memory_bytes)
        // Reset a freed memory by rewriting only the pages the call
        // dirtied (PAGEMAP_SCAN, Linux 6.7+), keeping them mapped, so
        // the next instance takes no page faults.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// What lifting one result (or one `log` line) may copy out of the guest:
/// the output cap plus room for the values' own structure. wasmtime counts
/// it while it lifts, so a result whose list entries all point at one big
/// string is stopped before the host copies it many times over.
fn hostcall_fuel(limits: &Limits) -> usize {
    limits
        .output_bytes
        .max(limits.log_line_bytes)
        .saturating_mul(4)
        .max(64 << 10)
}

/// A live plugin instance with its store.
pub(crate) struct Instance<W> {
    store: Store<Sandbox>,
    bindings: W,
    calls: u32,
}

/// Idle instances of one plugin version, kept for the next calls of the
/// user each last served. An instance is never handed to another user.
pub(crate) struct WarmInstances<W> {
    idle: Mutex<Idle<W>>,
    max_idle: usize,
    spares: usize,
}

/// A version's instances between calls.
struct Idle<W> {
    /// Used instances, each with the user it served, least recent first.
    kept: Vec<(String, Instance<W>)>,
    /// Instances no call has used yet.
    spares: Vec<Instance<W>>,
    /// A refill is queued or running on the clock thread.
    refilling: bool,
    /// Calls that wanted a fresh instance since the last refill began.
    demand: usize,
}

impl<W> WarmInstances<W> {
    /// Keeps at most `max_idle` used instances and `spares` unused ones.
    pub(crate) fn new(max_idle: usize, spares: usize) -> WarmInstances<W> {
        WarmInstances {
            idle: Mutex::new(Idle {
                kept: Vec::new(),
                spares: Vec::new(),
                refilling: false,
                demand: 0,
            }),
            max_idle,
            spares,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<W>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle instance that last served `owner`, else an unused spare, if
    /// any; and whether the spares should be refilled (the caller asks the
    /// clock thread, once until [`WarmInstances::refilled`]).
    fn take(&self, owner: &str) -> (Option<Instance<W>>, bool) {
        let mut idle = self.lock();
        let instance = match idle.kept.iter().rposition(|(o, _)| o == owner) {
            Some(at) => Some(idle.kept.remove(at).1),
            None => {
                idle.demand += 1;
                idle.spares.pop()
            }
        };
        let refill = !idle.refilling && idle.spares.len() < self.spares;
        idle.refilling |= refill;
        (instance, refill)
    }

    /// Keeps `instance` for `owner`'s next call. Returns the least recently
    /// kept instance when the version had `max_idle` already (or `instance`
    /// itself when it keeps none), for the caller to drop.
    fn put(&self, owner: &str, instance: Instance<W>) -> Option<Instance<W>> {
        if self.max_idle == 0 {
            return Some(instance);
        }
        let mut idle = self.lock();
        let evicted = (idle.kept.len() >= self.max_idle).then(|| idle.kept.remove(0).1);
        idle.kept.push((owner.to_string(), instance));
        evicted
    }

    /// How many spares there are.
    fn spare_count(&self) -> usize {
        self.lock().spares.len()
    }

    /// Calls that wanted a fresh instance since the last call of this.
    fn take_demand(&self) -> usize {
        std::mem::take(&mut self.lock().demand)
    }

    /// Adds an unused instance.
    fn add_spare(&self, instance: Instance<W>) {
        self.lock().spares.push(instance);
    }

    /// The refill is over (done, failed or skipped).
    fn refilled(&self) {
        self.lock().refilling = false;
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.clock_stop.store(true, Ordering::Relaxed);
    }
}

/// Refuses any import the host neither provides nor stubs.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), PluginError> {
    let ty = component.component_type();
    // A plugin built against another version of the contract is named as
    // such, before the type check would give a less helpful error.
    let ours = |name: &str| {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        if interface.starts_with("switchboard:plugin/") && version != super::PACKAGE_VERSION {
            return Err(PluginError::Version {
                built: version.to_string(),
            });
        }
        Ok(())
    };
    for (name, _) in ty.exports(engine) {
        ours(name)?;
    }
    for (name, _) in ty.imports(engine) {
        ours(name)?;
        let (interface, _) = name.split_once('@').unwrap_or((name, ""));
        if PROVIDED.contains(&interface) {
            continue;
        }
        if STD_STUBS.contains(&interface) {
            continue;
        }
        return Err(PluginError::Import(name.to_string()));
    }
    Ok(())
}

/// The state of one plugin call: its memory limiter and log budget.
pub(crate) struct Sandbox {
    slot: SlotName,
    version: String,
    memory_cap: usize,
    memory_denied: bool,
    log_budget: u32,
    log_line_bytes: usize,
    logs_dropped: u32,
}

impl Sandbox {
    /// Resets the per-call state before a call.
    fn start_call(&mut self, limits: &Limits) {
        self.memory_denied = false;
        self.log_budget = limits.log_lines_per_call;
        self.logs_dropped = 0;
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl host::Host for Sandbox {
    fn log(&mut self, level: host::Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped = self.logs_dropped.saturating_add(1);
            return;
        }
        self.log_budget -= 1;
        let message = escape(cut(&message, self.log_line_bytes));
        let (slot, version) = (self.slot, &self.version);
        match level {
            host::Level::Debug => tracing::debug!(%slot, %version, "plugin: {message}"),
            host::Level::Info => tracing::info!(%slot, %version, "plugin: {message}"),
            host::Level::Warn => tracing::warn!(%slot, %version, "plugin: {message}"),
            host::Level::Error => tracing::error!(%slot, %version, "plugin: {message}"),
        }
    }
}

impl types::Host for Sandbox {}

/// `text` with every control character (CR and LF included), line and
/// paragraph separator and bidirectional control written as an escape, so a
/// plugin's log line stays one line and cannot forge a host log line.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || validate::deceptive(c)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Why one call of one version did not give a usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It used up its fuel budget (instructions).
    Fuel,
    /// It was still running at the wall-clock backstop.
    Deadline,
    /// It asked for more memory than its cap.
    Memory,
    /// It overflowed its stack.
    StackOverflow,
    /// It trapped (a panic, an abort, an out-of-bounds access, a stubbed import...).
    Trap(String),
    /// It could not be instantiated (e.g. too many calls at once).
    Instantiate(String),
    /// It returned something the contract does not allow.
    Invalid(String),
}

impl Failure {
    fn classify(error: &wasmtime::Error, memory_denied: bool) -> Failure {
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::Fuel,
            Some(Trap::Interrupt) => Failure::Deadline,
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            Some(_) if memory_denied => Failure::Memory,
            Some(trap) => Failure::Trap(trap.to_string()),
            None if memory_denied => Failure::Memory,
            None => {
                let cause = error.root_cause().to_string();
                if cause.contains("fuel allocated for hostcalls") {
                    Failure::Invalid("a result (or log line) over the host's copy budget".into())
                } else if cause.starts_with("unknown import") {
                    Failure::Trap(format!(
                        "{cause} (plugins get no stdio, environment or exit; a panic ends here too)"
                    ))
                } else {
                    Failure::Trap(cause)
                }
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Fuel => f.write_str("used up its fuel budget"),
            Failure::Deadline => f.write_str("was still running at the wall-clock backstop"),
            Failure::Memory => f.write_str("exceeded its memory cap"),
            Failure::StackOverflow => f.write_str("overflowed its stack"),
            Failure::Trap(why) => write!(f, "trapped: {why}"),
            Failure::Instantiate(why) => write!(f, "could not be instantiated: {why}"),
            Failure::Invalid(why) => write!(f, "returned an invalid result: {why}"),
        }
    }
}
