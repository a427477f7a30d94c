//! The audit trail: one JSON line per provisioning decision and per change made on the platform.
//! Records name who asked, what was asked and what happened; they never hold secrets (passwords
//! are reported as "set", tokens never reach this layer).

use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Refused,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

impl Audit {
    /// Appends to `path`, or logs through `tracing` (target `scimgate::audit`) without one.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { file })
    }

    pub fn disabled() -> Self {
        Self { file: None }
    }

    pub fn record(&self, entry: &Entry<'_>) {
        let line = json!({
            "time": rfc3339_now(),
            "client": entry.client,
            "operation": entry.operation,
            "target": entry.target,
            "result": entry.outcome.as_str(),
            "rule": entry.rule,
            "reason": if entry.reason.is_empty() { Value::Null } else { json!(entry.reason) },
            "changes": entry.changes,
        });
        match &self.file {
            Some(file) => {
                let mut text = line.to_string();
                text.push('\n');
                let mut f = match file.lock() {
                    Ok(f) => f,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if let Err(e) = f.write_all(text.as_bytes()) {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
            None => tracing::info!(target: "scimgate::audit", record = %line, "audit"),
        }
    }
}

/// One audit line: who asked for what on which entity, what came of it, and under which rule.
pub struct Entry<'a> {
    pub client: &'a str,
    pub operation: &'a str,
    /// The entity in the platform's spelling.
    pub target: &'a str,
    pub outcome: Outcome,
    /// The policy rule that refused or skipped something, if one did.
    pub rule: Option<&'a str>,
    pub reason: &'a str,
    /// Changes the platform confirmed, never ones merely attempted.
    pub changes: &'a [String],
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, without a date library.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(Some(&path)).unwrap();
        audit.record(&Entry {
            client: "10.0.0.1",
            operation: "create_user",
            target: "jdoe",
            outcome: Outcome::Done,
            rule: None,
            reason: "",
            changes: &["created".into()],
        });
        audit.record(&Entry {
            client: "10.0.0.1",
            operation: "delete_user",
            target: "Administrator",
            outcome: Outcome::Refused,
            rule: Some("user_exclusion_list"),
            reason: "excluded",
            changes: &[],
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["result"], "refused");
        assert_eq!(lines[1]["reason"], "excluded");
        assert_eq!(lines[1]["rule"], "user_exclusion_list");
        assert!(lines[0]["rule"].is_null());
    }
}
