//! The version-independent provisioning core: SCIM users and groups translated into platform
//! operations, with every policy enforced before the platform is called. The SCIM codecs turn
//! wire formats into [`UserChange`]/[`GroupChange`] and render [`UserRecord`]/[`GroupRecord`];
//! nothing here knows a SCIM version.

pub mod audit;
mod defaults;
#[cfg(test)]
mod fake_tests;
mod groups;
mod membership;
pub mod policy;
mod users;

pub use defaults::{missing_defaults, named_entities, MissingDefault};

use crate::config::Secret;
use crate::platform::{names, MemberKind, Platform, PlatformError};
use audit::{Audit, Outcome};
use base64::Engine;
use policy::Policy;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A user's `id`: the platform cannot store ours nor rename entities, so the id is derived from
/// the name: base64url of the case-folded name. Stable, reversible, URL-safe, and the same for
/// every spelling the (case-insensitive) platform treats as one entity.
pub fn id_for(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(names::fold(name))
}

/// Group ids carry this prefix, so a user and a group of the same name never share an id
/// (RFC 7643 §3.1: ids are unique across all resources). `.` is outside base64url's alphabet,
/// so no user id can start with it.
const GROUP_ID_PREFIX: &str = "g.";

/// A group's `id`: [`GROUP_ID_PREFIX`] and the user-id encoding of the case-folded name.
pub fn group_id_for(name: &str) -> String {
    format!("{GROUP_ID_PREFIX}{}", id_for(name))
}

/// The user name behind a user id.
pub fn name_for(id: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id.trim())
        .ok()?;
    let name = String::from_utf8(bytes).ok()?;
    (!name.is_empty() && names::fold(&name) == name).then_some(name)
}

/// The group name behind a group id. Ids issued before groups had their own id space (no
/// prefix) are still read where the request can only mean a group.
pub fn group_name_for(id: &str) -> Option<String> {
    let id = id.trim();
    name_for(id.strip_prefix(GROUP_ID_PREFIX).unwrap_or(id))
}

/// The id a member reference has when it names a group in the current form.
fn is_group_id(id: &str) -> bool {
    id.trim().starts_with(GROUP_ID_PREFIX)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub id: String,
    /// The name the identity provider knows the group by.
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    /// Slot → value; only slots that hold a value.
    pub attributes: BTreeMap<String, String>,
    pub groups: Vec<GroupRef>,
    /// The platform's last-modified date, RFC 3339 UTC, when it gives one.
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub id: String,
    pub display: Option<String>,
    pub kind: Option<MemberKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: String,
    /// The name the platform stores, in its spelling: what the audit log names.
    pub platform_name: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<MemberRef>,
    /// The platform's last-modified date, RFC 3339 UTC, when it gives one.
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
    /// Clear only if the current value is this one (a multi-valued delete by value).
    ClearIf(T),
}

#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub user_name: Option<String>,
    pub external_id: Change<String>,
    pub active: Option<bool>,
    pub attributes: BTreeMap<String, Change<String>>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub enum MembersChange {
    #[default]
    Keep,
    Replace(Vec<MemberRef>),
    Edit {
        add: Vec<MemberRef>,
        remove: Vec<MemberRef>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct GroupChange {
    pub display_name: Option<String>,
    pub external_id: Change<String>,
    pub members: MembersChange,
}

/// Which rule refused a request, for the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    UserExclusion,
    GroupExclusion,
    LicenceCap,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UserExclusion => "user_exclusion_list",
            Rule::GroupExclusion => "group_exclusion_list",
            Rule::LicenceCap => "licence_cap",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0} not found")]
    NotFound(String),
    /// The request names an excluded user or group. Excluded entities do not exist for SCIM, so
    /// the answer is the same not-found a read gets; the audit log keeps the rule.
    #[error("{what} not found")]
    Hidden {
        rule: Rule,
        what: String,
        detail: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("refused by policy ({}): {detail}", rule.as_str())]
    Refused { rule: Rule, detail: String },
    /// The request cannot be carried out as asked; `kind` is the SCIM 2.0 `scimType`.
    #[error("{detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("{0}")]
    Platform(#[from] PlatformError),
    /// A member change failed: the detail names it and says whether what was done before it
    /// was taken back; `first` is the cause, which decides the status.
    #[error("{detail}")]
    Partial {
        detail: String,
        first: Box<ProvisionError>,
    },
    #[error("SCIM provisioning is stopped")]
    Stopped,
}

impl ProvisionError {
    fn invalid(kind: &'static str, detail: impl Into<String>) -> Self {
        ProvisionError::Invalid {
            kind,
            detail: detail.into(),
        }
    }

    /// How the audit log classes this failure: the client's request was refused (policy,
    /// validation, an id that names nothing), or the platform failed it.
    fn audit_outcome(&self) -> Outcome {
        match self {
            ProvisionError::NotFound(_)
            | ProvisionError::Hidden { .. }
            | ProvisionError::Refused { .. }
            | ProvisionError::Invalid { .. } => Outcome::Refused,
            ProvisionError::Conflict(_)
            | ProvisionError::Platform(_)
            | ProvisionError::Partial { .. }
            | ProvisionError::Stopped => Outcome::Failed,
        }
    }

    fn rule(&self) -> Option<Rule> {
        match self {
            ProvisionError::Hidden { rule, .. } | ProvisionError::Refused { rule, .. } => {
                Some(*rule)
            }
            _ => None,
        }
    }

    /// The reason the audit log gives: for a hidden entity the rule's text, not "not found".
    fn audit_reason(&self) -> String {
        match self {
            ProvisionError::Hidden { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }
}

/// What one write did, for its audit line: the target in the platform's spelling once it is
/// known, and only the changes the platform confirmed.
struct Trail {
    target: String,
    changes: Vec<String>,
}

impl Trail {
    fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            changes: Vec::new(),
        }
    }
}

/// Who asked: recorded in the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub client: String,
}

pub struct Provisioner {
    platform: Arc<dyn Platform>,
    policy: RwLock<Arc<Policy>>,
    audit: Audit,
    /// Held from the licence count to the create, so parallel creates cannot overshoot the cap.
    licence: tokio::sync::Mutex<()>,
    /// How many member resolutions or membership writes of one change run at once: the
    /// platform client's `platform.max_concurrency`, so a large PATCH neither waits on one
    /// call at a time nor queues more calls than the client lets out.
    member_concurrency: usize,
}

/// Page of a listing: the total before paging and the records of the page.
pub struct Page<T> {
    pub total: usize,
    pub items: Vec<T>,
}

impl Provisioner {
    pub fn new(platform: Arc<dyn Platform>, policy: Policy, audit: Audit) -> Self {
        Self {
            platform,
            policy: RwLock::new(Arc::new(policy)),
            audit,
            licence: tokio::sync::Mutex::new(()),
            member_concurrency: 1,
        }
    }

    /// Lets membership changes run up to `n` native calls at once (at least one). Without it
    /// they run one at a time.
    pub fn with_member_concurrency(mut self, n: usize) -> Self {
        self.member_concurrency = n.max(1);
        self
    }

    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps the policy; with `terminate_sessions_on_config_change`, ends every live session
    /// but those of excluded users. Returns how many users' sessions were ended.
    pub async fn replace_policy(&self, next: Policy) -> Result<usize, ProvisionError> {
        let changed = self.policy().config != next.config;
        let terminate = changed && next.config.terminate_sessions_on_config_change;
        let next = Arc::new(next);
        match self.policy.write() {
            Ok(mut p) => *p = next.clone(),
            Err(poisoned) => *poisoned.into_inner() = next.clone(),
        }
        if !terminate {
            return Ok(0);
        }
        let mut ended = 0;
        for user in self.platform.active_users().await? {
            if next.is_user_excluded(&user.name) {
                continue;
            }
            self.platform.terminate_sessions(&user.name).await?;
            ended += 1;
        }
        self.audit.record(&audit::Entry {
            client: "configuration",
            operation: "terminate_sessions",
            target: "*",
            outcome: Outcome::Done,
            rule: None,
            reason: "provisioning configuration changed",
            changes: &[format!("{ended} users' sessions ended")],
        });
        Ok(ended)
    }

    /// Records a request the SCIM layer refused before it reached the provisioning core (a
    /// malformed body, a failed precondition), so every refusal has its audit line.
    pub fn audit_refusal(&self, actor: &Actor, operation: &str, target: &str, reason: &str) {
        self.audit.record(&audit::Entry {
            client: &actor.client,
            operation,
            target,
            outcome: Outcome::Refused,
            rule: None,
            reason,
            changes: &[],
        });
    }

    /// The one place a write's outcome becomes an audit line: what the platform confirmed on
    /// success, the refusal or failure otherwise (with what had been done and undone).
    fn finish<T>(
        &self,
        actor: &Actor,
        operation: &str,
        trail: &Trail,
        result: Result<T, ProvisionError>,
    ) -> Result<T, ProvisionError> {
        match &result {
            Ok(_) => {
                if !trail.changes.is_empty() || operation.starts_with("create") {
                    self.audit.record(&audit::Entry {
                        client: &actor.client,
                        operation,
                        target: &trail.target,
                        outcome: Outcome::Done,
                        rule: None,
                        reason: "",
                        changes: &trail.changes,
                    })
                }
            }
            Err(e) => {
                let rule = e.rule();
                if let Some(rule) = rule {
                    count_refusal(rule);
                }
                self.audit.record(&audit::Entry {
                    client: &actor.client,
                    operation,
                    target: &trail.target,
                    outcome: e.audit_outcome(),
                    rule: rule.map(Rule::as_str),
                    reason: &e.audit_reason(),
                    changes: &trail.changes,
                })
            }
        }
        result
    }

    /// An excluded member left alone: its own audit line, so the identity provider's change
    /// still succeeds and the operator sees what was not done.
    fn record_skip(&self, actor: &Actor, operation: &str, group: &str, rule: Rule, detail: &str) {
        count_refusal(rule);
        self.audit.record(&audit::Entry {
            client: &actor.client,
            operation,
            target: group,
            outcome: Outcome::Refused,
            rule: Some(rule.as_str()),
            reason: &format!("member skipped: {detail}"),
            changes: &[],
        });
    }

    /// A delete whose answer was lost is settled by looking: gone means done; still there
    /// means it did not happen, and it is sent once more.
    async fn delete_entity<D, DF, E, EF>(
        &self,
        name: &str,
        delete: D,
        exists: E,
    ) -> Result<(), PlatformError>
    where
        D: Fn() -> DF,
        DF: std::future::Future<Output = Result<(), PlatformError>>,
        E: Fn() -> EF,
        EF: std::future::Future<Output = Result<(), PlatformError>>,
    {
        match delete().await {
            Err(e) if e.outcome_unknown() => match exists().await {
                Err(PlatformError::NotFound(_)) => Ok(()),
                Ok(()) => {
                    tracing::warn!(entity = %name, error = %e, "a delete went unanswered and did not happen; sending it again");
                    match delete().await {
                        Err(PlatformError::NotFound(_)) => Ok(()),
                        other => other,
                    }
                }
                Err(_) => Err(e),
            },
            other => other,
        }
    }
}

fn with_external_id(
    vocabulary: Option<&String>,
    mut tags: Vec<crate::tag::Tag>,
    change: &Change<String>,
) -> Vec<crate::tag::Tag> {
    let Some(vocabulary) = vocabulary else {
        return tags;
    };
    let current = tags
        .iter()
        .find(|t| &t.vocabulary == vocabulary)
        .map(|t| t.term.clone());
    let next = match change {
        Change::Keep => return tags,
        Change::Set(v) => Some(v.clone()),
        Change::Clear => None,
        Change::ClearIf(v) if current.as_deref() == Some(v.as_str()) => None,
        Change::ClearIf(_) => current,
    };
    tags.retain(|t| &t.vocabulary != vocabulary);
    // Only a value that survives the TAGS text form unchanged is kept: `;` separates tags and
    // the platform trims terms (a blank one fails the whole create with a bare 500).
    if let Some(term) = next.filter(|t| !t.trim().is_empty() && t.trim() == t && !t.contains(';')) {
        tags.push(crate::tag::Tag {
            vocabulary: vocabulary.clone(),
            term,
        });
    }
    tags
}

/// Listings read resources this many at a time; the platform client's own bound still applies.
const LIST_READ_CONCURRENCY: usize = 8;

/// The description a user or group carries from its create until every step of the create is
/// done: a create that finds an entity with it resumes the unfinished one instead of answering
/// 409, so an identity provider's retry completes what a failed attempt began.
pub const UNFINISHED: &str = "[scimgate: provisioning incomplete] ";

/// Whether an entity was left by a create the gateway did not finish.
pub fn is_unfinished(description: &str) -> bool {
    description.starts_with(UNFINISHED)
}

/// Reads are tried this many times in all when the answer was lost or a 5xx (twice when late).
const READ_ATTEMPTS: u32 = 4;
/// Undoing a step is tried this many times in all before what stays is reported.
const UNDO_ATTEMPTS: u32 = 4;
/// The first pause before a repeat; it doubles each time.
const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A read, repeated with backoff while its failure is one that may pass: reads change nothing,
/// so a lost answer costs only time.
async fn read_again<T, F, Fut>(mut read: F) -> Result<T, PlatformError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PlatformError>>,
{
    let mut attempt = 0;
    let mut timed_out = false;
    loop {
        match read().await {
            // A platform that let one read run into the timeout gets one more chance, not
            // three: each costs a whole `upstream.request_timeout`.
            Err(e @ PlatformError::Timeout(_)) if timed_out => return Err(e),
            Err(e) if e.worth_repeating() && attempt + 1 < READ_ATTEMPTS => {
                timed_out |= matches!(e, PlatformError::Timeout(_));
                tracing::debug!(error = %e, attempt, "platform read failed; reading again");
                tokio::time::sleep(FIRST_PAUSE * 2u32.pow(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A write that is safe to repeat (it sets a value, adds or removes a member, ends sessions),
/// sent once more when the first answer was lost or late: the second answer then tells what
/// the platform holds. A definite refusal (a 4xx or 5xx answer) is not repeated.
async fn write_idempotent<F, Fut>(write: F) -> Result<(), PlatformError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), PlatformError>>,
{
    match write().await {
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(error = %e, "platform write unanswered; sending it again (it is idempotent)");
            tokio::time::sleep(FIRST_PAUSE).await;
            write().await
        }
        other => other,
    }
}

/// An undo step, repeated with backoff until it works or the attempts run out; `NotFound`
/// counts as done when `gone_is_done` (what was to be removed is not there).
async fn undo_with_retries<F, Fut>(gone_is_done: bool, undo: F) -> Result<(), PlatformError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), PlatformError>>,
{
    let mut attempt = 0;
    loop {
        match undo().await {
            Ok(()) => return Ok(()),
            Err(PlatformError::NotFound(_)) if gone_is_done => return Ok(()),
            Err(
                e @ (PlatformError::Unauthorized { .. } | PlatformError::MissingProperties { .. }),
            ) => return Err(e),
            Err(e) if attempt + 1 >= UNDO_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "undoing a step failed; trying again");
                tokio::time::sleep(FIRST_PAUSE * 2u32.pow(attempt + 1)).await;
                attempt += 1;
            }
        }
    }
}

fn count_refusal(rule: Rule) {
    crate::metrics::metrics().count("scimgate_policy_refusals_total", &[("rule", rule.as_str())]);
}

/// Whether a failed write may still have been carried out (and so must be undone too).
fn may_have_happened(result: &Result<(), PlatformError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => e.outcome_unknown(),
    }
}

/// Errors that say the gateway itself is wrong: reading the platform would not help.
fn gateway_fault(e: &PlatformError) -> bool {
    matches!(
        e,
        PlatformError::Unauthorized { .. }
            | PlatformError::Rejected(_)
            | PlatformError::MissingProperties { .. }
    )
}

/// A resource deleted between listing and reading is simply not part of the answer.
fn keep_found<T>(reads: Vec<Result<T, ProvisionError>>) -> Result<Vec<T>, ProvisionError> {
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        match r {
            Ok(v) => out.push(v),
            Err(ProvisionError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The platform's not-found names the entity in its own words; SCIM answers with the id asked.
fn not_found_as(kind: &'static str, asked: &str) -> impl Fn(PlatformError) -> ProvisionError {
    let asked = asked.to_string();
    move |e| match e {
        PlatformError::NotFound(_) => ProvisionError::NotFound(format!("{kind} {asked}")),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_ignore_case() {
        let id = id_for("JDoe@Corp.com");
        assert_eq!(id, id_for("jdoe@corp.com"));
        assert_eq!(name_for(&id).as_deref(), Some("jdoe@corp.com"));
        assert!(!id.contains(['/', '+', '=']));
        assert_eq!(
            name_for(&id_for("Jörg Müller")).as_deref(),
            Some("jörg müller")
        );
        assert!(name_for("!!!").is_none());
        // Not the folded form of anything: an id the gateway never issued.
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Admin");
        assert!(name_for(&forged).is_none());
    }
}
