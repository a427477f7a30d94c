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
//! intermediate file would be applied; a quiet-period wait on top of the events is what gives
//! one wake-up per burst.
//!
//! On Linux the watch is inotify's, asked only for what can complete a change (a close after
//! writing, a create, a delete, a rename, the directory itself going), not for each `write(2)`,
//! open or attribute change. `notify` asks for all of those on a directory, so every write to
//! any file beside the configuration (a log written there, another program's output) woke its
//! thread: in the HTTP/2 benchmark, whose load generator logs each request into the directory
//! holding the gateway's configuration, that thread took about 11% of the gateway's CPU. Other
//! systems keep `notify`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the watched directories must stay quiet before a burst counts as finished.
pub const QUIET: Duration = Duration::from_millis(300);
/// A directory written to without pause is still looked at this often, so a steady trickle of
/// writes cannot postpone a reload forever.
const LONGEST_WAIT: Duration = Duration::from_secs(3);

/// Whether an event can have changed what a file holds. Opening, reading and closing a file
/// without writing cannot; neither can metadata (a `touch`).
#[cfg(not(target_os = "linux"))]
pub fn may_change_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
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
    events: backend::Events,
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
        backend::Events::start(what, dirs, Box::new(relevant)).map(|events| Watch { events })
    }

    /// Waits for the next change and for the burst it belongs to to end. None once the watcher
    /// has stopped.
    pub async fn settled(&mut self) -> Option<()> {
        self.events.next_change().await?;
        let started = tokio::time::Instant::now();
        while started.elapsed() < LONGEST_WAIT {
            match tokio::time::timeout(QUIET, self.events.next_change()).await {
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

type Relevant = Box<dyn Fn(&Path) -> bool + Send>;

#[cfg(target_os = "linux")]
mod backend {
    use super::Relevant;
    use futures_util::StreamExt;
    use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
    use std::path::PathBuf;

    /// What completes a change of content: a file closed after writing, created, removed or
    /// renamed in or out (editors' saves, a kubelet's `..data` swap), or the watched directory
    /// itself removed or moved. Not each write, open or attribute change.
    const CONTENT_EVENTS: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF);

    pub struct Events {
        stream: EventStream<Vec<u8>>,
        dirs: Vec<(WatchDescriptor, PathBuf)>,
        relevant: Relevant,
    }

    impl Events {
        pub fn start(what: &'static str, dirs: &[PathBuf], relevant: Relevant) -> Option<Self> {
            let inotify = match Inotify::init() {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(watched = what, error = %e, "cannot watch files; reload with SIGHUP");
                    return None;
                }
            };
            let mut watched = Vec::new();
            for dir in dirs {
                match inotify.watches().add(dir, CONTENT_EVENTS) {
                    Ok(wd) => watched.push((wd, dir.clone())),
                    Err(e) => tracing::warn!(watched = what, dir = %dir.display(), error = %e,
                        "cannot watch a directory; reload with SIGHUP"),
                }
            }
            if watched.is_empty() {
                return None;
            }
            // Room for a burst of events with long names (each is 16 bytes plus its name).
            match inotify.into_event_stream(vec![0u8; 16 * 1024]) {
                Ok(stream) => Some(Events {
                    stream,
                    dirs: watched,
                    relevant,
                }),
                Err(e) => {
                    tracing::warn!(watched = what, error = %e, "cannot watch files; reload with SIGHUP");
                    None
                }
            }
        }

        /// The next event that may have changed a relevant entry. None once the watch ended.
        pub async fn next_change(&mut self) -> Option<()> {
            while let Some(event) = self.stream.next().await {
                let event = event.ok()?;
                // The kernel dropped events: something may have changed.
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    return Some(());
                }
                // A watch removed (its directory went): the removal itself was reported.
                if event.mask.contains(EventMask::IGNORED) {
                    continue;
                }
                let Some((_, dir)) = self.dirs.iter().find(|(wd, _)| *wd == event.wd) else {
                    continue;
                };
                let path = match &event.name {
                    Some(name) => dir.join(name),
                    None => dir.clone(),
                };
                if (self.relevant)(&path) {
                    return Some(());
                }
            }
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod backend {
    use super::{may_change_content, Relevant};
    use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
    use std::path::PathBuf;
    use tokio::sync::mpsc;

    pub struct Events {
        _watcher: RecommendedWatcher,
        changes: mpsc::Receiver<()>,
    }

    impl Events {
        pub fn start(what: &'static str, dirs: &[PathBuf], relevant: Relevant) -> Option<Self> {
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
            (watching > 0).then_some(Events {
                _watcher: watcher,
                changes,
            })
        }

        /// The next event that may have changed a relevant entry. None once the watch ended.
        pub async fn next_change(&mut self) -> Option<()> {
            self.changes.recv().await
        }
    }
}

#[cfg(all(test, not(target_os = "linux")))]
mod tests {
    use super::*;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
        RenameMode,
    };
    use notify::EventKind;

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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;

    /// Whether the watch reports a change within a short wait.
    async fn reports(events: &mut backend::Events) -> bool {
        tokio::time::timeout(Duration::from_millis(200), events.next_change())
            .await
            .is_ok()
    }

    /// A busy file beside the watched one (a log, another program's output) is not seen at all
    /// while it is being written, even by a watch that finds every entry relevant: the thread
    /// or task that used to wake for each of its writes has nothing to wake for. What completes
    /// a change still is: a close after writing, a rename into place, a create, a remove.
    #[tokio::test]
    async fn writes_to_an_open_file_wake_nothing_and_completed_changes_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut events =
            backend::Events::start("test", &[dir.path().to_path_buf()], Box::new(|_| true))
                .unwrap();
        let mut log = std::fs::File::create(dir.path().join("busy.log")).unwrap();
        assert!(reports(&mut events).await, "the create");
        while reports(&mut events).await {}
        for n in 0..2_000 {
            writeln!(log, "line {n}").unwrap();
            log.flush().unwrap();
        }
        std::fs::read(dir.path().join("busy.log")).unwrap();
        let touched = std::fs::File::options()
            .append(true)
            .open(dir.path().join("busy.log"))
            .unwrap();
        touched.set_modified(std::time::SystemTime::now()).unwrap();
        assert!(
            !reports(&mut events).await,
            "writes, a read and a touch woke the watch"
        );

        drop(log);
        assert!(reports(&mut events).await, "the close after writing");
        drop(touched);
        while reports(&mut events).await {}
        std::fs::write(dir.path().join("new.toml"), "x").unwrap();
        assert!(reports(&mut events).await, "a file written in place");
        while reports(&mut events).await {}
        std::fs::rename(dir.path().join("new.toml"), dir.path().join("config.toml")).unwrap();
        assert!(reports(&mut events).await, "a rename into place");
        while reports(&mut events).await {}
        std::fs::remove_file(dir.path().join("config.toml")).unwrap();
        assert!(reports(&mut events).await, "a remove");
    }

    /// Only entries the caller finds relevant wake it.
    #[tokio::test]
    async fn changes_to_irrelevant_entries_wake_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = backend::Events::start(
            "test",
            &[dir.path().to_path_buf()],
            Box::new(|p: &Path| p.file_name().is_some_and(|n| n == "config.toml")),
        )
        .unwrap();
        std::fs::write(dir.path().join("other.toml"), "x").unwrap();
        std::fs::rename(dir.path().join("other.toml"), dir.path().join("else.toml")).unwrap();
        assert!(!reports(&mut events).await);
        std::fs::rename(dir.path().join("else.toml"), dir.path().join("config.toml")).unwrap();
        assert!(reports(&mut events).await);
    }
}
