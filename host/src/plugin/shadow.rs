//! Shadow routing: a candidate router that answers every routing request
//! beside the active one, on its own thread and sandbox, without its answer
//! reaching any call. What it would have done differently is counted, so an
//! operator can try a routing policy on live traffic before promoting it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::slot::{Slot, VersionId};
use super::types::{Attempt, RouteRequest};
use super::world::Router;
use super::{Limits, PluginError, validate};

/// Routing requests waiting for the shadow; more are skipped, not queued.
const QUEUE: usize = 1024;
/// Differences kept as examples.
const RECENT: usize = 20;

/// What the shadow router did compared with the active one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShadowStats {
    /// The candidate's version id.
    pub version: String,
    /// Where it came from (an upload's file name).
    pub origin: String,
    /// When it was loaded, ms since the Unix epoch.
    pub since_ms: i64,
    /// Routing requests the active router answered while the shadow ran.
    pub requests: u64,
    /// Requests the shadow answered too.
    pub compared: u64,
    /// ... with the same providers in the same order.
    pub same: u64,
    /// ... with a different first choice.
    pub first_differs: u64,
    /// ... with the same first choice but a different failover order.
    pub order_differs: u64,
    /// Requests the shadow failed on (trap, deadline, invalid answer).
    pub failed: u64,
    /// Requests not given to the shadow because it was behind.
    pub skipped: u64,
    /// Where they differ: per destination prefix (the number's first two
    /// digits), requests compared and requests that differed.
    pub by_prefix: BTreeMap<String, PrefixFigures>,
    /// How first choices moved: `active → candidate` and how often.
    pub moves: BTreeMap<String, u64>,
    /// The latest differences, newest first.
    pub recent: VecDeque<Difference>,
}

/// Comparisons for one destination prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefixFigures {
    /// Requests compared.
    pub compared: u64,
    /// Requests where the two routers disagreed.
    pub differ: u64,
}

/// One routing request the two routers answered differently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// The leg being routed (`phone:4420…`).
    pub leg: String,
    /// The active router's providers, in order.
    pub active: Vec<String>,
    /// The candidate's providers, in order.
    pub candidate: Vec<String>,
}

struct Job {
    request: RouteRequest,
    active: Vec<String>,
}

/// A candidate router running in the shadow of the active one.
pub(crate) struct Shadow {
    jobs: SyncSender<Job>,
    /// What the worker found; the active path never takes this lock.
    stats: Arc<Mutex<ShadowStats>>,
    requests: AtomicU64,
    skipped: AtomicU64,
    bytes: Vec<u8>,
}

impl Shadow {
    /// Checks `bytes` as a router (compile, imports, conformance) and
    /// starts its thread, with a sandbox of its own under `limits`.
    /// Its calls get `fuel` each, the active router slot's budget.
    pub(crate) fn start(
        limits: &Limits,
        fuel: u64,
        compiler: Option<std::path::PathBuf>,
        bytes: &[u8],
        origin: &str,
    ) -> Result<Shadow, PluginError> {
        let limits = Limits {
            // One thread calls it.
            max_concurrent_calls: 2,
            ..limits.clone()
        };
        let slot = Slot::<Router>::single(limits, fuel, compiler, bytes, origin)?;
        let stats = Arc::new(Mutex::new(ShadowStats {
            version: VersionId::of(bytes).as_str().to_string(),
            origin: origin.to_string(),
            since_ms: now_ms(),
            ..ShadowStats::default()
        }));
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let shared = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("shadow-router".into())
            .spawn(move || {
                // Ends when the shadow is replaced or removed.
                while let Ok(job) = rx.recv() {
                    let limits = slot.runtime().limits();
                    let answer = slot.call(
                        &job.request.account.id,
                        |bindings, store| bindings.call_route(store, &job.request),
                        |attempts| validate::attempts(attempts, &job.request, limits),
                    );
                    let mut stats = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match answer {
                        Ok(a) => stats.compare(&job.request, &job.active, names(&a.value)),
                        Err(_) => stats.failed += 1,
                    }
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the shadow thread: {e}")))?;
        Ok(Shadow {
            jobs,
            stats,
            requests: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bytes: bytes.to_vec(),
        })
    }

    /// Gives the shadow a request the active router answered with `active`.
    /// Never blocks: when the shadow is behind, the request is skipped.
    pub(crate) fn offer(&self, request: &RouteRequest, active: &[Attempt]) {
        let job = Job {
            request: request.clone(),
            active: names(active),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.jobs.try_send(job)
        {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its figures so far.
    pub(crate) fn stats(&self) -> ShadowStats {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.requests = self.requests.load(Ordering::Relaxed);
        stats.skipped = self.skipped.load(Ordering::Relaxed);
        stats
    }

    /// The component, for promoting it.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl ShadowStats {
    fn compare(&mut self, request: &RouteRequest, active: &[String], candidate: Vec<String>) {
        self.compared += 1;
        let prefix: String = request.leg.address.chars().take(2).collect();
        let figures = self.by_prefix.entry(prefix).or_default();
        figures.compared += 1;
        if active == candidate.as_slice() {
            self.same += 1;
            return;
        }
        figures.differ += 1;
        if active.first() == candidate.first() {
            self.order_differs += 1;
        } else {
            self.first_differs += 1;
            let none = "(none)".to_string();
            let from = active.first().unwrap_or(&none);
            let to = candidate.first().unwrap_or(&none);
            *self.moves.entry(format!("{from} → {to}")).or_default() += 1;
        }
        self.recent.push_front(Difference {
            at_ms: now_ms(),
            leg: format!(
                "{}:{}",
                super::names::scheme_name(&request.leg.scheme),
                request.leg.address
            ),
            active: active.to_vec(),
            candidate,
        });
        self.recent.truncate(RECENT);
    }
}

fn names(attempts: &[Attempt]) -> Vec<String> {
    attempts.iter().map(|a| a.provider.clone()).collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::super::conformance::{candidate, route_request};
    use super::super::types::RouteRequest;
    use super::super::{PluginError, PluginHost, SlotName};
    use crate::plugin::Limits;

    fn guest(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("SWITCHBOARD_GUESTS_DIR")).join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// BEST answers every call and costs 0.02; CHEAP answers one in five and
    /// costs 0.005: the default router puts BEST first, least cost CHEAP.
    fn request(number: &str) -> RouteRequest {
        let mut request = route_request(
            None,
            vec![
                candidate("BEST", 20_000, Some(10_000), Some(60)),
                candidate("CHEAP", 5_000, Some(2_000), Some(60)),
            ],
        );
        request.leg.address = number.into();
        request
    }

    fn settled(host: &PluginHost, compared: u64) -> super::ShadowStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = host.shadow_stats().expect("a shadow runs");
            if s.compared + s.failed >= compared || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_shadow_is_compared_but_never_answers() {
        let host = PluginHost::new(Limits::default()).expect("host");
        assert!(host.shadow_stats().is_none());
        let refused = host.load_shadow(&guest("replies_de"), "wrong.wasm");
        assert!(
            matches!(refused, Err(PluginError::WrongWorld { .. })),
            "{refused:?}"
        );
        assert!(host.shadow_stats().is_none());

        host.load_shadow(&guest("router_least_cost"), "lcr.wasm")
            .expect("a router");
        for number in ["33111111111", "33222222222"] {
            let answer = host.route(&request(number)).expect("routed");
            assert_eq!(
                answer.value[0].provider, "BEST",
                "the active router decides"
            );
        }
        let s = settled(&host, 2);
        assert_eq!((s.requests, s.compared, s.same, s.failed), (2, 2, 0, 0));
        assert_eq!(s.first_differs, 2);
        assert_eq!(s.moves.get("BEST → CHEAP"), Some(&2));
        assert_eq!(
            s.by_prefix.get("33").map(|f| (f.compared, f.differ)),
            Some((2, 2))
        );
        assert_eq!(s.recent.len(), 2);
        assert_eq!(s.recent[0].leg, "phone:33222222222");
        assert_eq!(s.recent[0].active, ["BEST", "CHEAP"]);
        assert_eq!(s.recent[0].candidate, ["CHEAP", "BEST"]);
        assert_eq!(s.origin, "lcr.wasm");

        // Promotion makes it the router; the shadow is gone.
        host.promote_shadow().expect("promoted");
        assert!(host.shadow_stats().is_none());
        assert_eq!(
            host.stats(SlotName::Router).active_origin,
            "promoted shadow (lcr.wasm)"
        );
        let answer = host.route(&request("33111111111")).expect("routed");
        assert_eq!(answer.value[0].provider, "CHEAP");
        assert!(matches!(host.promote_shadow(), Err(PluginError::NoShadow)));
        assert!(!host.clear_shadow());
    }
}
