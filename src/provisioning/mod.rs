//! The version-independent provisioning core: SCIM users and groups translated into platform
//! operations, with every policy enforced before the platform is called. The SCIM codecs turn
//! wire formats into [`UserChange`]/[`GroupChange`] and render [`UserRecord`]/[`GroupRecord`];
//! nothing here knows a SCIM version.

pub mod audit;
mod defaults;
#[cfg(test)]
mod fake_tests;
pub mod policy;

pub use defaults::{missing_defaults, named_entities, MissingDefault};

use crate::builtin::MAX_PASSWORD_CHARS;
use crate::config::{DeprovisionMode, Secret};
use crate::platform::{
    names, Extensions, Member, MemberKind, NewGroup, NewUser, Platform, PlatformError,
};
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

/// A member reference resolved to a platform principal, or the reason it is left alone.
enum Resolved {
    Principal(Member),
    /// Excluded by policy: neither added nor removed, audited, and the rest of the change goes on.
    Skipped {
        rule: Rule,
        detail: String,
    },
}

/// One membership write to make, and how to take it back.
#[derive(Clone)]
struct MemberWrite {
    adding: bool,
    member: Member,
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

    // ---------------------------------------------------------------- users

    /// Names of the users the identity provider may see.
    pub async fn user_names(&self) -> Result<Vec<String>, ProvisionError> {
        let policy = self.policy();
        Ok(self
            .platform
            .list_users()
            .await?
            .into_iter()
            .map(|u| u.name)
            .filter(|n| !policy.is_user_excluded(n))
            .collect())
    }

    /// The users the licence counts: every named user on the platform but the platform's own
    /// built-in accounts. Disabled users count (they still hold a named-user licence), and so
    /// do users on the configured exclusion list (real people or service accounts).
    async fn licensed_users(&self) -> Result<usize, ProvisionError> {
        Ok(self
            .platform
            .list_users()
            .await?
            .iter()
            .filter(|u| !crate::builtin::is_built_in_user(&u.name))
            .count())
    }

    /// The user behind an id, or not found (excluded users do not exist for SCIM).
    fn user_name_of(&self, id: &str) -> Result<String, ProvisionError> {
        let name = name_for(id).ok_or_else(|| ProvisionError::NotFound(format!("User {id}")))?;
        if self.policy().is_user_excluded(&name) {
            return Err(ProvisionError::NotFound(format!("User {id}")));
        }
        Ok(name)
    }

    pub async fn get_user(&self, id: &str) -> Result<UserRecord, ProvisionError> {
        let name = self.user_name_of(id)?;
        self.read_user(&name).await
    }

    /// The user a PUT or PATCH is about to change, read once for the version check and the
    /// change itself. An excluded user is not found, as for a read, and the attempt is audited.
    pub async fn user_for_change(
        &self,
        actor: &Actor,
        operation: &str,
        id: &str,
    ) -> Result<UserRecord, ProvisionError> {
        let mut trail = Trail::new(name_for(id).unwrap_or_else(|| id.to_string()));
        let result = self.changeable_user(id, &mut trail).await;
        match result {
            Ok(user) => Ok(user),
            Err(e) => self.finish(actor, operation, &trail, Err(e)),
        }
    }

    async fn changeable_user(
        &self,
        id: &str,
        trail: &mut Trail,
    ) -> Result<UserRecord, ProvisionError> {
        let name = name_for(id).ok_or_else(|| ProvisionError::NotFound(format!("User {id}")))?;
        self.hide_excluded_user(&name, id)?;
        let user = self.read_user(&name).await?;
        trail.target = user.user_name.clone();
        Ok(user)
    }

    /// Not found, with the rule kept for the audit log, when the user is excluded.
    fn hide_excluded_user(&self, name: &str, id: &str) -> Result<(), ProvisionError> {
        if self.policy().is_user_excluded(name) {
            return Err(ProvisionError::Hidden {
                rule: Rule::UserExclusion,
                what: format!("User {id}"),
                detail: format!("{name} is on the user provisioning exclusion list"),
            });
        }
        Ok(())
    }

    /// Reads a user by platform name; not-found when excluded or absent.
    pub async fn read_user(&self, name: &str) -> Result<UserRecord, ProvisionError> {
        let policy = self.policy();
        if policy.is_user_excluded(name) {
            return Err(ProvisionError::NotFound(format!("User {name}")));
        }
        let user = read_again(|| self.platform.get_user(name))
            .await
            .map_err(not_found_as("User", name))?;
        // The platform's own spelling may fold differently from what was asked.
        if policy.is_user_excluded(&user.name) {
            return Err(ProvisionError::NotFound(format!("User {name}")));
        }
        let (active, extensions, groups) = tokio::try_join!(
            read_again(|| self.platform.is_user_enabled(&user.name)),
            read_again(|| self.platform.user_extensions(&user.name)),
            read_again(|| self.platform.user_groups(&user.name)),
        )
        .map_err(not_found_as("User", name))?;
        let mut attributes = BTreeMap::new();
        for (slot, property) in &policy.config.user_attributes {
            if let Some(v) = extensions.get(property).filter(|v| !v.is_empty()) {
                attributes.insert(slot.clone(), v.clone());
            }
        }
        let external_id = match (
            &policy.config.external_id_property,
            &policy.config.user_external_id_vocabulary,
        ) {
            (Some(p), _) => extensions.get(p).filter(|v| !v.is_empty()).cloned(),
            (None, Some(vocabulary)) => tag_term(&user.tags, vocabulary),
            (None, None) => None,
        };
        let groups = groups
            .into_iter()
            .filter(|g| policy.is_group_visible(&g.name))
            .map(|g| GroupRef {
                id: group_id_for(&g.name),
                display: policy.idp_group(&g.name),
            })
            .collect();
        Ok(UserRecord {
            id: id_for(&user.name),
            user_name: user.name,
            external_id,
            active,
            attributes,
            groups,
            last_modified: user.last_modified,
        })
    }

    /// Reads several users at once (the platform client bounds the concurrency), in order,
    /// leaving out any that vanished since they were listed.
    pub async fn read_users(&self, names: Vec<String>) -> Result<Vec<UserRecord>, ProvisionError> {
        use futures_util::StreamExt;
        let reads = futures_util::stream::iter(names)
            .map(|n| async move { self.read_user(&n).await })
            .buffered(LIST_READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        keep_found(reads)
    }

    pub async fn create_user(
        &self,
        actor: &Actor,
        change: UserChange,
    ) -> Result<UserRecord, ProvisionError> {
        let user_name = change
            .user_name
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        let mut trail = Trail::new(user_name.clone());
        let result = self
            .create_user_checked(&user_name, &change, &mut trail)
            .await;
        self.finish(actor, "create_user", &trail, result)
    }

    async fn create_user_checked(
        &self,
        user_name: &str,
        change: &UserChange,
        trail: &mut Trail,
    ) -> Result<UserRecord, ProvisionError> {
        if user_name.is_empty() {
            return Err(ProvisionError::invalid(
                "invalidValue",
                "userName is required",
            ));
        }
        let policy = self.policy();
        check_password(&policy, change)?;
        if policy.is_user_excluded(user_name) {
            return Err(ProvisionError::Refused {
                rule: Rule::UserExclusion,
                detail: format!("{user_name} is on the user provisioning exclusion list"),
            });
        }
        if let Some(reason) = names::invalid_reason(user_name) {
            return Err(ProvisionError::invalid(
                "invalidValue",
                format!("userName {user_name:?} cannot be a platform user name: {reason}"),
            ));
        }
        let _licence = match policy.config.max_users {
            Some(_) => Some(self.licence.lock().await),
            None => None,
        };
        if let Some(cap) = policy.config.max_users {
            let count = self.licensed_users().await?;
            // An unfinished user of an earlier attempt is already counted: finishing it takes
            // no new place.
            let resuming = || async {
                matches!(self.platform.get_user(user_name).await, Ok(u) if is_unfinished(&u.description))
            };
            if count >= cap && !resuming().await {
                return Err(ProvisionError::Refused {
                    rule: Rule::LicenceCap,
                    detail: format!("the licence allows {cap} named users and {count} exist"),
                });
            }
        }
        self.create_user_steps(&policy, user_name, change, &mut trail.changes)
            .await?;
        let created = UserRecord {
            id: id_for(user_name),
            user_name: user_name.to_string(),
            external_id: None,
            active: true,
            attributes: BTreeMap::new(),
            groups: Vec::new(),
            last_modified: None,
        };
        self.read_back_user(&policy, &created, change).await
    }

    /// The user after a confirmed write. A read that keeps failing does not turn the write
    /// into a failure: the answer is then built from what was written.
    async fn read_back_user(
        &self,
        policy: &Policy,
        before: &UserRecord,
        change: &UserChange,
    ) -> Result<UserRecord, ProvisionError> {
        match self.read_user(&before.user_name).await {
            Err(e @ (ProvisionError::Platform(_) | ProvisionError::Partial { .. })) => {
                tracing::warn!(user = %before.user_name, error = %e,
                    "the change was made but reading the user back failed; answering with what was written");
                Ok(user_after(policy, before, change))
            }
            other => other,
        }
    }

    async fn create_user_steps(
        &self,
        policy: &Policy,
        user_name: &str,
        change: &UserChange,
        changes: &mut Vec<String>,
    ) -> Result<(), ProvisionError> {
        let defaults = &policy.config.user_defaults;
        let description = defaults.description.clone().unwrap_or_default();
        // Existence first: the platform answers a duplicate create with a bare 500, so only a
        // read tells a duplicate (409) from an unfinished create to resume.
        let unfinished = self
            .existing_unfinished(MemberKind::User, user_name)
            .await?;
        let created = match unfinished {
            true => Err(PlatformError::AlreadyExists(user_name.to_string())),
            false => {
                self.platform
                    .create_user(&NewUser {
                        name: user_name.to_string(),
                        password: change.password.clone(),
                        description: format!("{UNFINISHED}{description}"),
                        tags: with_external_id(
                            user_external_id_vocabulary(policy),
                            defaults.tags.clone().unwrap_or_default(),
                            &change.external_id,
                        ),
                        home_mashup: defaults.home_mashup.clone(),
                        mobile_mashup: defaults.mobile_mashup.clone(),
                        groups: Vec::new(),
                    })
                    .await
            }
        };
        let resumed = match created {
            Ok(()) => false,
            Err(e) if gateway_fault(&e) => return Err(e.into()),
            // Whether the create happened (its answer lost), or the user is one an earlier
            // attempt left unfinished, only the platform can tell.
            Err(e) => match read_again(|| self.platform.get_user(user_name)).await {
                Ok(user) if is_unfinished(&user.description) => {
                    !e.outcome_unknown() || matches!(e, PlatformError::AlreadyExists(_))
                }
                Ok(_) => {
                    return Err(ProvisionError::Conflict(format!(
                        "User {user_name} already exists"
                    )))
                }
                Err(_) => return Err(e.into()),
            },
        };
        changes.push(if resumed {
            format!("resumed the unfinished create of {user_name}")
        } else {
            format!("created {user_name}")
        });
        // From here on the user exists: it is finished, or removed again so a retry starts
        // clean; if even that fails, its description still says unfinished and a retry
        // completes it.
        let rest = async {
            if resumed && change.active != Some(false) {
                write_idempotent(|| self.platform.set_user_enabled(user_name, true)).await?;
            }
            if let Some(project) = &defaults.project {
                write_idempotent(|| self.platform.set_user_project(user_name, project)).await?;
                changes.push(format!("project {project}"));
            }
            let extensions = extension_values(policy, change, &BTreeMap::new(), &None);
            if !extensions.is_empty() {
                write_idempotent(|| self.platform.set_user_extensions(user_name, &extensions))
                    .await?;
                changes.push(format!("set {}", keys(&extensions)));
            }
            if change.active == Some(false) {
                write_idempotent(|| self.platform.set_user_enabled(user_name, false)).await?;
                changes.push("disabled".into());
            }
            write_idempotent(|| self.platform.set_user_description(user_name, &description))
                .await?;
            Ok::<(), PlatformError>(())
        };
        if let Err(e) = rest.await {
            let undo = undo_with_retries(true, || self.platform.delete_user(user_name)).await;
            match &undo {
                Ok(()) => changes.push(format!("removed {user_name} again after the failure")),
                Err(u) => {
                    tracing::error!(user = %user_name, error = %u,
                        "a failed create could not be undone: the user stays, marked unfinished, until the identity provider retries");
                    changes.push(format!(
                        "could not remove {user_name} after the failure ({u}): it stays, marked unfinished, for the retry to complete"
                    ));
                }
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn update_user(
        &self,
        actor: &Actor,
        id: &str,
        change: UserChange,
    ) -> Result<UserRecord, ProvisionError> {
        let current = self.user_for_change(actor, "update_user", id).await?;
        self.update_read_user(actor, current, change).await
    }

    /// `update_user` for a user the caller has just read (to check its version or to apply a
    /// PATCH to it), so the platform is not asked for the same user twice.
    pub async fn update_read_user(
        &self,
        actor: &Actor,
        current: UserRecord,
        change: UserChange,
    ) -> Result<UserRecord, ProvisionError> {
        let mut trail = Trail::new(current.user_name.clone());
        let result = self
            .update_user_checked(&current, &change, &mut trail)
            .await;
        self.finish(actor, "update_user", &trail, result)
    }

    async fn update_user_checked(
        &self,
        current: &UserRecord,
        change: &UserChange,
        trail: &mut Trail,
    ) -> Result<UserRecord, ProvisionError> {
        // Checked again: a reload may have excluded the user since it was read.
        self.hide_excluded_user(&current.user_name, &current.id)?;
        let policy = self.policy();
        check_password(&policy, change)?;
        if let Some(new_name) = &change.user_name {
            if !names::same(new_name.trim(), &current.user_name) {
                return Err(ProvisionError::invalid(
                    "mutability",
                    format!(
                        "userName cannot change from {:?} to {new_name:?}: the platform cannot rename users; deprovision and provision a new user instead",
                        current.user_name
                    ),
                ));
            }
        }
        self.update_user_steps(&policy, current, change, &mut trail.changes)
            .await?;
        self.read_back_user(&policy, current, change).await
    }

    async fn update_user_steps(
        &self,
        policy: &Policy,
        current: &UserRecord,
        change: &UserChange,
        changes: &mut Vec<String>,
    ) -> Result<(), ProvisionError> {
        let name = &current.user_name;
        let extensions =
            extension_values(policy, change, &current.attributes, &current.external_id);
        let previous = previous_values(policy, current, &extensions);
        // What may have changed, so a failure can put it back: set when the write was
        // confirmed or its answer lost (it may have happened either way).
        let mut wrote_extensions = false;
        let mut flipped_enabled: Option<bool> = None;
        let mut tags_before: Option<Vec<crate::tag::Tag>> = None;
        let result = async {
            if !extensions.is_empty() {
                let written =
                    write_idempotent(|| self.platform.set_user_extensions(name, &extensions)).await;
                wrote_extensions = may_have_happened(&written);
                written?;
                changes.push(format!("set {}", keys(&extensions)));
            }
            let external_id = resolve(&change.external_id, current.external_id.as_ref());
            if let (Some(vocabulary), Some(value)) =
                (user_external_id_vocabulary(policy), external_id)
            {
                let wanted = if value.is_empty() {
                    Change::Clear
                } else {
                    Change::Set(value)
                };
                let tags = read_again(|| self.platform.get_user(name)).await?.tags;
                let next = with_external_id(Some(vocabulary), tags.clone(), &wanted);
                if next != tags {
                    let written =
                        write_idempotent(|| self.platform.set_user_tags(name, &next)).await;
                    if may_have_happened(&written) {
                        tags_before = Some(tags);
                    }
                    written?;
                    changes.push("externalId tag set".into());
                }
            }
            if let Some(password) = &change.password {
                write_idempotent(|| self.platform.assign_password(name, password)).await?;
                changes.push("password set".into());
            }
            match change.active {
                Some(true) if !current.active => {
                    let enabled =
                        write_idempotent(|| self.platform.set_user_enabled(name, true)).await;
                    if may_have_happened(&enabled) {
                        flipped_enabled = Some(true);
                    }
                    enabled?;
                    changes.push("enabled".into());
                }
                Some(false) => {
                    if current.active {
                        let disabled =
                            write_idempotent(|| self.platform.set_user_enabled(name, false)).await;
                        if may_have_happened(&disabled) {
                            flipped_enabled = Some(false);
                        }
                        disabled?;
                        changes.push("disabled".into());
                    }
                    // Also when already disabled: a session left by an earlier failed attempt
                    // must not outlive the retry.
                    write_idempotent(|| self.platform.terminate_sessions(name)).await?;
                }
                _ => {}
            }
            Ok::<(), PlatformError>(())
        }
        .await;
        if let Err(e) = result {
            let mut left = Vec::new();
            if let Some(now) = flipped_enabled {
                let undo =
                    undo_with_retries(false, || self.platform.set_user_enabled(name, !now)).await;
                let (done, state) = if now {
                    ("disabled again", "enabled")
                } else {
                    ("enabled again", "disabled")
                };
                match undo {
                    Ok(()) => changes.push(format!("{done} after the failure")),
                    Err(u) => {
                        changes.push(format!(
                            "could not undo the change: the user stays {state} ({u})"
                        ));
                        left.push(format!("the user stays {state}"));
                    }
                }
            }
            if let Some(tags) = &tags_before {
                match undo_with_retries(false, || self.platform.set_user_tags(name, tags)).await {
                    Ok(()) => changes
                        .push("restored the previous externalId tag after the failure".into()),
                    Err(u) => {
                        changes.push(format!("could not restore the externalId tag ({u})"));
                        left.push("the new externalId tag stays".into());
                    }
                }
            }
            if wrote_extensions {
                let undo =
                    undo_with_retries(false, || self.platform.set_user_extensions(name, &previous))
                        .await;
                match undo {
                    Ok(()) => changes
                        .push("restored the previous attribute values after the failure".into()),
                    Err(u) => {
                        changes.push(format!(
                            "could not restore attribute values ({u}): {} stay as written",
                            keys(&extensions)
                        ));
                        left.push(format!("{} stay as written", keys(&extensions)));
                    }
                }
            }
            if !left.is_empty() {
                tracing::error!(user = %name, left = %left.join("; "), error = %e,
                    "a failed update could not be undone completely");
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn delete_user(&self, actor: &Actor, id: &str) -> Result<(), ProvisionError> {
        let mut trail = Trail::new(name_for(id).unwrap_or_else(|| id.to_string()));
        let result = self.delete_user_checked(id, &mut trail).await;
        self.finish(actor, "delete_user", &trail, result)
    }

    async fn delete_user_checked(&self, id: &str, trail: &mut Trail) -> Result<(), ProvisionError> {
        let policy = self.policy();
        let name = name_for(id).ok_or_else(|| ProvisionError::NotFound(format!("User {id}")))?;
        self.hide_excluded_user(&name, id)?;
        let user = read_again(|| self.platform.get_user(&name))
            .await
            .map_err(not_found_as("User", id))?;
        trail.target = user.name.clone();
        self.hide_excluded_user(&user.name, id)?;
        let changes = &mut trail.changes;
        let user = user.name.as_str();
        match policy.config.deprovision {
            DeprovisionMode::Delete => {
                // Sessions first: a deleted user's session would otherwise linger.
                write_idempotent(|| self.platform.terminate_sessions(user)).await?;
                self.delete_entity(
                    user,
                    || self.platform.delete_user(user),
                    || async {
                        read_again(|| self.platform.get_user(user))
                            .await
                            .map(|_| ())
                    },
                )
                .await?;
                changes.push("deleted".to_string());
            }
            DeprovisionMode::Disable => {
                let was_enabled = read_again(|| self.platform.is_user_enabled(user)).await?;
                if was_enabled {
                    let disabled =
                        write_idempotent(|| self.platform.set_user_enabled(user, false)).await;
                    if let Err(e) = disabled {
                        if e.outcome_unknown() {
                            self.reenable_after_failure(user, changes).await;
                        }
                        return Err(e.into());
                    }
                    changes.push("disabled (deprovision = disable)".to_string());
                }
                if let Err(e) = write_idempotent(|| self.platform.terminate_sessions(user)).await {
                    // Disabled with its sessions alive is neither state: back to where it was.
                    if was_enabled {
                        self.reenable_after_failure(user, changes).await;
                    }
                    return Err(e.into());
                }
                changes.push("sessions ended".to_string());
            }
        }
        Ok(())
    }

    async fn reenable_after_failure(&self, user: &str, changes: &mut Vec<String>) {
        match undo_with_retries(false, || self.platform.set_user_enabled(user, true)).await {
            Ok(()) => changes.push("enabled again after the failure".into()),
            Err(u) => {
                tracing::error!(%user, error = %u, "a failed deprovision could not be undone: the user stays disabled");
                changes.push(format!(
                    "could not undo the change: the user stays disabled ({u})"
                ));
            }
        }
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

    // ---------------------------------------------------------------- groups

    /// Platform names of the groups the identity provider may see.
    pub async fn group_names(&self) -> Result<Vec<String>, ProvisionError> {
        let policy = self.policy();
        Ok(self
            .platform
            .list_groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .filter(|n| policy.is_group_visible(n))
            .collect())
    }

    /// The visible groups whose externalId is `external_id`, found by their externalId tag in
    /// one platform call; none when externalIds are not kept (no vocabulary configured).
    pub async fn group_names_with_external_id(
        &self,
        external_id: &str,
    ) -> Result<Vec<String>, ProvisionError> {
        let policy = self.policy();
        let Some(vocabulary) = &policy.config.group_external_id_vocabulary else {
            return Ok(Vec::new());
        };
        // A term the gateway would never have written (see `with_external_id`) names nothing.
        if external_id.is_empty() || external_id.contains(';') {
            return Ok(Vec::new());
        }
        let tag = crate::tag::Tag {
            vocabulary: vocabulary.clone(),
            term: external_id.to_string(),
        };
        Ok(
            read_again(|| self.platform.find_by_tag(MemberKind::Group, &tag))
                .await?
                .into_iter()
                .map(|g| g.name)
                .filter(|n| policy.is_group_visible(n))
                .collect(),
        )
    }

    /// The visible users whose externalId is `external_id`, found by their externalId tag in
    /// one platform call; `None` when the externalId is kept in an extension property instead
    /// (no query can find it), and empty when externalIds are not kept at all.
    pub async fn user_names_with_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Vec<String>>, ProvisionError> {
        let policy = self.policy();
        if policy.config.external_id_property.is_some() {
            return Ok(None);
        }
        let Some(vocabulary) = user_external_id_vocabulary(&policy) else {
            return Ok(Some(Vec::new()));
        };
        let tag = crate::tag::Tag {
            vocabulary: vocabulary.clone(),
            term: external_id.to_string(),
        };
        // A term the gateway would never have written names nothing.
        if with_external_id(
            Some(vocabulary),
            Vec::new(),
            &Change::Set(external_id.to_string()),
        ) != vec![tag.clone()]
        {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(
            read_again(|| self.platform.find_by_tag(MemberKind::User, &tag))
                .await?
                .into_iter()
                .map(|u| u.name)
                .filter(|n| !policy.is_user_excluded(n))
                .collect(),
        ))
    }

    fn group_name_of(&self, id: &str) -> Result<String, ProvisionError> {
        let name =
            group_name_for(id).ok_or_else(|| ProvisionError::NotFound(format!("Group {id}")))?;
        if !self.policy().is_group_visible(&name) {
            return Err(ProvisionError::NotFound(format!("Group {id}")));
        }
        Ok(name)
    }

    pub async fn get_group(&self, id: &str) -> Result<GroupRecord, ProvisionError> {
        let name = self.group_name_of(id)?;
        self.read_group(&name).await
    }

    /// The group a PUT or PATCH is about to change (see [`Self::user_for_change`]).
    pub async fn group_for_change(
        &self,
        actor: &Actor,
        operation: &str,
        id: &str,
    ) -> Result<GroupRecord, ProvisionError> {
        let mut trail = Trail::new(group_name_for(id).unwrap_or_else(|| id.to_string()));
        let result = async {
            let name = self.changeable_group_name(id)?;
            let group = self.read_group(&name).await?;
            trail.target = group.platform_name.clone();
            Ok(group)
        }
        .await;
        match result {
            Ok(group) => Ok(group),
            Err(e) => self.finish(actor, operation, &trail, Err(e)),
        }
    }

    /// The platform name of a group that SCIM may change; not found (with the rule kept for
    /// the audit log) when the group is excluded and no mapping makes it visible.
    fn changeable_group_name(&self, id: &str) -> Result<String, ProvisionError> {
        let name =
            group_name_for(id).ok_or_else(|| ProvisionError::NotFound(format!("Group {id}")))?;
        if !self.policy().is_group_visible(&name) {
            return Err(ProvisionError::Hidden {
                rule: Rule::GroupExclusion,
                what: format!("Group {id}"),
                detail: format!("{name} is on the group provisioning exclusion list"),
            });
        }
        Ok(name)
    }

    pub async fn read_group(&self, platform_name: &str) -> Result<GroupRecord, ProvisionError> {
        let policy = self.policy();
        if !policy.is_group_visible(platform_name) {
            return Err(ProvisionError::NotFound(format!("Group {platform_name}")));
        }
        let group = read_again(|| self.platform.get_group(platform_name))
            .await
            .map_err(not_found_as("Group", platform_name))?;
        let members = read_again(|| self.platform.group_members(&group.name))
            .await
            .map_err(not_found_as("Group", platform_name))?
            .into_iter()
            .filter(|m| member_visible(&policy, m))
            .map(|m| MemberRef {
                id: member_id(&m),
                display: Some(match m.kind {
                    MemberKind::Group => policy.idp_group(&m.name),
                    MemberKind::User => m.name.clone(),
                }),
                kind: Some(m.kind),
            })
            .collect();
        let external_id = policy
            .config
            .group_external_id_vocabulary
            .as_ref()
            .and_then(|vocab| group.tags.iter().find(|t| &t.vocabulary == vocab))
            .map(|t| t.term.clone());
        Ok(GroupRecord {
            id: group_id_for(&group.name),
            display_name: policy.idp_group(&group.name),
            platform_name: group.name,
            external_id,
            members,
            last_modified: group.last_modified,
        })
    }

    /// Reads several groups at once, in order, leaving out any that vanished.
    pub async fn read_groups(
        &self,
        platform_names: Vec<String>,
    ) -> Result<Vec<GroupRecord>, ProvisionError> {
        use futures_util::StreamExt;
        let reads = futures_util::stream::iter(platform_names)
            .map(|n| async move { self.read_group(&n).await })
            .buffered(LIST_READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        keep_found(reads)
    }

    pub async fn create_group(
        &self,
        actor: &Actor,
        change: GroupChange,
    ) -> Result<GroupRecord, ProvisionError> {
        let idp_name = change
            .display_name
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        let policy = self.policy();
        let mut trail = Trail::new(policy.platform_group(&idp_name));
        let result = self
            .create_group_checked(actor, &policy, &idp_name, change, &mut trail)
            .await;
        self.finish(actor, "create_group", &trail, result)
    }

    async fn create_group_checked(
        &self,
        actor: &Actor,
        policy: &Policy,
        idp_name: &str,
        change: GroupChange,
        trail: &mut Trail,
    ) -> Result<GroupRecord, ProvisionError> {
        if idp_name.is_empty() {
            return Err(ProvisionError::invalid(
                "invalidValue",
                "displayName is required",
            ));
        }
        let platform_name = policy.platform_group(idp_name);
        if policy.is_group_excluded(&platform_name) {
            return Err(ProvisionError::Refused {
                rule: Rule::GroupExclusion,
                detail: format!("{platform_name} is on the group provisioning exclusion list"),
            });
        }
        if let Some(reason) = names::invalid_reason(&platform_name) {
            return Err(ProvisionError::invalid(
                "invalidValue",
                format!("{platform_name:?} cannot be a platform group name: {reason}"),
            ));
        }
        let members = match change.members {
            MembersChange::Replace(m) => m,
            MembersChange::Edit { add, .. } => add,
            MembersChange::Keep => Vec::new(),
        };
        // Members are resolved before the group exists: a member that names nothing fails the
        // create before anything is written.
        let plan = self
            .plan_members(
                actor,
                "create_group",
                policy,
                &platform_name,
                members,
                Vec::new(),
            )
            .await?;
        let unfinished = self
            .existing_unfinished(MemberKind::Group, &platform_name)
            .await?;
        let defaults = &policy.config.group_defaults;
        let tags = with_external_id(
            policy.config.group_external_id_vocabulary.as_ref(),
            defaults.tags.clone().unwrap_or_default(),
            &change.external_id,
        );
        let description = defaults.description.clone().unwrap_or_default();
        let created = if unfinished {
            // Left by an earlier attempt: resumed below, like a create whose answer was lost.
            Err(PlatformError::AlreadyExists(platform_name.clone()))
        } else {
            self.platform
                .create_group(&NewGroup {
                    name: platform_name.clone(),
                    description: format!("{UNFINISHED}{description}"),
                    project: defaults.project.clone(),
                    tags,
                })
                .await
        };
        let resumed = match created {
            Ok(()) => false,
            Err(e) if gateway_fault(&e) => return Err(e.into()),
            // As for users: the platform tells whether the create happened or an earlier
            // attempt left the group unfinished.
            Err(e) => match read_again(|| self.platform.get_group(&platform_name)).await {
                Ok(group) if is_unfinished(&group.description) => {
                    !e.outcome_unknown() || matches!(e, PlatformError::AlreadyExists(_))
                }
                Ok(_) => {
                    return Err(ProvisionError::Conflict(format!(
                        "Group {idp_name} already exists"
                    )))
                }
                Err(_) => return Err(e.into()),
            },
        };
        trail.changes.push(if resumed {
            format!("resumed the unfinished create of {platform_name}")
        } else {
            format!("created {platform_name}")
        });
        let added: Vec<Member> = plan
            .iter()
            .filter(|w| w.adding)
            .map(|w| w.member.clone())
            .collect();
        let rest = async {
            self.apply_member_writes(&platform_name, plan, false, &mut trail.changes)
                .await?;
            write_idempotent(|| {
                self.platform
                    .set_group_description(&platform_name, &description)
            })
            .await?;
            Ok::<(), ProvisionError>(())
        };
        if let Err(e) = rest.await {
            // A group with only some of its members is worse than none: the IdP retries.
            let undo = undo_with_retries(true, || self.platform.delete_group(&platform_name)).await;
            match undo {
                Ok(()) => trail
                    .changes
                    .push(format!("removed {platform_name} again after the failure")),
                Err(u) => {
                    tracing::error!(group = %platform_name, error = %u,
                        "a failed create could not be undone: the group stays, marked unfinished, until the identity provider retries");
                    trail.changes.push(format!(
                        "could not remove {platform_name} ({u}): it stays, marked unfinished, for the retry to complete"
                    ));
                }
            }
            return Err(e);
        }
        match self.read_group(&platform_name).await {
            Err(e @ (ProvisionError::Platform(_) | ProvisionError::Partial { .. })) => {
                tracing::warn!(group = %platform_name, error = %e,
                    "the group was created but reading it back failed; answering with what was written");
                Ok(GroupRecord {
                    id: group_id_for(&platform_name),
                    display_name: policy.idp_group(&platform_name),
                    platform_name: platform_name.clone(),
                    external_id: match change.external_id {
                        Change::Set(v) if policy.config.group_external_id_vocabulary.is_some() => {
                            Some(v)
                        }
                        _ => None,
                    },
                    members: added.iter().map(|m| member_ref(policy, m)).collect(),
                    last_modified: None,
                })
            }
            other => other,
        }
    }

    pub async fn update_group(
        &self,
        actor: &Actor,
        id: &str,
        change: GroupChange,
    ) -> Result<GroupRecord, ProvisionError> {
        let current = self.group_for_change(actor, "update_group", id).await?;
        self.update_read_group(actor, current, change).await
    }

    /// `update_group` for a group the caller has just read, so the platform is not asked for
    /// the same group and its members twice.
    pub async fn update_read_group(
        &self,
        actor: &Actor,
        current: GroupRecord,
        change: GroupChange,
    ) -> Result<GroupRecord, ProvisionError> {
        let mut trail = Trail::new(current.platform_name.clone());
        let result = self
            .update_group_checked(actor, &current, change, &mut trail)
            .await;
        self.finish(actor, "update_group", &trail, result)
    }

    async fn update_group_checked(
        &self,
        actor: &Actor,
        current: &GroupRecord,
        change: GroupChange,
        trail: &mut Trail,
    ) -> Result<GroupRecord, ProvisionError> {
        // Checked again: a reload may have excluded the group since it was read.
        let platform_name = self.changeable_group_name(&current.id)?;
        let policy = self.policy();
        if let Some(new_name) = &change.display_name {
            let target = policy.platform_group(new_name);
            if !names::same(&target, &platform_name) {
                return Err(ProvisionError::invalid(
                    "mutability",
                    format!(
                        "displayName cannot change from {:?} to {new_name:?}: the platform cannot rename groups",
                        current.display_name
                    ),
                ));
            }
        }
        let (add, remove, replacing) = match change.members {
            MembersChange::Keep => (Vec::new(), Vec::new(), false),
            MembersChange::Edit { add, remove } => (add, remove, false),
            MembersChange::Replace(wanted) => (wanted, Vec::new(), true),
        };
        let mut plan = self
            .plan_members(
                actor,
                "update_group",
                &policy,
                &current.platform_name,
                add,
                remove,
            )
            .await?;
        if replacing {
            // Everything visible that the new list does not name goes; protected groups nested
            // by an administrator stay, as do members the identity provider cannot see.
            let wanted: Vec<String> = plan
                .iter()
                .filter(|w| w.adding)
                .map(|w| member_id(&w.member))
                .collect();
            for m in &current.members {
                let Some(kind) = m.kind else { continue };
                let Some(name) = member_name(m) else { continue };
                let member = Member { name, kind };
                if kind == MemberKind::Group && policy.is_group_excluded(&member.name) {
                    continue;
                }
                if !wanted.contains(&m.id) {
                    plan.push(MemberWrite {
                        adding: false,
                        member,
                    });
                }
            }
        }
        plan.retain(|w| !w.is_noop(&current.members));
        let mut old_tags = None;
        if !matches!(change.external_id, Change::Keep) {
            if policy.is_group_excluded(&platform_name) {
                // A mapped built-in group: only its membership may change, and the identity
                // provider's externalId for it is simply not kept.
                tracing::warn!(
                    group = %current.platform_name,
                    "externalId ignored: a protected group's tags are not changed through SCIM"
                );
            } else {
                let platform_group = read_again(|| self.platform.get_group(&platform_name))
                    .await
                    .map_err(not_found_as("Group", &current.id))?;
                let tags = with_external_id(
                    policy.config.group_external_id_vocabulary.as_ref(),
                    platform_group.tags.clone(),
                    &change.external_id,
                );
                if tags != platform_group.tags {
                    write_idempotent(|| self.platform.set_group_tags(&platform_name, &tags))
                        .await?;
                    trail.changes.push("externalId tag set".into());
                    old_tags = Some(platform_group.tags);
                }
            }
        }
        let mut after = current.clone();
        for w in &plan {
            let id = member_id(&w.member);
            after.members.retain(|m| m.id != id);
            if w.adding {
                after.members.push(member_ref(&policy, &w.member));
            }
        }
        if let Err(e) = self
            .apply_member_writes(&current.platform_name, plan, true, &mut trail.changes)
            .await
        {
            if let Some(tags) = old_tags {
                match undo_with_retries(false, || {
                    self.platform.set_group_tags(&platform_name, &tags)
                })
                .await
                {
                    Ok(()) => trail
                        .changes
                        .push("externalId tag restored after the failure".into()),
                    Err(u) => {
                        tracing::error!(group = %platform_name, error = %u, "the externalId tag could not be restored after a failed change");
                        trail.changes.push(format!(
                            "could not restore the externalId tag ({u}): it stays as written"
                        ));
                    }
                }
            }
            return Err(e);
        }
        match self.read_group(&current.platform_name).await {
            Err(e @ (ProvisionError::Platform(_) | ProvisionError::Partial { .. })) => {
                tracing::warn!(group = %current.platform_name, error = %e,
                    "the change was made but reading the group back failed; answering with what was written");
                Ok(after)
            }
            other => other,
        }
    }

    pub async fn delete_group(&self, actor: &Actor, id: &str) -> Result<(), ProvisionError> {
        let mut trail = Trail::new(group_name_for(id).unwrap_or_else(|| id.to_string()));
        let result = async {
            let policy = self.policy();
            let platform_name = self.changeable_group_name(id)?;
            let group = read_again(|| self.platform.get_group(&platform_name))
                .await
                .map_err(not_found_as("Group", id))?;
            trail.target = group.name.clone();
            if policy.is_group_excluded(&group.name) {
                // Visible only through a mapping, which lets its membership change, nothing else.
                return Err(ProvisionError::Refused {
                    rule: Rule::GroupExclusion,
                    detail: format!(
                        "{} is on the group provisioning exclusion list: only its membership may change",
                        group.name
                    ),
                });
            }
            let name = group.name.as_str();
            self.delete_entity(name, || self.platform.delete_group(name), || async {
                read_again(|| self.platform.get_group(name)).await.map(|_| ())
            })
            .await?;
            trail.changes.push("deleted".into());
            Ok(())
        }
        .await;
        self.finish(actor, "delete_group", &trail, result)
    }

    /// Resolves every member of a change before anything is written, so a reference that names
    /// nothing fails the whole change with nothing applied. Excluded members are skipped (and
    /// audited); changes that are already true are dropped.
    async fn plan_members(
        &self,
        actor: &Actor,
        operation: &str,
        policy: &Policy,
        group: &str,
        add: Vec<MemberRef>,
        remove: Vec<MemberRef>,
    ) -> Result<Vec<MemberWrite>, ProvisionError> {
        use futures_util::StreamExt;
        let references: Vec<(bool, MemberRef)> = add
            .into_iter()
            .map(|m| (true, m))
            .chain(remove.into_iter().map(|m| (false, m)))
            .collect();
        // Resolved concurrently but taken in the order asked (`buffered`), so the plan, its
        // "last wins" rule and the skip audit lines are exactly those of a serial resolution.
        let resolved = futures_util::stream::iter(references)
            .map(|(adding, reference)| async move {
                let outcome = self.resolve_member(policy, group, &reference).await;
                (adding, reference, outcome)
            })
            .buffered(self.member_concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut plan: Vec<MemberWrite> = Vec::new();
        let mut failures: Vec<(String, ProvisionError)> = Vec::new();
        for (adding, reference, outcome) in resolved {
            match outcome {
                Ok(Resolved::Principal(member)) => {
                    let write = MemberWrite { adding, member };
                    // The same member named twice (or added and removed) counts once, last wins.
                    plan.retain(|w| member_id(&w.member) != member_id(&write.member));
                    plan.push(write);
                }
                Ok(Resolved::Skipped { rule, detail }) => {
                    self.record_skip(actor, operation, group, rule, &detail)
                }
                Err(e) => failures.push((member_label(&reference), e)),
            }
        }
        if let Some(e) = combine_failures(failures) {
            return Err(e);
        }
        Ok(plan)
    }

    /// Makes the planned membership writes, up to `member_concurrency` at once. When one fails,
    /// no further write starts, the ones in flight are waited for, and every one the platform
    /// confirmed is taken back (RFC 7644 §3.5.2: a PATCH is atomic), so the answer is an error
    /// only over an unchanged group. Every plan holds each member once, so the writes are
    /// independent of each other and their order does not matter.
    async fn apply_member_writes(
        &self,
        group: &str,
        plan: Vec<MemberWrite>,
        take_back: bool,
        changes: &mut Vec<String>,
    ) -> Result<(), ProvisionError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let mut waiting = plan.into_iter();
        let mut in_flight = FuturesUnordered::new();
        let mut done: Vec<MemberWrite> = Vec::new();
        let mut failed: Vec<(MemberWrite, PlatformError)> = Vec::new();
        loop {
            while failed.is_empty() && in_flight.len() < self.member_concurrency {
                let Some(write) = waiting.next() else { break };
                in_flight.push(async move {
                    let outcome = self.write_member(group, &write).await;
                    (write, outcome)
                });
            }
            let Some((write, outcome)) = in_flight.next().await else {
                break;
            };
            match outcome {
                Ok(()) => {
                    changes.push(write.describe());
                    done.push(write);
                }
                Err(e) => failed.push((write, e)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let others = failed.len() - 1;
        let mut failed = failed.into_iter();
        let Some((write, e)) = failed.next() else {
            return Ok(());
        };
        let label = format!(
            "{} {} {}{}",
            if write.adding { "adding" } else { "removing" },
            write.member.kind.as_str(),
            write.member.name,
            if others > 0 {
                format!(" (and {others} other membership writes)")
            } else {
                String::new()
            }
        );
        // A group created for this request is removed whole instead.
        let mut undo_each = if take_back { done } else { Vec::new() };
        if take_back {
            // A write whose answer was lost may have happened: taking it back is harmless if
            // it did not.
            undo_each.extend(
                std::iter::once((write.clone(), e.outcome_unknown()))
                    .chain(failed.map(|(w, e)| {
                        let unknown = e.outcome_unknown();
                        (w, unknown)
                    }))
                    .filter(|(_, unknown)| *unknown)
                    .map(|(w, _)| w),
            );
        }
        let cause: ProvisionError = match e {
            PlatformError::NotFound(_) => {
                missing_member(&member_id(&write.member), Some(write.member.kind))
            }
            other => other.into(),
        };
        let mut not_undone = Vec::new();
        let undone = {
            use futures_util::StreamExt as _;
            futures_util::stream::iter(undo_each.into_iter().rev())
                .map(|made| async move {
                    let undo = undo_with_retries(false, || async {
                        if made.adding {
                            self.platform.remove_group_member(group, &made.member).await
                        } else {
                            self.platform.add_group_member(group, &made.member).await
                        }
                    })
                    .await;
                    (made, undo)
                })
                .buffered(self.member_concurrency)
                .collect::<Vec<_>>()
                .await
        };
        for (made, undo) in undone {
            match undo {
                Ok(()) => changes.push(format!("undone: {}", made.describe())),
                Err(u) => not_undone.push(format!("{} ({u})", made.describe())),
            }
        }
        if not_undone.is_empty() {
            return Err(ProvisionError::Partial {
                detail: format!("{label} failed, nothing was changed: {cause}"),
                first: Box::new(cause),
            });
        }
        tracing::error!(%group, left = %not_undone.join("; "),
            "a failed membership change could not be taken back completely");
        changes.extend(not_undone.iter().map(|n| format!("could not undo: {n}")));
        Err(ProvisionError::Partial {
            detail: format!(
                "{label} failed: {cause}; these changes could not be taken back: {}",
                not_undone.join("; ")
            ),
            first: Box::new(cause),
        })
    }

    /// One membership write. Members calls are idempotent (adding a member twice, or removing
    /// an absent one, changes nothing), so an unanswered one is simply sent again.
    async fn write_member(&self, group: &str, write: &MemberWrite) -> Result<(), PlatformError> {
        write_idempotent(|| async {
            if write.adding {
                self.platform.add_group_member(group, &write.member).await
            } else {
                self.platform
                    .remove_group_member(group, &write.member)
                    .await
            }
        })
        .await
    }

    /// The one place where a member reference becomes a platform principal, and so the one
    /// place the exclusion lists are applied to members: on the name asked for, whatever the
    /// declared type, and again on the principal the platform resolved it to. A `type` hint
    /// may choose between a user and a group; it never avoids a check.
    async fn resolve_member(
        &self,
        policy: &Policy,
        group: &str,
        member: &MemberRef,
    ) -> Result<Resolved, ProvisionError> {
        let group_id = is_group_id(&member.id);
        let name = if group_id {
            group_name_for(&member.id)
        } else {
            name_for(&member.id)
        }
        .ok_or_else(|| missing_member(&member.id, member.kind))?;
        if let Some(skip) = excluded_member(policy, &name, group_id) {
            return Ok(skip);
        }
        let resolved = if group_id {
            self.find_group(&name)
                .await?
                .ok_or_else(|| missing_member(&member.id, Some(MemberKind::Group)))?
        } else {
            // An old-form id names a user or a group; the hint says which to try first, and a
            // hint that names nothing is treated like no hint (clients get it wrong).
            let order = match member.kind {
                Some(MemberKind::Group) => [MemberKind::Group, MemberKind::User],
                _ => [MemberKind::User, MemberKind::Group],
            };
            let mut found = None;
            for kind in order {
                found = match kind {
                    MemberKind::User => self.find_user(&name).await?,
                    MemberKind::Group => self.find_group(&name).await?,
                };
                if found.is_some() {
                    break;
                }
            }
            found.ok_or_else(|| missing_member(&member.id, member.kind))?
        };
        if let Some(skip) = excluded_principal(policy, &resolved) {
            return Ok(skip);
        }
        if resolved.kind == MemberKind::Group && names::same(&resolved.name, group) {
            return Err(ProvisionError::invalid(
                "invalidValue",
                format!("a group cannot be a member of itself ({group})"),
            ));
        }
        Ok(Resolved::Principal(resolved))
    }

    /// Existence before a create: the platform answers a duplicate create with the same bare
    /// 500 as any other failure, so a duplicate is found by reading, and is a 409 whatever the
    /// platform would have said. An entity an earlier attempt left unfinished (its description
    /// carries the marker) is no duplicate: `true`, and the create resumes it.
    async fn existing_unfinished(
        &self,
        kind: MemberKind,
        name: &str,
    ) -> Result<bool, ProvisionError> {
        let found = match kind {
            MemberKind::User => read_again(|| self.platform.get_user(name))
                .await
                .map(|u| (u.name, u.description)),
            MemberKind::Group => read_again(|| self.platform.get_group(name))
                .await
                .map(|g| (g.name, g.description)),
        };
        match found {
            Err(PlatformError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
            Ok((_, description)) if is_unfinished(&description) => Ok(true),
            Ok((existing, _)) => Err(ProvisionError::Conflict(format!(
                "{} {existing} already exists",
                kind.as_str()
            ))),
        }
    }

    async fn find_user(&self, name: &str) -> Result<Option<Member>, ProvisionError> {
        match read_again(|| self.platform.get_user(name)).await {
            Ok(u) => Ok(Some(Member {
                name: u.name,
                kind: MemberKind::User,
            })),
            Err(PlatformError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_group(&self, name: &str) -> Result<Option<Member>, ProvisionError> {
        match read_again(|| self.platform.get_group(name)).await {
            Ok(g) => Ok(Some(Member {
                name: g.name,
                kind: MemberKind::Group,
            })),
            Err(PlatformError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl MemberWrite {
    fn describe(&self) -> String {
        format!(
            "{} {} {}",
            if self.adding { "added" } else { "removed" },
            self.member.kind.as_str(),
            self.member.name
        )
    }

    /// Adding a member that is there, or removing one that is not.
    fn is_noop(&self, current: &[MemberRef]) -> bool {
        let id = member_id(&self.member);
        let present = current.iter().any(|c| c.id == id);
        self.adding == present
    }
}

/// A member's id in the current form: users and groups have separate id spaces.
fn member_id(m: &Member) -> String {
    match m.kind {
        MemberKind::User => id_for(&m.name),
        MemberKind::Group => group_id_for(&m.name),
    }
}

/// A member as the identity provider sees it.
fn member_ref(policy: &Policy, m: &Member) -> MemberRef {
    MemberRef {
        id: member_id(m),
        display: Some(match m.kind {
            MemberKind::Group => policy.idp_group(&m.name),
            MemberKind::User => m.name.clone(),
        }),
        kind: Some(m.kind),
    }
}

/// The platform name of a member the gateway rendered itself.
fn member_name(m: &MemberRef) -> Option<String> {
    match m.kind {
        Some(MemberKind::Group) => group_name_for(&m.id),
        _ => name_for(&m.id),
    }
}

fn member_label(member: &MemberRef) -> String {
    match &member.display {
        Some(d) => format!("{d} (id {})", member.id),
        None => member.id.clone(),
    }
}

/// Before the platform is asked: a name on a list is left alone whatever type the client
/// declared, since an untyped (or mistyped) reference could resolve to it.
fn excluded_member(policy: &Policy, name: &str, group_id: bool) -> Option<Resolved> {
    if !group_id && policy.is_user_excluded(name) {
        return Some(Resolved::Skipped {
            rule: Rule::UserExclusion,
            detail: format!("{name} is on the user provisioning exclusion list"),
        });
    }
    // An old-form id that names a protected group is caught once it resolves to the group.
    if group_id && policy.is_group_excluded(name) {
        return Some(protected_group(name));
    }
    None
}

/// After the platform resolved the reference: the principal it names, in the platform's own
/// spelling, is checked against the list for its kind.
fn excluded_principal(policy: &Policy, member: &Member) -> Option<Resolved> {
    match member.kind {
        MemberKind::User if policy.is_user_excluded(&member.name) => Some(Resolved::Skipped {
            rule: Rule::UserExclusion,
            detail: format!("{} is on the user provisioning exclusion list", member.name),
        }),
        MemberKind::Group if policy.is_group_excluded(&member.name) => {
            Some(protected_group(&member.name))
        }
        _ => None,
    }
}

/// A protected group is never nested into (or taken out of) another group through SCIM: its
/// members would become members of the outer group. A mapping makes its own membership
/// manageable, not its nesting.
fn protected_group(name: &str) -> Resolved {
    Resolved::Skipped {
        rule: Rule::GroupExclusion,
        detail: format!(
            "{name} is on the group provisioning exclusion list and is never nested through SCIM"
        ),
    }
}

/// One error for the members that could not be resolved, naming each.
fn combine_failures(failures: Vec<(String, ProvisionError)>) -> Option<ProvisionError> {
    if failures.len() <= 1 {
        return failures.into_iter().next().map(|(label, e)| match e {
            ProvisionError::Invalid { kind, detail } => ProvisionError::Invalid {
                kind,
                detail: format!("{detail}; nothing was changed ({label})"),
            },
            other => other,
        });
    }
    let detail = format!(
        "{} members could not be resolved, nothing was changed: {}",
        failures.len(),
        failures
            .iter()
            .map(|(m, e)| format!("{m}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let first = failures.into_iter().next().map(|(_, e)| e)?;
    Some(match first {
        ProvisionError::Invalid { kind, .. } => ProvisionError::Invalid { kind, detail },
        other => ProvisionError::Partial {
            detail,
            first: Box::new(other),
        },
    })
}

fn count_refusal(rule: Rule) {
    crate::metrics::metrics().count("scimgate_policy_refusals_total", &[("rule", rule.as_str())]);
}

fn missing_member(id: &str, kind: Option<MemberKind>) -> ProvisionError {
    let what = match kind {
        Some(MemberKind::User) => "no such user",
        Some(MemberKind::Group) => "no such group",
        None => "no user or group has this id",
    };
    ProvisionError::invalid("invalidValue", format!("member {id}: {what}"))
}

/// `tags` with the group's externalId term (in the configured vocabulary) set or cleared.
/// The vocabulary a user's `externalId` is kept in, when no extension property keeps it.
fn user_external_id_vocabulary(policy: &Policy) -> Option<&String> {
    match &policy.config.external_id_property {
        Some(_) => None,
        None => policy.config.user_external_id_vocabulary.as_ref(),
    }
}

/// The term of the first tag in `vocabulary`.
fn tag_term(tags: &[crate::tag::Tag], vocabulary: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.vocabulary == vocabulary)
        .map(|t| t.term.clone())
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

/// The user as a change leaves it, for the answer when reading it back keeps failing: the
/// platform confirmed each write, so this is what it holds.
fn user_after(policy: &Policy, base: &UserRecord, change: &UserChange) -> UserRecord {
    let mut user = base.clone();
    for (slot, c) in &change.attributes {
        if !policy.config.user_attributes.contains_key(slot) {
            continue;
        }
        match resolve(c, base.attributes.get(slot)) {
            Some(v) if v.is_empty() => {
                user.attributes.remove(slot);
            }
            Some(v) => {
                user.attributes.insert(slot.clone(), v);
            }
            None => {}
        }
    }
    if policy.config.external_id_property.is_some() {
        match resolve(&change.external_id, base.external_id.as_ref()) {
            Some(v) if v.is_empty() => user.external_id = None,
            Some(v) => user.external_id = Some(v),
            None => {}
        }
    }
    if let Some(active) = change.active {
        user.active = active;
    }
    user
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

fn member_visible(policy: &Policy, m: &Member) -> bool {
    match m.kind {
        MemberKind::User => !policy.is_user_excluded(&m.name),
        MemberKind::Group => policy.is_group_visible(&m.name),
    }
}

/// The platform's not-found names the entity in its own words; SCIM answers with the id asked.
fn not_found_as(kind: &'static str, asked: &str) -> impl Fn(PlatformError) -> ProvisionError {
    let asked = asked.to_string();
    move |e| match e {
        PlatformError::NotFound(_) => ProvisionError::NotFound(format!("{kind} {asked}")),
        other => other.into(),
    }
}

/// A password the platform's policy would refuse is a 400 naming the rule, before any call:
/// the platform itself would answer with a bare 500 that names nothing.
fn check_password(policy: &Policy, change: &UserChange) -> Result<(), ProvisionError> {
    let Some(password) = &change.password else {
        return Ok(());
    };
    let min = policy.config.password_min_length;
    let length = password.expose().chars().count();
    if length < min || length > MAX_PASSWORD_CHARS {
        return Err(ProvisionError::invalid(
            "invalidValue",
            format!(
                "password must be {min} to {MAX_PASSWORD_CHARS} characters long (the platform's password policy); it has {length}"
            ),
        ));
    }
    Ok(())
}

fn keys(values: &Extensions) -> String {
    values.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The extension property writes a change needs, given the current slot values.
fn extension_values(
    policy: &Policy,
    change: &UserChange,
    current: &BTreeMap<String, String>,
    current_external_id: &Option<String>,
) -> Extensions {
    let mut out = Extensions::new();
    for (slot, c) in &change.attributes {
        let Some(property) = policy.config.user_attributes.get(slot) else {
            continue;
        };
        let now = current.get(slot);
        if let Some(v) = resolve(c, now) {
            out.insert(property.clone(), v);
        }
    }
    if let Some(property) = &policy.config.external_id_property {
        if let Some(v) = resolve(&change.external_id, current_external_id.as_ref()) {
            out.insert(property.clone(), v);
        }
    }
    out
}

/// What to write for one attribute, or `None` when nothing changes.
fn resolve(change: &Change<String>, now: Option<&String>) -> Option<String> {
    match change {
        Change::Keep => None,
        Change::Set(v) if now == Some(v) => None,
        Change::Set(v) => Some(v.clone()),
        Change::Clear if now.is_none() => None,
        Change::Clear => Some(String::new()),
        Change::ClearIf(v) if now.is_some_and(|n| names::same(n, v)) => Some(String::new()),
        Change::ClearIf(_) => None,
    }
}

/// The values that `writes` overwrite, to put back if a later step fails.
fn previous_values(policy: &Policy, current: &UserRecord, writes: &Extensions) -> Extensions {
    let mut out = Extensions::new();
    for property in writes.keys() {
        let slot = policy
            .config
            .user_attributes
            .iter()
            .find(|(_, p)| *p == property)
            .map(|(s, _)| s);
        let value = match slot {
            Some(s) => current.attributes.get(s).cloned(),
            None => current.external_id.clone(),
        };
        out.insert(property.clone(), value.unwrap_or_default());
    }
    out
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

    #[test]
    fn changes_resolve_against_current_values() {
        let now = "a".to_string();
        assert_eq!(resolve(&Change::Set("a".into()), Some(&now)), None);
        assert_eq!(
            resolve(&Change::Set("b".into()), Some(&now)),
            Some("b".into())
        );
        assert_eq!(resolve(&Change::Clear, None), None);
        assert_eq!(resolve(&Change::Clear, Some(&now)), Some(String::new()));
        assert_eq!(
            resolve(&Change::ClearIf("A".into()), Some(&now)),
            Some(String::new())
        );
        assert_eq!(resolve(&Change::ClearIf("x".into()), Some(&now)), None);
        assert_eq!(resolve(&Change::Keep, Some(&now)), None);
    }
}
