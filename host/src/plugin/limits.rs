//! What a single plugin call may use.

use std::time::Duration;

/// The bounds every plugin call runs under. The defaults suit the seed's
/// plugins with a wide margin; operators raise them in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU time a call may take before it is interrupted (epoch deadline).
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// Linear memory a plugin instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Size of a call's result (the bytes of its strings), in bytes.
    pub output_bytes: usize,
    /// WebAssembly stack a call may use, in bytes.
    pub stack_bytes: usize,
    /// Calls one plugin instance serves before it is discarded; 1 gives
    /// every call a fresh sandbox. An instance is discarded after any failed
    /// call whatever this says. Plugins must not keep state between calls
    /// (the contract makes them pure functions); reuse only saves the cost
    /// of instantiation.
    pub calls_per_instance: u32,
    /// Plugin calls that may run at the same time across all slots; the
    /// pooling allocator reserves this many instance slots up front.
    pub max_concurrent_calls: u32,
    /// Log lines a single call may write; the rest are dropped and counted.
    pub log_lines_per_call: u32,
    /// Longest log line kept, in bytes; longer lines are cut.
    pub log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(10),
            memory_bytes: 16 << 20,
            output_bytes: 64 << 10,
            stack_bytes: 512 << 10,
            calls_per_instance: 1000,
            max_concurrent_calls: 128,
            log_lines_per_call: 32,
            log_line_bytes: 1024,
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
