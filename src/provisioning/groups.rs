//! Groups: reading them (the listing, one by id, the lookups by externalId), creating,
//! updating and deleting them. Their membership changes are planned and written in
//! `membership.rs`.

use super::membership::{member_id, member_name, member_ref, MemberWrite};
use super::policy::Policy;
use super::{
    gateway_fault, group_id_for, group_name_for, is_unfinished, keep_found, not_found_as,
    read_again, undo_with_retries, with_external_id, write_idempotent, Actor, Change, GroupChange,
    GroupRecord, MemberRef, MembersChange, ProvisionError, Provisioner, Rule, Trail,
    LIST_READ_CONCURRENCY, UNFINISHED,
};
use crate::platform::{names, Member, MemberKind, NewGroup, PlatformError};

impl Provisioner {
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
}

fn member_visible(policy: &Policy, m: &Member) -> bool {
    match m.kind {
        MemberKind::User => !policy.is_user_excluded(&m.name),
        MemberKind::Group => policy.is_group_visible(&m.name),
    }
}
