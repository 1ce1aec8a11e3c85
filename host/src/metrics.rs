//! Latency histograms for `/metrics`, kept with the Prometheus project's
//! `prometheus-client` crate (the counters and gauges of `/metrics` are the
//! web module's own exposition): call set-up time and post-dial delay per
//! provider, plugin call latency per slot. Each is a cheap clone of shared
//! state: whoever observes holds one, `/metrics` encodes them all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of a per-provider histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// The provider's name.
    pub provider: String,
}

/// The label of a per-slot histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabel {
    /// `parser`, `router` or `replies`.
    pub slot: String,
}

/// A histogram family with fixed buckets.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_buckets() -> Histogram {
    // 50 ms … ~100 s: answering takes seconds, ringing starts in tenths.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

fn plugin_buckets() -> Histogram {
    // 10 µs … ~80 ms: a warm call takes microseconds, a cold one more.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

/// Seconds from dialling a leg to its answer, per provider.
pub fn call_setup() -> Histograms<ProviderLabel> {
    Family::new_with_constructor(call_buckets)
}

/// Seconds from dialling a leg to its first ringing (post-dial delay).
pub fn post_dial_delay() -> Histograms<ProviderLabel> {
    Family::new_with_constructor(call_buckets)
}

/// Seconds one plugin call takes, per slot.
pub fn plugin_calls() -> Histograms<SlotLabel> {
    Family::new_with_constructor(plugin_buckets)
}

/// The histograms `/metrics` shows.
pub struct HistogramSet {
    /// [`call_setup`].
    pub setup: Histograms<ProviderLabel>,
    /// [`post_dial_delay`].
    pub post_dial: Histograms<ProviderLabel>,
    /// [`plugin_calls`].
    pub plugins: Histograms<SlotLabel>,
}

impl HistogramSet {
    /// The Prometheus text of the histograms (`_bucket`, `_sum`, `_count`).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register(
            "switchboard_call_setup_seconds",
            "Seconds from dialling a leg to its answer, per provider",
            self.setup.clone(),
        );
        registry.register(
            "switchboard_post_dial_delay_seconds",
            "Seconds from dialling a leg to its first ringing, per provider",
            self.post_dial.clone(),
        );
        registry.register(
            "switchboard_plugin_call_seconds",
            "Seconds one plugin call takes, per slot",
            self.plugins.clone(),
        );
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &registry).is_err() {
            return String::new();
        }
        text
    }
}
