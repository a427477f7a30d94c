//! How the development platform's state is kept on disk: a snapshot (`state.json`, the whole
//! state) and an append-only journal (`state.journal`) with one JSON line per change, holding
//! the new value of every entity the change touched (or `null` for one it removed). A change is
//! acknowledged only once its line is written and fsynced, so a write costs one short append
//! and one fsync whatever the size of the directory, and a crash (kill -9 included) loses
//! nothing that was acknowledged.
//!
//! When the journal outgrows the snapshot it is compacted in the background: under the state
//! lock the journal is renamed to `state.journal.old` and a fresh one started, then a thread
//! writes the snapshot of that moment and removes the old journal. Loading reads the snapshot,
//! then replays `state.journal.old` and `state.journal`. Lines hold whole entity values, so
//! replaying a line the snapshot already contains sets what the snapshot holds: a crash at any
//! point of a compaction loads the same state. A start that replayed anything compacts at once.
//!
//! Memory holds the state and nothing of its history.

use super::error::DevPlatformError;
use super::model::Delta;
use super::store::State;
use crate::fsutil::{write_atomically, Access};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const STATE_FILE: &str = "state.json";
const JOURNAL_FILE: &str = "state.journal";
const OLD_JOURNAL_FILE: &str = "state.journal.old";
/// A journal smaller than this is never compacted: a near-empty platform would otherwise
/// rewrite its snapshot every few writes.
const MIN_COMPACTION_BYTES: u64 = 256 * 1024;

/// The open journal of a data directory.
pub(crate) struct Journal {
    dir: PathBuf,
    file: File,
    /// Bytes in `state.journal` that are complete, acknowledged lines.
    bytes: u64,
    /// The snapshot's size when it was last written; the journal is compacted past it.
    snapshot_bytes: Arc<AtomicU64>,
    /// A background compaction is writing the snapshot.
    compacting: Arc<AtomicBool>,
    /// Serialises writers of `state.json` (the background thread and a synchronous compaction)
    /// and counts the synchronous ones: a background snapshot taken before one of them is
    /// older than what it wrote and must not replace it.
    snapshot_lock: Arc<Mutex<u64>>,
    /// A failed append could not be cut back off the file: the next change compacts instead.
    damaged: bool,
}

/// Loads the state of `dir` (the snapshot, then both journals) and opens the journal for
/// appending. `None` when the directory holds no snapshot yet.
pub(crate) fn load(dir: &Path) -> Result<Option<(State, Journal)>, DevPlatformError> {
    let path = dir.join(STATE_FILE);
    let mut state = match fs::read(&path) {
        Ok(bytes) => State::from_json(&bytes).map_err(|reason| DevPlatformError::Corrupt {
            path: path.clone(),
            reason,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DevPlatformError::Io { path, source }),
    };
    let mut replayed = 0;
    let mut rewrite = dir.join(OLD_JOURNAL_FILE).exists();
    for name in [OLD_JOURNAL_FILE, JOURNAL_FILE] {
        let (applied, torn) = replay(&dir.join(name), &mut state)?;
        replayed += applied;
        rewrite |= torn || applied > 0;
    }
    if rewrite {
        // The replayed state is checked as a snapshot is (names, members, keys), then written
        // as the new snapshot, which also drops a line torn by a crash.
        let bytes = state.to_json().map_err(DevPlatformError::Encode)?;
        state = State::from_json(&bytes).map_err(|reason| DevPlatformError::Corrupt {
            path: dir.join(JOURNAL_FILE),
            reason: format!("the state after replaying the journal is invalid: {reason}"),
        })?;
        tracing::info!(changes = replayed, dir = %dir.display(), "development platform: journal replayed and compacted");
    }
    let journal = Journal::start(dir, &state, rewrite)?;
    Ok(Some((state, journal)))
}

/// Applies the lines of one journal file; a last line without its newline is a write that was
/// never acknowledged (the process died while writing it) and is left out. Returns the lines
/// applied and whether such a torn line was found (the file must then not be appended to).
fn replay(path: &Path, state: &mut State) -> Result<(usize, bool), DevPlatformError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, false)),
        Err(source) => {
            return Err(DevPlatformError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut applied = 0;
    let mut rest = bytes.as_slice();
    let mut line_number = 0;
    while !rest.is_empty() {
        line_number += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            tracing::warn!(path = %path.display(), line = line_number,
                "development platform: ignoring an unfinished last journal line (never acknowledged)");
            return Ok((applied, true));
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let delta: Delta = serde_json::from_slice(line).map_err(|e| DevPlatformError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {line_number}: {e}"),
        })?;
        state.apply(delta);
        applied += 1;
    }
    Ok((applied, false))
}

impl Journal {
    /// Starts a data directory's first snapshot (a new platform), with an empty journal.
    pub fn create(dir: &Path, state: &State) -> Result<Journal, DevPlatformError> {
        Journal::start(dir, state, true)
    }

    /// Opens `state.journal` for appending; with `write_snapshot`, first writes `state` as the
    /// snapshot and empties both journals.
    fn start(dir: &Path, state: &State, write_snapshot: bool) -> Result<Journal, DevPlatformError> {
        let snapshot_path = dir.join(STATE_FILE);
        let snapshot_bytes = if write_snapshot {
            let bytes = state.to_json().map_err(DevPlatformError::Encode)?;
            write_atomically(&snapshot_path, &bytes, Access::OwnerOnly)
                .map_err(DevPlatformError::io(&snapshot_path))?;
            for name in [OLD_JOURNAL_FILE, JOURNAL_FILE] {
                remove_if_present(&dir.join(name))?;
            }
            bytes.len() as u64
        } else {
            fs::metadata(&snapshot_path)
                .map_err(DevPlatformError::io(&snapshot_path))?
                .len()
        };
        let (file, bytes) = open_append(&dir.join(JOURNAL_FILE))?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            bytes,
            snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
            compacting: Arc::new(AtomicBool::new(false)),
            snapshot_lock: Arc::new(Mutex::new(0)),
            damaged: false,
        })
    }

    /// Makes a change durable: called with the state lock held, after the change was applied
    /// to a copy and before it is swapped in, so nothing is acknowledged before its line is on
    /// disk. `after` is the state with the change, for a compaction.
    pub fn record(&mut self, delta: &Delta, after: &State) -> Result<(), DevPlatformError> {
        if self.damaged {
            return self.compact_now(after);
        }
        let mut line = serde_json::to_vec(delta).map_err(DevPlatformError::Encode)?;
        line.push(b'\n');
        let path = self.dir.join(JOURNAL_FILE);
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // A partial line would swallow the next one: cut it off, or compact next time.
            if self.file.set_len(self.bytes).is_err() {
                self.damaged = true;
            }
            return Err(DevPlatformError::Io { path, source });
        }
        self.bytes += line.len() as u64;
        let threshold = self
            .snapshot_bytes
            .load(Ordering::SeqCst)
            .max(MIN_COMPACTION_BYTES);
        if self.bytes > threshold && !self.compacting.load(Ordering::SeqCst) {
            if let Err(e) = self.compact_in_background(after) {
                // The change itself is durable; compaction is tried again on a later change.
                tracing::warn!(error = %e, "development platform: journal compaction failed to start");
            }
        }
        Ok(())
    }

    /// Rotates the journal and lets a thread write the snapshot of `state`.
    fn compact_in_background(&mut self, state: &State) -> Result<(), DevPlatformError> {
        let old = self.dir.join(OLD_JOURNAL_FILE);
        if old.exists() {
            // An earlier compaction did not finish: the rotated journal must not be replaced.
            return self.compact_now(state);
        }
        let current = self.dir.join(JOURNAL_FILE);
        fs::rename(&current, &old).map_err(DevPlatformError::io(&current))?;
        let (file, bytes) = open_append(&current)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.bytes = bytes;
        self.compacting.store(true, Ordering::SeqCst);
        let snapshot = state.clone();
        let dir = self.dir.clone();
        let compacting = self.compacting.clone();
        let snapshot_bytes = self.snapshot_bytes.clone();
        let lock = self.snapshot_lock.clone();
        let generation = *lock.lock().unwrap_or_else(|e| e.into_inner());
        let spawned = std::thread::Builder::new()
            .name("devplatform-compact".into())
            .spawn(move || {
                let writing = lock.lock().unwrap_or_else(|e| e.into_inner());
                if *writing != generation {
                    // A newer snapshot was written meanwhile, and the rotated journal with it.
                    compacting.store(false, Ordering::SeqCst);
                    return;
                }
                match write_snapshot(&dir, &snapshot) {
                    Ok(size) => {
                        snapshot_bytes.store(size, Ordering::SeqCst);
                        tracing::debug!(bytes = size, "development platform: journal compacted");
                    }
                    Err(e) => tracing::warn!(error = %e,
                        "development platform: background compaction failed; the journal is kept"),
                }
                compacting.store(false, Ordering::SeqCst);
            });
        if let Err(source) = spawned {
            self.compacting.store(false, Ordering::SeqCst);
            return Err(DevPlatformError::Io {
                path: self.dir.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Writes the snapshot of `state` now and empties both journals (at a clean stop, after a
    /// failed append, or when a background compaction did not finish).
    pub fn compact_now(&mut self, state: &State) -> Result<(), DevPlatformError> {
        let mut writing = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        *writing += 1;
        let size = write_snapshot(&self.dir, state)?;
        let current = self.dir.join(JOURNAL_FILE);
        // Lines left in the journal would only set values the snapshot already holds, so a
        // crash before the truncation loads the same state.
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(DevPlatformError::io(&current))?;
        self.bytes = 0;
        self.damaged = false;
        self.snapshot_bytes.store(size, Ordering::SeqCst);
        Ok(())
    }
}

/// Writes the snapshot, then removes the rotated journal it contains.
fn write_snapshot(dir: &Path, state: &State) -> Result<u64, DevPlatformError> {
    let path = dir.join(STATE_FILE);
    let bytes = state.to_json().map_err(DevPlatformError::Encode)?;
    write_atomically(&path, &bytes, Access::OwnerOnly).map_err(DevPlatformError::io(&path))?;
    remove_if_present(&dir.join(OLD_JOURNAL_FILE))?;
    sync_dir(dir)?;
    Ok(bytes.len() as u64)
}

fn open_append(path: &Path) -> Result<(File, u64), DevPlatformError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        // Lines hold password hashes, as the snapshot does.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(DevPlatformError::io(path))?;
    let bytes = file.metadata().map_err(DevPlatformError::io(path))?.len();
    Ok((file, bytes))
}

fn remove_if_present(path: &Path) -> Result<(), DevPlatformError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DevPlatformError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A created, renamed or removed file survives a crash only once its directory is synced.
fn sync_dir(dir: &Path) -> Result<(), DevPlatformError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DevPlatformError::io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
