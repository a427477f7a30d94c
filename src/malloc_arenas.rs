//! How many glibc malloc arenas the process may use.
//!
//! glibc gives a thread that allocates under contention an arena of its own, up to eight per
//! core, and seldom hands freed arena memory back. A gateway answering a 50,000-user listing, or
//! the development platform working on its blocking threads, then keeps the peak of every
//! thread's work: 1.8 GiB resident for what two arenas hold in 0.4 GiB (README "Large
//! directories"). Two arenas keep contention low on the cores a sidecar gets.

/// The arena limit used unless `MALLOC_ARENA_MAX` says otherwise.
pub const DEFAULT_MAX: i32 = 2;

/// The limit to set, or `None` when the operator chose one in the environment (glibc read it
/// before `main`).
pub fn wanted(from_environment: Option<&std::ffi::OsStr>) -> Option<i32> {
    from_environment.is_none().then_some(DEFAULT_MAX)
}

/// Limits the arenas; call first thing in `main`, before any other thread exists, since glibc
/// fixes the limit when the first extra arena is made.
pub fn limit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(max) = wanted(std::env::var_os("MALLOC_ARENA_MAX").as_deref()) {
        // SAFETY: mallopt only sets a tuning parameter of the process's allocator; it takes
        // plain integers, touches no memory of ours, and is documented as callable at any time.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, max) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_setting_wins_and_otherwise_two_arenas() {
        assert_eq!(wanted(None), Some(2));
        assert_eq!(wanted(Some(std::ffi::OsStr::new("8"))), None);
        assert_eq!(wanted(Some(std::ffi::OsStr::new(""))), None);
    }
}
