//! Watching files whose content a reload depends on (the configuration, certificates).
//!
//! Only events that can change content wake a reload: reading a file (which the reload itself
//! does) raises access events, and reacting to those made the gateway reload forever. A burst
//! of events (an editor's save, a kubelet's `..data` swap, a writer replacing cert and key one
//! after the other) settles into one wake-up once the directory has been quiet for
//! [`QUIET`]. Whether anything really changed is then decided by comparing content, by the
//! caller.
//!
//! `notify-debouncer-full` was considered: it emits each event once that event is older than
//! its timeout, so a burst longer than the timeout comes out in several batches and an
//! intermediate file would be applied; a quiet-period wait on top of `notify` is what gives one
//! wake-up per burst.

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the watched directories must stay quiet before a burst counts as finished.
pub const QUIET: Duration = Duration::from_millis(300);
/// A directory written to without pause is still looked at this often, so a steady trickle of
/// writes cannot postpone a reload forever.
const LONGEST_WAIT: Duration = Duration::from_secs(3);

/// Whether an event can have changed what a file holds. Opening, reading and closing a file
/// without writing cannot; neither can metadata (a `touch`).
pub fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // Kinds the backend could not classify: let the content comparison decide.
        EventKind::Any | EventKind::Other => true,
    }
}

/// Directories whose changes may change `paths`' content: their parents and, when they are
/// symlinks, the parents of what they point to (a file replaced at its real location is seen
/// too).
pub fn parent_dirs(paths: &[&Path]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let mut candidates = vec![p.to_path_buf()];
        if let Ok(real) = std::fs::canonicalize(p) {
            candidates.push(real);
        }
        for c in candidates {
            if let Some(parent) = c.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
                if !dirs.contains(&parent) {
                    dirs.push(parent);
                }
            }
        }
    }
    dirs
}

/// A running watch: dropping it stops watching.
pub struct Watch {
    _watcher: RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl Watch {
    /// Watches `dirs` (not recursively) for content changes of the entries `relevant` accepts.
    /// `what` names the watched thing in log lines. None (logged) when nothing can be watched;
    /// SIGHUP still reloads then.
    pub fn start(
        what: &'static str,
        dirs: &[PathBuf],
        relevant: impl Fn(&Path) -> bool + Send + 'static,
    ) -> Option<Watch> {
        // One pending wake-up is enough: the receiver waits for quiet anyway.
        let (tx, changes) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            let wake = match event {
                Ok(e) => may_change_content(&e.kind) && e.paths.iter().any(|p| relevant(p)),
                // The backend lost events (queue overflow): something may have changed.
                Err(_) => true,
            };
            if wake {
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(watched = what, error = %e, "cannot watch files; reload with SIGHUP");
                return None;
            }
        };
        let mut watching = 0;
        for dir in dirs {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => watching += 1,
                Err(e) => tracing::warn!(watched = what, dir = %dir.display(), error = %e,
                    "cannot watch a directory; reload with SIGHUP"),
            }
        }
        (watching > 0).then_some(Watch {
            _watcher: watcher,
            changes,
        })
    }

    /// Waits for the next change and for the burst it belongs to to end. None once the watcher
    /// has stopped.
    pub async fn settled(&mut self) -> Option<()> {
        self.changes.recv().await?;
        let started = tokio::time::Instant::now();
        while started.elapsed() < LONGEST_WAIT {
            match tokio::time::timeout(QUIET, self.changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => break,
            }
        }
        Some(())
    }
}

/// Waits for [`Watch::settled`], or forever when there is no watch, so it can sit in a
/// `select!` either way.
pub async fn settled(watch: &mut Option<Watch>) -> Option<()> {
    match watch {
        Some(w) => w.settled().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn reads_and_metadata_never_wake_a_reload() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }
}
