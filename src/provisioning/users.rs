//! Users: reading them (the listing, one by id, the lookups by externalId), creating,
//! updating and deleting them, each step undone when a later one fails.

use super::policy::Policy;
use super::{
    gateway_fault, group_id_for, id_for, is_unfinished, keep_found, may_have_happened, name_for,
    not_found_as, read_again, undo_with_retries, with_external_id, write_idempotent, Actor, Change,
    GroupRef, ProvisionError, Provisioner, Rule, Trail, UserChange, UserRecord,
    LIST_READ_CONCURRENCY, UNFINISHED,
};
use crate::builtin::MAX_PASSWORD_CHARS;
use crate::config::DeprovisionMode;
use crate::platform::{names, Extensions, MemberKind, NewUser, PlatformError};
use std::collections::BTreeMap;

impl Provisioner {
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
