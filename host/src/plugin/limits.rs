//! What a single plugin call may use.

use std::time::Duration;

/// The bounds every plugin call runs under. The defaults suit the seed's
/// plugins with a wide margin; operators raise them in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock backstop: a call (or an instantiation) still running
    /// after this long is interrupted (epoch deadline). It only catches
    /// stalls; a call's work is bounded by its fuel budget, which does not
    /// depend on how busy the machine is.
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// A call's fuel budget (WebAssembly instructions, counted by wasmtime)
    /// is the most that any conformance case of the slot's embedded default
    /// used, times this margin, and at least [`Limits::min_fuel`].
    /// Instantiation gets the same budget again.
    pub fuel_margin: u64,
    /// The smallest fuel budget a slot gets, whatever the defaults measured.
    pub min_fuel: u64,
    /// Linear memories one plugin instance may declare (all its core modules together).
    pub memories_per_component: u32,
    /// Tables one plugin instance may declare.
    pub tables_per_component: u32,
    /// Core module instances one plugin instance may create.
    pub core_instances_per_component: u32,
    /// Largest component file accepted (upload, watched directory, CLI), in bytes.
    pub component_bytes: usize,
    /// Most functions a component's core modules may define together;
    /// checked before compiling, so a compile bomb is refused in milliseconds.
    pub functions: u32,
    /// Largest function body accepted, in bytes (checked before compiling).
    pub function_body_bytes: usize,
    /// Code of all function bodies together, in bytes (checked before compiling).
    pub code_bytes: usize,
    /// Data segments together, in bytes (checked before compiling).
    pub data_bytes: usize,
    /// Address space the compiler child may use, in bytes (`RLIMIT_AS`),
    /// when candidates are compiled in a child process.
    pub compile_memory_bytes: u64,
    /// CPU seconds the compiler child may use (`RLIMIT_CPU`); it is killed
    /// after twice this much wall-clock time plus 5 s.
    pub compile_cpu_secs: u64,
    /// Circuit breaker: the active version is rolled back to the last
    /// known-good one when more than this many of its last
    /// [`Limits::breaker_window`] calls failed. 0 turns the breaker off.
    pub breaker_failures: u32,
    /// The number of recent calls the breaker looks at.
    pub breaker_window: u32,
    /// Linear memory a plugin instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Size of a call's result (the bytes of its strings), in bytes.
    pub output_bytes: usize,
    /// WebAssembly stack a call may use, in bytes.
    pub stack_bytes: usize,
    /// Calls one plugin instance serves before it is discarded; 1 gives
    /// every call a fresh sandbox. An instance is only ever reused for the
    /// same user (the sender of a message, the account of a route, the
    /// recipient of a reply), so nothing a plugin keeps in its memory
    /// reaches another user. An instance is discarded after any failed or
    /// refused call whatever this says.
    pub calls_per_instance: u32,
    /// Plugin calls that may run at the same time in one slot; each slot's
    /// pooling allocator reserves this many instance slots up front, so a
    /// plugin can exhaust only its own slot's room.
    pub max_concurrent_calls: u32,
    /// Log lines a single call may write; the rest are dropped and counted.
    pub log_lines_per_call: u32,
    /// Longest log line kept, in bytes; longer lines are cut.
    pub log_line_bytes: usize,
    /// Benchmarks only: no fuel metering (the wall-clock backstop alone
    /// bounds calls), to measure what metering costs. Never read from a file.
    #[doc(hidden)]
    #[serde(skip)]
    pub bench_without_fuel: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(1000),
            fuel_margin: 50,
            min_fuel: 2_000_000,
            memories_per_component: 4,
            tables_per_component: 8,
            core_instances_per_component: 16,
            component_bytes: 4 << 20,
            functions: 20_000,
            function_body_bytes: 1 << 20,
            code_bytes: 8 << 20,
            data_bytes: 8 << 20,
            compile_memory_bytes: 1 << 30,
            compile_cpu_secs: 20,
            breaker_failures: 10,
            breaker_window: 50,
            memory_bytes: 16 << 20,
            output_bytes: 64 << 10,
            stack_bytes: 512 << 10,
            calls_per_instance: 1000,
            max_concurrent_calls: 128,
            log_lines_per_call: 32,
            log_line_bytes: 1024,
            bench_without_fuel: false,
        }
    }
}

/// Durations written as whole milliseconds in configuration files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
