//! The audit trail: one JSON line per provisioning decision and per change made on the platform.
//! Records name who asked, what was asked and what happened; they never hold secrets (passwords
//! are reported as "set", tokens never reach this layer).

use crate::rfc3339::rfc3339_now;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

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

#[cfg(test)]
mod tests {
    use super::*;

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
