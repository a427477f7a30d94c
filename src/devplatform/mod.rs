//! A development stand-in for the ThingWorx platform, in the same binary: the subset of the
//! native REST API that user and group provisioning uses (EntityServices, the User and Group
//! services, CurrentSessionInfo), with app-key, Basic and session authentication, persisted to
//! a JSON file so the product runs end to end on a fresh machine and in tests.

mod error;
pub mod faults;
mod httpd;
pub(crate) mod secret;
mod services;
mod session;
mod store;

pub use error::DevPlatformError;
pub use faults::{FaultCounts, FaultKind, FaultRule, FaultSpec};

use crate::fsutil::{write_atomically, Access};
use crate::random::NoRandom;
use error::Fault;
use secret::PasswordHash;
use session::Sessions;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use store::State;
use tokio_util::sync::CancellationToken;

const STATE_FILE: &str = "state.json";
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

pub struct DevPlatform {
    dir: PathBuf,
    flavor: Flavor,
    /// Whether `GetPropertyValues` returns extension values (and `GetConfigurationTable`
    /// refuses), instead of the live-verified behaviour.
    property_value_reads: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    sessions: Mutex<Sessions>,
    /// Checked when a Basic login names an unknown user or one without a password, so such a
    /// request costs as much time as a wrong password and does not reveal which names exist.
    decoy: PasswordHash,
    faults: Mutex<faults::Faults>,
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
        create_private_dir(data_dir)?;
        let path = data_dir.join(STATE_FILE);
        let state = match fs::read(&path) {
            Ok(bytes) => State::from_json(&bytes)
                .map_err(|reason| DevPlatformError::Corrupt { path, reason })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let password = crate::random::password()?;
                let state = State::fresh(PasswordHash::new(&password)?);
                // The password file goes first: a state file never exists without it, and a
                // crash in between just means a new password on the next start.
                let password_path = data_dir.join(PASSWORD_FILE);
                write_private(&password_path, password.as_bytes())?;
                save(data_dir, &state)?;
                tracing::info!(
                    dir = %data_dir.display(),
                    password_file = %password_path.display(),
                    "initialised a new development platform"
                );
                state
            }
            Err(source) => return Err(DevPlatformError::Io { path, source }),
        };
        let mut state = state;
        state.set_case_sensitive(flavor.case_sensitive_names());
        Ok(Arc::new(DevPlatform {
            dir: data_dir.to_path_buf(),
            flavor,
            property_value_reads: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(state),
            sessions: Mutex::new(Sessions::default()),
            decoy: PasswordHash::new("decoy")?,
            faults: Mutex::new(faults::Faults::new(DEFAULT_SLOW)),
        }))
    }

    /// Serves HTTP/1.1 (and h2c) on `listener` until `stop` is cancelled, then returns once the
    /// in-flight requests have finished.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) {
        httpd::serve(self, listener, stop).await;
    }

    /// The key id of the application key named `name` bound to `user`, created and persisted
    /// when absent (stable across restarts).
    pub fn ensure_app_key(&self, name: &str, user: &str) -> Result<String, DevPlatformError> {
        let fresh_id = crate::random::token()?;
        let mut state = self.lock_state();
        let mut next = state.clone();
        let id = next.ensure_app_key(name, user, fresh_id)?;
        if next != *state {
            save(&self.dir, &next)?;
            *state = next;
        }
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

    /// A poisoned lock is still consistent: changes are made on a copy and swapped in whole.
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock_state())
    }

    /// Applies a change to a copy of the state and keeps it only once it is saved, so a refused
    /// or unsaveable request leaves nothing half done.
    fn commit<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Fault>) -> Result<T, Fault> {
        let mut state = self.lock_state();
        let mut next = state.clone();
        let out = f(&mut next)?;
        if next != *state {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            next.stamp_changes(&state, now);
            save(&self.dir, &next).map_err(|e| {
                tracing::error!(error = %e, "the development platform cannot save its state");
                Fault::internal("The development platform could not save its state")
            })?;
            *state = next;
        }
        Ok(out)
    }
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

/// Atomically replaces `state.json`. The file holds password hashes and app key ids, hence
/// owner-only.
fn save(dir: &Path, state: &State) -> Result<(), DevPlatformError> {
    let bytes = state.to_json().map_err(DevPlatformError::Encode)?;
    write_private(&dir.join(STATE_FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        p.commit(|s| s.create_user(store::NewUser::named("jdoe")))
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
                s.create_user(store::NewUser::named("x"))?;
                s.delete_user("System")
            })
            .unwrap_err();
        assert_eq!(fault.status, http::StatusCode::FORBIDDEN);
        assert!(p.read(|s| s.user("x").is_err()));
        assert_eq!(fs::read(dir.path().join(STATE_FILE)).unwrap(), before);
    }
}
