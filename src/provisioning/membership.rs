//! Group membership: member references resolved to platform principals under the policy,
//! the writes a change needs planned, then made in parallel and undone on failure.

use super::policy::Policy;
use super::{
    group_id_for, group_name_for, id_for, is_group_id, is_unfinished, name_for, read_again,
    undo_with_retries, write_idempotent, Actor, MemberRef, ProvisionError, Provisioner, Rule,
};
use crate::platform::{names, Member, MemberKind, PlatformError};

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
pub(super) struct MemberWrite {
    pub(super) adding: bool,
    pub(super) member: Member,
}

impl Provisioner {
    /// Resolves every member of a change before anything is written, so a reference that names
    /// nothing fails the whole change with nothing applied. Excluded members are skipped (and
    /// audited); changes that are already true are dropped.
    pub(super) async fn plan_members(
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
    pub(super) async fn apply_member_writes(
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
    pub(super) async fn existing_unfinished(
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
    pub(super) fn is_noop(&self, current: &[MemberRef]) -> bool {
        let id = member_id(&self.member);
        let present = current.iter().any(|c| c.id == id);
        self.adding == present
    }
}

/// A member's id in the current form: users and groups have separate id spaces.
pub(super) fn member_id(m: &Member) -> String {
    match m.kind {
        MemberKind::User => id_for(&m.name),
        MemberKind::Group => group_id_for(&m.name),
    }
}

/// A member as the identity provider sees it.
pub(super) fn member_ref(policy: &Policy, m: &Member) -> MemberRef {
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
pub(super) fn member_name(m: &MemberRef) -> Option<String> {
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

fn missing_member(id: &str, kind: Option<MemberKind>) -> ProvisionError {
    let what = match kind {
        Some(MemberKind::User) => "no such user",
        Some(MemberKind::Group) => "no such group",
        None => "no user or group has this id",
    };
    ProvisionError::invalid("invalidValue", format!("member {id}: {what}"))
}
