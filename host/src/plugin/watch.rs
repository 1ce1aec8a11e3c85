//! Hot reload from a watched plugin directory: `parser.wasm`, `router.wasm`
//! and `replies.wasm` are loaded when they appear or change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{PluginError, PluginHost, SlotName};

/// How long a file must be left alone after a write before it is loaded,
/// when the writer's close was not seen. A close or a rename into place
/// loads at once.
const SETTLE: Duration = Duration::from_millis(50);

/// Watches a plugin directory until dropped.
pub struct Watcher {
    watcher: Option<notify::RecommendedWatcher>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Dropping the notify watcher closes the channel, which ends the worker.
        self.watcher.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl PluginHost {
    /// Loads the slot files already in `dir`, then loads each again whenever
    /// it is written or renamed into place, until the returned [`Watcher`]
    /// is dropped. Every outcome is logged; a rejected file leaves the
    /// running version in place.
    pub fn watch(self: &Arc<Self>, dir: &Path) -> Result<Watcher, PluginError> {
        let watch_error = |reason: String| PluginError::Watch {
            path: dir.to_path_buf(),
            reason,
        };
        if !dir.is_dir() {
            return Err(watch_error("not a directory".into()));
        }
        let (tx, rx) = mpsc::channel::<(SlotName, bool)>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    return;
                };
                let now = matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Name(_))
                );
                let relevant = now
                    || matches!(
                        event.kind,
                        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
                    );
                if !relevant {
                    return;
                }
                for path in &event.paths {
                    let slot = path
                        .file_name()
                        .and_then(|name| name.to_str())
                        .and_then(SlotName::from_file_name);
                    if let Some(slot) = slot {
                        let _ = tx.send((slot, now));
                    }
                }
            })
            .map_err(|e| watch_error(e.to_string()))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(e.to_string()))?;

        for (slot, result) in self.load_dir(dir) {
            match result {
                Ok(version) => {
                    tracing::info!(%slot, %version, "plugin loaded from watched directory")
                }
                Err(e) => tracing::warn!(%slot, "plugin in watched directory refused: {e}"),
            }
        }

        tracing::info!(dir = %dir.display(), "watching plugin directory");
        let host = Arc::clone(self);
        let watched = dir.to_path_buf();
        let worker = thread::Builder::new()
            .name("plugin-watch".into())
            .spawn(move || reload_loop(&host, &watched, &rx))
            .map_err(|e| watch_error(e.to_string()))?;
        Ok(Watcher {
            watcher: Some(watcher),
            worker: Some(worker),
        })
    }
}

/// Loads slot files as their change events come in, debounced per slot.
fn reload_loop(host: &PluginHost, dir: &Path, events: &mpsc::Receiver<(SlotName, bool)>) {
    let mut pending: HashMap<SlotName, Instant> = HashMap::new();
    loop {
        let received = match pending.values().min() {
            Some(due) => events.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((slot, now)) => {
                let due = if now {
                    Instant::now()
                } else {
                    Instant::now() + SETTLE
                };
                pending.insert(slot, due);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<SlotName> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in due {
            pending.remove(&slot);
            let path: PathBuf = dir.join(slot.file_name());
            if !path.is_file() {
                continue;
            }
            match host.load_file(slot, &path) {
                Ok(version) => tracing::info!(%slot, %version, "plugin reloaded"),
                Err(e) => tracing::warn!(%slot, "plugin reload refused, running version kept: {e}"),
            }
        }
    }
}
