//! Login sessions, in memory only: a restart logs everyone out, as a platform restart does.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The platform's default idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Clients that send Basic credentials without keeping cookies open a session per request; the
/// cap keeps that from growing without bound.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    /// The folded user name.
    user: String,
    last_use: Instant,
    last_use_ms: i64,
}

#[derive(Default)]
pub(crate) struct Sessions {
    by_id: HashMap<String, Session>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Sessions {
    pub fn create(&mut self, id: String, user_key: &str) {
        let now = Instant::now();
        self.by_id
            .retain(|_, s| now.duration_since(s.last_use) < IDLE_TIMEOUT);
        if self.by_id.len() >= MAX_SESSIONS {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_use)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.by_id.remove(&oldest);
            }
        }
        self.by_id.insert(
            id,
            Session {
                user: user_key.to_string(),
                last_use: now,
                last_use_ms: now_ms(),
            },
        );
    }

    /// The folded user name of a live session, marking it used.
    pub fn touch(&mut self, id: &str) -> Option<String> {
        let now = Instant::now();
        let session = self.by_id.get_mut(id)?;
        if now.duration_since(session.last_use) >= IDLE_TIMEOUT {
            self.by_id.remove(id);
            return None;
        }
        session.last_use = now;
        session.last_use_ms = now_ms();
        Some(session.user.clone())
    }

    /// The folded user name a session belongs to, live or not.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.by_id.get(id).map(|s| s.user.clone())
    }

    pub fn end_user(&mut self, user_key: &str) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, s| s.user != user_key);
        before - self.by_id.len()
    }

    /// Each user with a live session and the latest use of any of them (epoch millis).
    pub fn active(&self) -> HashMap<String, i64> {
        let now = Instant::now();
        let mut out: HashMap<String, i64> = HashMap::new();
        for s in self
            .by_id
            .values()
            .filter(|s| now.duration_since(s.last_use) < IDLE_TIMEOUT)
        {
            let last = out.entry(s.user.clone()).or_insert(s.last_use_ms);
            *last = (*last).max(s.last_use_ms);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_ended() {
        let mut s = Sessions::default();
        s.create("a".into(), "bob");
        s.create("b".into(), "bob");
        s.create("c".into(), "carol");
        assert_eq!(s.touch("a").as_deref(), Some("bob"));
        assert_eq!(s.active().len(), 2);
        assert_eq!(s.end_user("bob"), 2);
        assert!(s.touch("a").is_none());
        assert_eq!(s.owner("c").as_deref(), Some("carol"));
        assert_eq!(s.end_user("carol"), 1);
        assert!(s.active().is_empty());
    }
}
