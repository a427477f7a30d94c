//! A development stand-in for the ThingWorx platform, in the same binary: the subset of the
//! native REST API that user and group provisioning uses (EntityServices, the User and Group
//! services, CurrentSessionInfo), with app-key, Basic and session authentication, persisted to
//! a JSON snapshot and an append-only journal (see `journal`) so the product runs end to end on
//! a fresh machine and in tests.

mod error;
pub mod faults;
mod httpd;
mod journal;
mod model;
mod precise_timer;
pub(crate) mod secret;
mod services;
mod session;
mod store;
mod tracked;

pub use error::DevPlatformError;
pub use faults::{FaultCounts, FaultKind, FaultRule, FaultSpec};

use crate::fsutil::{write_atomically, Access};
use crate::random::NoRandom;
use error::Fault;
use journal::Journal;
use secret::PasswordHash;
use session::Sessions;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use store::State;
use tokio_util::sync::CancellationToken;

const PASSWORD_FILE: &str = "administrator.password";
/// A `slow` answer comes this late unless told otherwise: past the gateway's default
/// `upstream.request_timeout` (60 s).
const DEFAULT_SLOW: std::time::Duration = std::time::Duration::from_secs(61);

/// Which ThingWorx the development platform behaves like, where versions are known to differ
/// (platform-contract.md): 8.x looks names up case-sensitively, has a 10-character minimum
/// password and no `projectName` parameter on `CreateGroup`; 9.x/10.x (the default) looks names
/// up ignoring case and requires 14–128 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    V8,
    #[default]
    V9,
}

impl Flavor {
    pub fn min_password_chars(self) -> usize {
        match self {
            Flavor::V8 => 10,
            Flavor::V9 => 14,
        }
    }

    pub fn max_password_chars(self) -> usize {
        128
    }

    pub fn case_sensitive_names(self) -> bool {
        self == Flavor::V8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::V8 => "8",
            Flavor::V9 => "10",
        }
    }
}

impl std::str::FromStr for Flavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_end_matches(".x") {
            "8" => Ok(Flavor::V8),
            "9" | "10" => Ok(Flavor::V9),
            other => Err(format!(
                "{other:?} is not a platform flavor: use 8, 9 or 10 (9 and 10 behave alike)"
            )),
        }
    }
}

impl From<NoRandom> for DevPlatformError {
    fn from(_: NoRandom) -> Self {
        DevPlatformError::Random
    }
}

/// `--password-hash-iterations`: a whole number, at least [`secret::MIN_ITERATIONS`].
pub fn parse_password_iterations(text: &str) -> Result<std::num::NonZeroU32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of iterations"))?;
    if n < secret::MIN_ITERATIONS {
        return Err(format!(
            "{n} iterations would make stored passwords cheap to guess; give at least {}",
            secret::MIN_ITERATIONS
        ));
    }
    std::num::NonZeroU32::new(n).ok_or_else(|| "iterations must be above zero".to_string())
}

pub struct DevPlatform {
    dir: PathBuf,
    flavor: Flavor,
    /// Whether `GetPropertyValues` returns extension values (and `GetConfigurationTable`
    /// refuses), instead of the live-verified behaviour.
    property_value_reads: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    /// Taken only with `state` held, after it: every change is journalled under the state lock.
    journal: Mutex<Journal>,
    sessions: Mutex<Sessions>,
    /// Checked when a Basic login names an unknown user or one without a password, so such a
    /// request costs as much time as a wrong password and does not reveal which names exist.
    decoy: PasswordHash,
    /// PBKDF2 iterations for the passwords set from now on (each stored hash keeps its own).
    password_iterations: std::num::NonZeroU32,
    faults: Mutex<faults::Faults>,
    latency: std::sync::RwLock<faults::Latency>,
    /// Started with the first latency set; `None` if its thread could not be.
    latency_timer: std::sync::OnceLock<Option<precise_timer::PreciseTimer>>,
}

impl std::fmt::Debug for DevPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPlatform")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DevPlatform {
    /// Opens the state in `data_dir` (creating the directory and a fresh state with only the
    /// built-ins when empty). On first initialisation it generates a random Administrator
    /// password and writes it to `data_dir/administrator.password` (mode 0600, no newline).
    pub fn open(data_dir: &Path) -> Result<Arc<DevPlatform>, DevPlatformError> {
        Self::open_flavored(data_dir, Flavor::default())
    }

    /// [`DevPlatform::open`], behaving like the given platform version.
    pub fn open_flavored(
        data_dir: &Path,
        flavor: Flavor,
    ) -> Result<Arc<DevPlatform>, DevPlatformError> {
        Self::open_with(data_dir, flavor, secret::DEFAULT_ITERATIONS)
    }

    /// [`DevPlatform::open_flavored`], hashing the passwords it sets with `password_iterations`
    /// of PBKDF2 (`scimgate dev --password-hash-iterations`).
    pub fn open_with(
        data_dir: &Path,
        flavor: Flavor,
        password_iterations: std::num::NonZeroU32,
    ) -> Result<Arc<DevPlatform>, DevPlatformError> {
        create_private_dir(data_dir)?;
        let (state, journal) = match journal::load(data_dir)? {
            Some(loaded) => loaded,
            None => {
                let password = crate::random::password()?;
                let state = State::fresh(PasswordHash::with_iterations(
                    &password,
                    password_iterations,
                )?);
                // The password file goes first: a state file never exists without it, and a
                // crash in between just means a new password on the next start.
                let password_path = data_dir.join(PASSWORD_FILE);
                write_private(&password_path, password.as_bytes())?;
                let journal = Journal::create(data_dir, &state)?;
                tracing::info!(
                    dir = %data_dir.display(),
                    password_file = %password_path.display(),
                    "initialised a new development platform"
                );
                (state, journal)
            }
        };
        let mut state = state;
        state.set_case_sensitive(flavor.case_sensitive_names());
        Ok(Arc::new(DevPlatform {
            dir: data_dir.to_path_buf(),
            flavor,
            property_value_reads: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(state),
            journal: Mutex::new(journal),
            sessions: Mutex::new(Sessions::default()),
            // As costly as a real user's check, so timing does not tell which names exist.
            decoy: PasswordHash::with_iterations("decoy", password_iterations)?,
            password_iterations,
            faults: Mutex::new(faults::Faults::new(DEFAULT_SLOW)),
            latency: Default::default(),
            latency_timer: std::sync::OnceLock::new(),
        }))
    }

    /// Serves HTTP/1.1 (and h2c) on `listener` until `stop` is cancelled, then returns once the
    /// in-flight requests have finished.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        httpd::serve(self.clone(), listener, stop).await;
        // A clean stop leaves the whole state in `state.json` and an empty journal.
        let platform = self;
        let compacted = tokio::task::spawn_blocking(move || {
            let state = platform.lock_state();
            let result = platform.lock_journal().compact_now(&state);
            result
        })
        .await;
        if let Ok(Err(e)) = compacted {
            tracing::warn!(error = %e, "development platform: compaction at stop failed; the journal is kept");
        }
    }

    /// The key id of the application key named `name` bound to `user`, created and persisted
    /// when absent (stable across restarts).
    pub fn ensure_app_key(&self, name: &str, user: &str) -> Result<String, DevPlatformError> {
        let fresh_id = crate::random::token()?;
        let mut state = self.lock_state();
        let id = match state.ensure_app_key(name, user, fresh_id) {
            Ok(id) => id,
            Err(e) => {
                state.roll_back();
                return Err(e);
            }
        };
        let delta = state.pending_changes(now_millis());
        if !delta.is_empty() {
            if let Err(e) = self.lock_journal().record(&delta, &state) {
                state.roll_back();
                return Err(e);
            }
        }
        state.settle();
        Ok(id)
    }

    /// Replaces the fault spec (see [`faults`]); returns what the previous one counted.
    pub fn set_faults(&self, spec: FaultSpec) -> FaultCounts {
        let counts = self.lock_faults().set(spec);
        tracing::info!(faults = ?self.lock_faults().spec(), "development platform: fault spec set");
        counts
    }

    /// How late a `slow` answer comes when the spec does not say: past the gateway's timeout.
    pub fn set_slow_default(&self, slow: std::time::Duration) {
        self.lock_faults().set_slow_default(slow);
    }

    /// Answers every native request no sooner than `base` ± up to `jitter` (uniform) after it
    /// arrived, from now on, as a remote platform would; zero for both (the default) answers
    /// as soon as the work is done.
    pub fn set_latency(&self, base: std::time::Duration, jitter: std::time::Duration) {
        *self.latency.write().unwrap_or_else(|e| e.into_inner()) =
            faults::Latency::new(base, jitter);
        if !base.is_zero() || !jitter.is_zero() {
            self.latency_timer.get_or_init(|| {
                precise_timer::PreciseTimer::start()
                    .map_err(|e| {
                        tracing::warn!(error = %e,
                            "development platform: no precise latency timer; waits are rounded up to whole milliseconds")
                    })
                    .ok()
            });
            tracing::info!(?base, ?jitter, "development platform: emulated latency set");
        }
    }

    /// Hashes a password the platform is given, at the configured cost.
    fn hash_password(&self, password: &str) -> Result<PasswordHash, Fault> {
        PasswordHash::with_iterations(password, self.password_iterations)
            .map_err(|_| Fault::internal("No secure random numbers available"))
    }

    /// Waits until `at`, for the emulated latency: to within a fraction of a millisecond when
    /// the precise timer runs.
    async fn wait_until(&self, at: std::time::Instant) {
        match self.latency_timer.get() {
            Some(Some(timer)) => timer.sleep_until(at).await,
            _ => tokio::time::sleep_until(at.into()).await,
        }
    }

    /// The emulated latency's next delay (zero unless [`DevPlatform::set_latency`] set one).
    fn latency_delay(&self) -> std::time::Duration {
        self.latency
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .next_delay()
    }

    fn lock_faults(&self) -> MutexGuard<'_, faults::Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a model tag vocabulary (or changes whether it is dynamic), as an administrator
    /// does in Composer.
    pub fn ensure_vocabulary(&self, name: &str, dynamic: bool) -> Result<(), DevPlatformError> {
        self.commit(|s| s.ensure_vocabulary(name, dynamic))
            .map_err(|f| DevPlatformError::Vocabulary(f.message))
    }

    /// Models the other reading of the evidence on user extension values: `GetPropertyValues`
    /// returns them and `GetConfigurationTable` refuses the `UserExtensions` table. By default
    /// (as verified live on 9.5–10.2) it is the other way round. For tests of a gateway that
    /// must work either way.
    pub fn model_property_value_reads(&self, on: bool) {
        self.property_value_reads
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn property_value_reads(&self) -> bool {
        self.property_value_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A poisoned lock is made consistent again: a change cut short by a panic is rolled back.
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| {
            let mut state = e.into_inner();
            state.roll_back();
            state
        })
    }

    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock_state())
    }

    /// Applies a change in place and keeps it only once its journal line is durable; a refused
    /// or unsaveable change is rolled back, so nothing is left half done. The cost is what the
    /// change touches, not the size of the state.
    fn commit<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Fault>) -> Result<T, Fault> {
        let mut state = self.lock_state();
        let out = match f(&mut state) {
            Ok(out) => out,
            Err(fault) => {
                state.roll_back();
                return Err(fault);
            }
        };
        let delta = state.pending_changes(now_millis());
        if !delta.is_empty() {
            // Acknowledged only once its journal line is durable.
            if let Err(e) = self.lock_journal().record(&delta, &state) {
                state.roll_back();
                tracing::error!(error = %e, "the development platform cannot save its state");
                return Err(Fault::internal(
                    "The development platform could not save its state",
                ));
            }
        }
        state.settle();
        Ok(out)
    }
}

/// The platform's clock for `lastModifiedDate`: milliseconds since the Unix epoch.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn create_private_dir(dir: &Path) -> Result<(), DevPlatformError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(DevPlatformError::io(dir))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), DevPlatformError> {
    write_atomically(path, contents, Access::OwnerOnly).map_err(DevPlatformError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use journal::STATE_FILE;

    fn journal_len(dir: &Path) -> u64 {
        fs::metadata(dir.join("state.journal")).map_or(0, |m| m.len())
    }

    #[test]
    fn changes_are_journalled_replayed_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        let snapshot = fs::read(dir.path().join(STATE_FILE)).unwrap();
        for name in ["a", "b", "c"] {
            p.commit(|s| s.create_user(model::NewUser::named(name)))
                .unwrap();
        }
        p.commit(|s| s.delete_user("b").map(|_| ())).unwrap();
        // One line per change, and the snapshot is not rewritten by a write.
        let text = fs::read_to_string(dir.path().join("state.journal")).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert_eq!(fs::read(dir.path().join(STATE_FILE)).unwrap(), snapshot);
        drop(p);

        // A crash while a line was being written leaves part of it, never acknowledged.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("state.journal"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"users\":{\"d\":{\"na").unwrap();
        drop(f);
        let p = DevPlatform::open(dir.path()).unwrap();
        assert!(p.read(|s| s.user("a").is_ok() && s.user("c").is_ok()));
        assert!(p.read(|s| s.user("b").is_err() && s.user("d").is_err()));
        // Loading compacted: the replayed changes are in the snapshot, the journal is empty,
        // and writing goes on.
        assert_eq!(journal_len(dir.path()), 0);
        p.commit(|s| s.create_user(model::NewUser::named("e")))
            .unwrap();
        drop(p);
        let p = DevPlatform::open(dir.path()).unwrap();
        assert!(p.read(|s| s.user("e").is_ok() && s.user("a").is_ok()));
    }

    /// Vocabularies and added shape properties are state like users: journalled when they
    /// change, back after a restart that replays the journal.
    #[test]
    fn vocabularies_and_added_properties_are_journalled_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        let before = journal_len(dir.path());
        p.ensure_vocabulary("Plants", true).unwrap();
        p.commit(|s| s.add_extension_property("badgeNumber"))
            .unwrap();
        assert!(
            journal_len(dir.path()) > before,
            "the changes were not journalled"
        );
        drop(p);
        let p = DevPlatform::open(dir.path()).unwrap();
        assert!(p.read(|s| s.vocabulary("plants").is_some_and(|v| v.dynamic)));
        assert!(p.read(|s| s.has_extension_property("badgeNumber")));
    }

    #[test]
    fn a_damaged_journal_line_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        p.commit(|s| s.create_user(model::NewUser::named("a")))
            .unwrap();
        drop(p);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("state.journal"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"not json\n").unwrap();
        drop(f);
        let err = DevPlatform::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("state.journal"), "{err}");
    }

    #[test]
    fn the_journal_is_compacted_in_the_background_once_it_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        let mut peak = 0;
        for i in 0..1500 {
            p.commit(|s| s.create_user(model::NewUser::named(&format!("user{i:04}"))))
                .unwrap();
            peak = peak.max(journal_len(dir.path()));
        }
        // Wait for a compaction still running (the test never times it).
        for _ in 0..500 {
            if !dir.path().join("state.journal.old").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let snapshot = fs::metadata(dir.path().join(STATE_FILE)).unwrap().len();
        assert!(journal_len(dir.path()) < peak, "compacted at least once");
        assert!(
            peak <= snapshot.max(256 * 1024) + 4096,
            "the journal never grows far past the snapshot: {peak} vs {snapshot}"
        );
        drop(p);
        let p = DevPlatform::open(dir.path()).unwrap();
        assert_eq!(p.read(|s| s.users().count()), 1500 + 3);
    }

    #[test]
    fn a_compaction_cut_short_by_a_crash_loads_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        p.commit(|s| s.create_user(model::NewUser::named("early")))
            .unwrap();
        drop(p);
        // As if the journal had been rotated and the process died before the snapshot: the
        // rotated lines and a fresh journal are both replayed.
        fs::rename(
            dir.path().join("state.journal"),
            dir.path().join("state.journal.old"),
        )
        .unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        p.commit(|s| s.create_user(model::NewUser::named("late")))
            .unwrap();
        drop(p);
        // As if it died after writing the snapshot but before removing the rotated journal:
        // replaying lines the snapshot holds changes nothing.
        let p = DevPlatform::open(dir.path()).unwrap();
        let before = p.read(|s| s.clone());
        p.commit(|s| s.delete_user("early").map(|_| ())).unwrap();
        let after_delete = p.read(|s| s.clone());
        drop(p);
        fs::copy(
            dir.path().join("state.journal"),
            dir.path().join("state.journal.old"),
        )
        .unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        assert_ne!(before, after_delete);
        assert!(p.read(|s| *s == after_delete));
        assert!(!dir.path().join("state.journal.old").exists());
    }

    #[test]
    fn first_open_initialises_and_later_opens_keep_everything() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("platform");
        let p = DevPlatform::open(&data).unwrap();
        let password = fs::read_to_string(data.join(PASSWORD_FILE)).unwrap();
        assert!(password.len() >= 32 && !password.ends_with('\n'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [PASSWORD_FILE, STATE_FILE] {
                let mode = fs::metadata(data.join(file)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        let key = p.ensure_app_key("gw", "Administrator").unwrap();
        p.commit(|s| s.create_user(model::NewUser::named("jdoe")))
            .unwrap();
        drop(p);

        let p = DevPlatform::open(&data).unwrap();
        assert_eq!(p.ensure_app_key("gw", "Administrator").unwrap(), key);
        assert!(p.read(|s| s.user("JDOE").is_ok()));
        let admin_ok = p.read(|s| {
            s.user("Administrator")
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .verify(&password)
        });
        assert!(admin_ok);
        assert_eq!(
            fs::read_to_string(data.join(PASSWORD_FILE)).unwrap(),
            password
        );
        assert!(!crate::fsutil::temporary_path(&data.join(STATE_FILE)).exists());
    }

    #[test]
    fn a_damaged_state_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{\"version\":1,").unwrap();
        let err = DevPlatform::open(dir.path()).unwrap_err();
        assert!(matches!(err, DevPlatformError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("state.json"), "{err}");
    }

    #[test]
    fn a_refused_change_leaves_state_and_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        let before = fs::read(dir.path().join(STATE_FILE)).unwrap();
        let fault = p
            .commit(|s| {
                s.create_user(model::NewUser::named("x"))?;
                s.delete_user("System")
            })
            .unwrap_err();
        assert_eq!(fault.status, http::StatusCode::FORBIDDEN);
        assert!(p.read(|s| s.user("x").is_err()));
        assert_eq!(fs::read(dir.path().join(STATE_FILE)).unwrap(), before);
    }

    /// Without `set_latency` (no `--platform-latency`) nothing is delayed; with it, every
    /// request is, within its jitter.
    #[test]
    fn no_latency_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = DevPlatform::open(dir.path()).unwrap();
        assert_eq!(p.latency_delay(), std::time::Duration::ZERO);
        p.set_latency(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_millis(5),
        );
        let d = p.latency_delay();
        assert!(d >= std::time::Duration::from_millis(45), "{d:?}");
        p.set_latency(std::time::Duration::ZERO, std::time::Duration::ZERO);
        assert_eq!(p.latency_delay(), std::time::Duration::ZERO);
    }

    /// `--password-hash-iterations`: the passwords the platform is given from then on (and its
    /// decoy) are hashed at that cost, and still check; too low a count is refused by name.
    #[test]
    fn password_iterations_are_configurable_but_not_below_the_minimum() {
        assert_eq!(parse_password_iterations("1000").unwrap().get(), 1000);
        assert!(parse_password_iterations("999")
            .unwrap_err()
            .contains("at least 1000"));
        assert!(parse_password_iterations("0").is_err());
        assert!(parse_password_iterations("lots").is_err());

        let dir = tempfile::tempdir().unwrap();
        let iterations = parse_password_iterations("1000").unwrap();
        let p = DevPlatform::open_with(dir.path(), Flavor::default(), iterations).unwrap();
        let stored =
            |hash: &PasswordHash| serde_json::to_value(hash).unwrap()["iterations"].clone();
        let hash = p.hash_password("correct horse battery").unwrap();
        assert_eq!(stored(&hash), 1000);
        assert!(hash.verify("correct horse battery"));
        assert_eq!(stored(&p.decoy), 1000);
        let other_dir = tempfile::tempdir().unwrap();
        let default = DevPlatform::open(other_dir.path()).unwrap();
        assert_eq!(
            stored(&default.hash_password("x").unwrap()),
            secret::DEFAULT_ITERATIONS.get()
        );
    }
}
