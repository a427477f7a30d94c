//! The provisioning core driven against an in-memory platform: every policy rule checked
//! both in what the provisioner answers and in what it did (or did not do) to the platform.

use super::*;
use crate::builtin::default_user_attributes;
use crate::config::{DeprovisionMode, GroupDefaults, ProvisioningConfig, Secret, UserDefaults};
use crate::platform::{
    ActiveUser, EntityKind, EntitySummary, Extensions, Group, Member, NewGroup, NewUser, User,
};
use crate::tag::Tag;
use std::collections::BTreeSet;
use std::sync::Mutex;

// ------------------------------------------------------------------ the fake platform

/// The `UserExtensions` property set, plus the property that keeps SCIM `externalId`.
const KNOWN_PROPERTIES: [&str; 16] = [
    "firstName",
    "middleName",
    "lastName",
    "fullName",
    "title",
    "emailAddress",
    "altEmailAddresses",
    "workPhone",
    "homePhone",
    "mobilePhone",
    "smsAddress",
    "mailingAddress",
    "city",
    "state",
    "zipCode",
    "scimExternalId",
];

/// Calls that only read; everything else changes the platform.
const READS: [&str; 12] = [
    "current_user",
    "find_by_tag",
    "list_users",
    "get_user",
    "is_user_enabled",
    "user_extensions",
    "user_groups",
    "list_groups",
    "get_group",
    "group_members",
    "active_users",
    "entity_exists",
];

#[derive(Debug, Clone)]
struct FakeUser {
    name: String,
    description: String,
    project: String,
    home_mashup: String,
    mobile_mashup: String,
    tags: Vec<Tag>,
    enabled: bool,
    extensions: BTreeMap<String, String>,
    password: Option<String>,
}

impl FakeUser {
    fn named(name: &str) -> Self {
        FakeUser {
            name: name.to_string(),
            description: String::new(),
            project: String::new(),
            home_mashup: String::new(),
            mobile_mashup: String::new(),
            tags: Vec::new(),
            enabled: true,
            extensions: BTreeMap::new(),
            password: None,
        }
    }
}

#[derive(Debug, Clone)]
struct FakeGroup {
    name: String,
    description: String,
    project: String,
    tags: Vec<Tag>,
    members: Vec<Member>,
}

impl FakeGroup {
    fn named(name: &str) -> Self {
        FakeGroup {
            name: name.to_string(),
            description: String::new(),
            project: String::new(),
            tags: Vec::new(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    users: Vec<FakeUser>,
    groups: Vec<FakeGroup>,
    sessions: BTreeSet<String>,
    /// Projects and mashups, which provisioning only names.
    entities: Vec<(EntityKind, String)>,
}

impl State {
    fn user(&self, name: &str) -> Result<&FakeUser, PlatformError> {
        self.users
            .iter()
            .find(|u| names::same(&u.name, name))
            .ok_or_else(|| PlatformError::NotFound(format!("User [{name}]")))
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut FakeUser, PlatformError> {
        self.users
            .iter_mut()
            .find(|u| names::same(&u.name, name))
            .ok_or_else(|| PlatformError::NotFound(format!("User [{name}]")))
    }

    fn group(&self, name: &str) -> Result<&FakeGroup, PlatformError> {
        self.groups
            .iter()
            .find(|g| names::same(&g.name, name))
            .ok_or_else(|| PlatformError::NotFound(format!("Group [{name}]")))
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut FakeGroup, PlatformError> {
        self.groups
            .iter_mut()
            .find(|g| names::same(&g.name, name))
            .ok_or_else(|| PlatformError::NotFound(format!("Group [{name}]")))
    }
}

/// How an injected failure looks to the provisioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FakeFault {
    /// Nothing reached the platform: `Unavailable`, not applied.
    Unreached,
    /// The platform refused it: a 500, not applied.
    Error500,
    /// The connection broke before the platform acted: `NoAnswer`, not applied.
    Reset,
    /// Applied, then the answer was lost: `NoAnswer`.
    Lost,
    /// Applied, answered too late: `Timeout`.
    Late,
}

impl FakeFault {
    fn applies(self) -> bool {
        matches!(self, FakeFault::Lost | FakeFault::Late)
    }

    fn error(self, line: &str) -> PlatformError {
        match self {
            FakeFault::Unreached => {
                PlatformError::Unavailable(format!("injected failure of {line}"))
            }
            FakeFault::Error500 => PlatformError::Unexpected {
                status: Some(500),
                message: format!("Unable to Invoke Service {line}"),
            },
            FakeFault::Reset | FakeFault::Lost => {
                PlatformError::NoAnswer(format!("injected lost answer of {line}"))
            }
            FakeFault::Late => PlatformError::Timeout(std::time::Duration::from_millis(300)),
        }
    }
}

/// An in-memory platform: case-insensitive names, the real one's not-found and already-exists
/// errors, a log of every call and one-shot failure injection.
struct FakePlatform {
    state: Mutex<State>,
    log: Mutex<Vec<String>>,
    /// The next call whose log line starts with this (ignoring case) fails the given way.
    /// Each prefix fails the first call it matches, once.
    fail_on: Mutex<Vec<(String, FakeFault)>>,
    /// Every `set_user_extensions` call with its values, in order.
    extension_writes: Mutex<Vec<(String, Extensions)>>,
    /// Calls between their start and their answer, and the most there ever were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

impl FakePlatform {
    /// A platform with the built-in users and groups.
    fn new() -> Self {
        let mut state = State::default();
        for u in crate::builtin::BUILT_IN_USERS {
            state.users.push(FakeUser::named(u));
        }
        for g in crate::builtin::BUILT_IN_GROUPS {
            state.groups.push(FakeGroup::named(g));
        }
        FakePlatform {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            fail_on: Mutex::new(Vec::new()),
            extension_writes: Mutex::new(Vec::new()),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
        }
    }

    /// The most calls that were ever in flight at once.
    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn with_user(self, name: &str, extensions: &[(&str, &str)]) -> Self {
        let mut user = FakeUser::named(name);
        for (k, v) in extensions {
            user.extensions.insert(k.to_string(), v.to_string());
        }
        self.state.lock().unwrap().users.push(user);
        self
    }

    fn with_group(self, name: &str, members: &[Member]) -> Self {
        let mut group = FakeGroup::named(name);
        group.members = members.to_vec();
        let mut state = self.state.lock().unwrap();
        match state.group_mut(name) {
            Ok(existing) => existing.members.extend(members.iter().cloned()),
            Err(_) => state.groups.push(group),
        }
        drop(state);
        self
    }

    fn with_entity(self, kind: EntityKind, name: &str) -> Self {
        self.state
            .lock()
            .unwrap()
            .entities
            .push((kind, name.to_string()));
        self
    }

    fn with_session(self, user: &str) -> Self {
        self.state.lock().unwrap().sessions.insert(user.to_string());
        self
    }

    fn fail_next(&self, prefix: &str) {
        self.fault_next(prefix, FakeFault::Unreached);
    }

    fn fault_next(&self, prefix: &str, fault: FakeFault) {
        self.fail_on
            .lock()
            .unwrap()
            .push((prefix.to_string(), fault));
    }

    /// Takes the first injected fault matching `line` for which `when` holds.
    fn take_fault(&self, line: &str, when: impl Fn(FakeFault) -> bool) -> Option<FakeFault> {
        let mut fail = self.fail_on.lock().unwrap();
        // Case-insensitive, like the platform's names.
        let i = fail
            .iter()
            .position(|(p, f)| when(*f) && names::fold(line).starts_with(&names::fold(p)))?;
        Some(fail.remove(i).1)
    }

    /// The answer to a write that was carried out: lost or late when injected so.
    fn answer(&self, line: &str) -> Result<(), PlatformError> {
        match self.take_fault(line, FakeFault::applies) {
            Some(fault) => Err(fault.error(line)),
            None => Ok(()),
        }
    }

    /// Logs a call and fails it when it is the one injected. Every call yields once first, as
    /// a network call would, so concurrent requests interleave.
    async fn call(&self, line: String) -> Result<(), PlatformError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.log.lock().unwrap().push(line.clone());
        match self.take_fault(&line, |f| !f.applies()) {
            Some(fault) => Err(fault.error(&line)),
            None => Ok(()),
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The calls that change something, in order.
    fn writes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !READS.iter().any(|r| l.split(' ').next() == Some(*r)))
            .collect()
    }

    fn clear_log(&self) {
        self.log.lock().unwrap().clear();
        self.extension_writes.lock().unwrap().clear();
    }

    fn extension_writes(&self) -> Vec<(String, Extensions)> {
        self.extension_writes.lock().unwrap().clone()
    }

    fn user(&self, name: &str) -> Option<FakeUser> {
        self.state.lock().unwrap().user(name).ok().cloned()
    }

    fn group(&self, name: &str) -> Option<FakeGroup> {
        self.state.lock().unwrap().group(name).ok().cloned()
    }

    fn member_names(&self, group: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .group(group)
            .map(|g| g.members.into_iter().map(|m| m.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn sessions(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .sessions
            .iter()
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Platform for FakePlatform {
    async fn current_user(&self) -> Result<String, PlatformError> {
        self.call("current_user".into()).await?;
        Ok("Administrator".into())
    }

    async fn list_users(&self) -> Result<Vec<EntitySummary>, PlatformError> {
        self.call("list_users".into()).await?;
        Ok(self
            .lock()
            .users
            .iter()
            .map(|u| EntitySummary {
                name: u.name.clone(),
                description: u.description.clone(),
            })
            .collect())
    }

    async fn get_user(&self, name: &str) -> Result<User, PlatformError> {
        self.call(format!("get_user {name}")).await?;
        let state = self.lock();
        let u = state.user(name)?;
        Ok(User {
            name: u.name.clone(),
            description: u.description.clone(),
            project: u.project.clone(),
            home_mashup: u.home_mashup.clone(),
            mobile_mashup: u.mobile_mashup.clone(),
            tags: u.tags.clone(),
            last_modified: None,
        })
    }

    async fn create_user(&self, user: &NewUser) -> Result<(), PlatformError> {
        let line = format!("create_user {}", user.name);
        self.call(line.clone()).await?;
        let mut state = self.lock();
        if state.user(&user.name).is_ok() {
            return Err(PlatformError::AlreadyExists(format!(
                "User [{}] already exists",
                user.name
            )));
        }
        for g in &user.groups {
            state.group(g)?;
        }
        state.users.push(FakeUser {
            name: user.name.clone(),
            description: user.description.clone(),
            project: String::new(),
            home_mashup: user.home_mashup.clone().unwrap_or_default(),
            mobile_mashup: user.mobile_mashup.clone().unwrap_or_default(),
            tags: user.tags.clone(),
            enabled: true,
            extensions: BTreeMap::new(),
            password: user.password.as_ref().map(|p| p.expose().to_string()),
        });
        for g in &user.groups {
            state.group_mut(g)?.members.push(Member::user(&user.name));
        }
        self.answer(&line)
    }

    async fn delete_user(&self, name: &str) -> Result<(), PlatformError> {
        let line = format!("delete_user {name}");
        self.call(line.clone()).await?;
        let mut state = self.lock();
        state.user(name)?;
        state.users.retain(|u| !names::same(&u.name, name));
        for g in &mut state.groups {
            g.members
                .retain(|m| !(m.kind == MemberKind::User && names::same(&m.name, name)));
        }
        self.answer(&line)
    }

    async fn set_user_enabled(&self, name: &str, enabled: bool) -> Result<(), PlatformError> {
        let line = format!("set_user_enabled {name} {enabled}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.enabled = enabled;
        self.answer(&line)
    }

    async fn is_user_enabled(&self, name: &str) -> Result<bool, PlatformError> {
        self.call(format!("is_user_enabled {name}")).await?;
        Ok(self.lock().user(name)?.enabled)
    }

    async fn set_user_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError> {
        let line = format!("set_user_description {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.description = description.to_string();
        self.answer(&line)
    }

    async fn set_user_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError> {
        let line = format!("set_user_tags {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.tags = tags.to_vec();
        self.answer(&line)
    }

    async fn set_user_project(&self, name: &str, project: &str) -> Result<(), PlatformError> {
        let line = format!("set_user_project {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.project = project.to_string();
        self.answer(&line)
    }

    async fn set_user_home_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError> {
        let line = format!("set_user_home_mashup {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.home_mashup = mashup.to_string();
        self.answer(&line)
    }

    async fn set_user_mobile_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError> {
        let line = format!("set_user_mobile_mashup {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.mobile_mashup = mashup.to_string();
        self.answer(&line)
    }

    async fn user_extensions(&self, name: &str) -> Result<Extensions, PlatformError> {
        self.call(format!("user_extensions {name}")).await?;
        let state = self.lock();
        let u = state.user(name)?;
        Ok(KNOWN_PROPERTIES
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    u.extensions.get(*p).cloned().unwrap_or_default(),
                )
            })
            .collect())
    }

    async fn set_user_extensions(
        &self,
        name: &str,
        values: &Extensions,
    ) -> Result<(), PlatformError> {
        let line = format!("set_user_extensions {name}");
        self.call(line.clone()).await?;
        self.extension_writes
            .lock()
            .unwrap()
            .push((name.to_string(), values.clone()));
        if let Some(unknown) = values
            .keys()
            .find(|k| !KNOWN_PROPERTIES.contains(&k.as_str()))
        {
            return Err(PlatformError::NotFound(format!(
                "Property [{unknown}] does not exist"
            )));
        }
        let mut state = self.lock();
        let u = state.user_mut(name)?;
        for (k, v) in values {
            if v.is_empty() {
                u.extensions.remove(k);
            } else {
                u.extensions.insert(k.clone(), v.clone());
            }
        }
        self.answer(&line)
    }

    async fn user_groups(&self, name: &str) -> Result<Vec<EntitySummary>, PlatformError> {
        self.call(format!("user_groups {name}")).await?;
        let state = self.lock();
        state.user(name)?;
        let wanted = Member::user(name);
        Ok(state
            .groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m.is(&wanted)))
            .map(|g| EntitySummary {
                name: g.name.clone(),
                description: g.description.clone(),
            })
            .collect())
    }

    async fn assign_password(&self, name: &str, password: &Secret) -> Result<(), PlatformError> {
        let line = format!("assign_password {name}");
        self.call(line.clone()).await?;
        self.lock().user_mut(name)?.password = Some(password.expose().to_string());
        self.answer(&line)
    }

    async fn list_groups(&self) -> Result<Vec<EntitySummary>, PlatformError> {
        self.call("list_groups".into()).await?;
        Ok(self
            .lock()
            .groups
            .iter()
            .map(|g| EntitySummary {
                name: g.name.clone(),
                description: g.description.clone(),
            })
            .collect())
    }

    async fn get_group(&self, name: &str) -> Result<Group, PlatformError> {
        self.call(format!("get_group {name}")).await?;
        let state = self.lock();
        let g = state.group(name)?;
        Ok(Group {
            name: g.name.clone(),
            description: g.description.clone(),
            project: g.project.clone(),
            home_mashup: String::new(),
            tags: g.tags.clone(),
            last_modified: None,
        })
    }

    async fn create_group(&self, group: &NewGroup) -> Result<(), PlatformError> {
        let line = format!("create_group {}", group.name);
        self.call(line.clone()).await?;
        let mut state = self.lock();
        if state.group(&group.name).is_ok() {
            return Err(PlatformError::AlreadyExists(format!(
                "Group [{}] already exists",
                group.name
            )));
        }
        state.groups.push(FakeGroup {
            name: group.name.clone(),
            description: group.description.clone(),
            project: group.project.clone().unwrap_or_default(),
            tags: group.tags.clone(),
            members: Vec::new(),
        });
        self.answer(&line)
    }

    async fn delete_group(&self, name: &str) -> Result<(), PlatformError> {
        let line = format!("delete_group {name}");
        self.call(line.clone()).await?;
        let mut state = self.lock();
        state.group(name)?;
        state.groups.retain(|g| !names::same(&g.name, name));
        for g in &mut state.groups {
            g.members
                .retain(|m| !(m.kind == MemberKind::Group && names::same(&m.name, name)));
        }
        self.answer(&line)
    }

    async fn group_members(&self, name: &str) -> Result<Vec<Member>, PlatformError> {
        self.call(format!("group_members {name}")).await?;
        Ok(self.lock().group(name)?.members.clone())
    }

    async fn add_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError> {
        let line = format!("add_group_member {group} {}", member.name);
        self.call(line.clone()).await?;
        let mut state = self.lock();
        state.group(group)?;
        let display = match member.kind {
            MemberKind::User => state.user(&member.name)?.name.clone(),
            MemberKind::Group => state.group(&member.name)?.name.clone(),
        };
        let target = state.group_mut(group)?;
        if !target.members.iter().any(|m| m.is(member)) {
            target.members.push(Member {
                name: display,
                kind: member.kind,
            });
        }
        self.answer(&line)
    }

    async fn remove_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError> {
        let line = format!("remove_group_member {group} {}", member.name);
        self.call(line.clone()).await?;
        self.lock()
            .group_mut(group)?
            .members
            .retain(|m| !m.is(member));
        self.answer(&line)
    }

    async fn set_group_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError> {
        let line = format!("set_group_description {name}");
        self.call(line.clone()).await?;
        self.lock().group_mut(name)?.description = description.to_string();
        self.answer(&line)
    }

    async fn set_group_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError> {
        let line = format!("set_group_tags {name}");
        self.call(line.clone()).await?;
        self.lock().group_mut(name)?.tags = tags.to_vec();
        self.answer(&line)
    }

    async fn set_group_project(&self, name: &str, project: &str) -> Result<(), PlatformError> {
        let line = format!("set_group_project {name}");
        self.call(line.clone()).await?;
        self.lock().group_mut(name)?.project = project.to_string();
        self.answer(&line)
    }

    async fn active_users(&self) -> Result<Vec<ActiveUser>, PlatformError> {
        self.call("active_users".into()).await?;
        Ok(self
            .lock()
            .sessions
            .iter()
            .map(|name| ActiveUser {
                name: name.clone(),
                last_connection: None,
            })
            .collect())
    }

    async fn terminate_sessions(&self, user: &str) -> Result<(), PlatformError> {
        let line = format!("terminate_sessions {user}");
        self.call(line.clone()).await?;
        self.lock().sessions.retain(|s| !names::same(s, user));
        self.answer(&line)
    }

    async fn find_by_tag(
        &self,
        kind: MemberKind,
        tag: &Tag,
    ) -> Result<Vec<EntitySummary>, PlatformError> {
        self.call(format!("find_by_tag {} {tag}", kind.as_str()))
            .await?;
        let state = self.lock();
        let summary = |name: &str, description: &str| EntitySummary {
            name: name.to_string(),
            description: description.to_string(),
        };
        Ok(match kind {
            MemberKind::User => state
                .users
                .iter()
                .filter(|u| u.tags.contains(tag))
                .map(|u| summary(&u.name, &u.description))
                .collect(),
            MemberKind::Group => state
                .groups
                .iter()
                .filter(|g| g.tags.contains(tag))
                .map(|g| summary(&g.name, &g.description))
                .collect(),
        })
    }

    async fn entity_exists(&self, kind: EntityKind, name: &str) -> Result<bool, PlatformError> {
        self.call(format!("entity_exists {} {name}", kind.as_str()))
            .await?;
        Ok(self
            .lock()
            .entities
            .iter()
            .any(|(k, n)| *k == kind && names::same(n, name)))
    }
}

// ------------------------------------------------------------------ helpers

fn tag(text: &str) -> Tag {
    Tag::parse(text).unwrap()
}

fn config() -> ProvisioningConfig {
    ProvisioningConfig {
        user_exclusions: vec!["svc-backup".into()],
        group_exclusions: vec!["Auditors".into()],
        deprovision: DeprovisionMode::Delete,
        max_users: None,
        password_min_length: 14,
        terminate_sessions_on_config_change: false,
        external_id_property: Some("scimExternalId".into()),
        user_external_id_vocabulary: None,
        group_external_id_vocabulary: None,
        audit_log: None,
        user_defaults: UserDefaults {
            description: Some("Provisioned by SCIM".into()),
            project: Some("ScimProject".into()),
            home_mashup: Some("HomeMashup".into()),
            mobile_mashup: Some("MobileMashup".into()),
            tags: Some(vec![tag("Applications:SCIM"), tag("Colors:Green")]),
        },
        group_defaults: GroupDefaults {
            description: Some("Group provisioned by SCIM".into()),
            project: Some("ScimGroups".into()),
            tags: Some(vec![tag("Applications:SCIMGroups")]),
        },
        group_mappings: vec![
            ("IdP Admins".into(), "Administrators".into()),
            ("Eng Team".into(), "Engineering".into()),
        ],
        user_attributes: default_user_attributes(),
    }
}

fn provisioner(config: ProvisioningConfig, fake: FakePlatform) -> (Arc<FakePlatform>, Provisioner) {
    let fake = Arc::new(fake);
    let prov = Provisioner::new(fake.clone(), Policy::new(config), Audit::disabled());
    (fake, prov)
}

fn actor() -> Actor {
    Actor {
        client: "10.0.0.7".into(),
    }
}

fn new_user(name: &str) -> UserChange {
    UserChange {
        user_name: Some(name.into()),
        ..Default::default()
    }
}

fn with_attributes(mut change: UserChange, attributes: &[(&str, Change<String>)]) -> UserChange {
    for (slot, c) in attributes {
        change.attributes.insert(slot.to_string(), c.clone());
    }
    change
}

fn set(v: &str) -> Change<String> {
    Change::Set(v.to_string())
}

fn user_ref(name: &str) -> MemberRef {
    MemberRef {
        id: id_for(name),
        display: Some(name.to_string()),
        kind: Some(MemberKind::User),
    }
}

fn group_change(display: &str) -> GroupChange {
    GroupChange {
        external_id: Change::Keep,
        display_name: Some(display.to_string()),
        members: MembersChange::Keep,
    }
}

fn ext(pairs: &[(&str, &str)]) -> Extensions {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ users: create

#[tokio::test]
async fn create_user_applies_defaults_and_writes_mapped_extensions() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    let mut change = with_attributes(
        new_user("jdoe"),
        &[
            ("name.givenName", set("Jane")),
            ("name.familyName", set("Doe")),
            ("emails.work", set("jane@corp.com")),
            // Not mapped to a property: ignored, never written.
            ("nickName", set("JD")),
        ],
    );
    change.external_id = set("ext-42");
    change.password = Some(Secret::new("s3cret-Passw0rd"));

    let record = prov.create_user(&actor(), change).await.unwrap();

    assert_eq!(record.user_name, "jdoe");
    assert_eq!(record.id, id_for("jdoe"));
    assert_eq!(record.external_id.as_deref(), Some("ext-42"));
    assert!(record.active);
    assert_eq!(
        record.attributes,
        [
            ("emails.work", "jane@corp.com"),
            ("name.familyName", "Doe"),
            ("name.givenName", "Jane"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect::<BTreeMap<_, _>>()
    );
    assert!(record.groups.is_empty());

    let user = fake.user("jdoe").expect("the user exists");
    assert_eq!(user.description, "Provisioned by SCIM");
    assert_eq!(user.project, "ScimProject");
    assert_eq!(user.home_mashup, "HomeMashup");
    assert_eq!(user.mobile_mashup, "MobileMashup");
    assert_eq!(
        user.tags,
        vec![tag("Applications:SCIM"), tag("Colors:Green")]
    );
    assert!(user.enabled);
    assert_eq!(user.password.as_deref(), Some("s3cret-Passw0rd"));
    assert_eq!(
        user.extensions,
        ext(&[
            ("emailAddress", "jane@corp.com"),
            ("firstName", "Jane"),
            ("lastName", "Doe"),
            ("scimExternalId", "ext-42"),
        ])
    );

    assert_eq!(
        fake.writes(),
        strings(&[
            "create_user jdoe",
            "set_user_project jdoe",
            "set_user_extensions jdoe",
            "set_user_description jdoe"
        ])
    );
    assert_eq!(
        fake.extension_writes(),
        vec![(
            "jdoe".to_string(),
            ext(&[
                ("emailAddress", "jane@corp.com"),
                ("firstName", "Jane"),
                ("lastName", "Doe"),
                ("scimExternalId", "ext-42"),
            ])
        )]
    );
}

#[tokio::test]
async fn create_user_with_active_false_is_created_disabled() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    let mut change = new_user("jdoe");
    change.active = Some(false);

    let record = prov.create_user(&actor(), change).await.unwrap();

    assert!(!record.active);
    assert!(!fake.user("jdoe").unwrap().enabled);
    assert_eq!(
        fake.writes(),
        strings(&[
            "create_user jdoe",
            "set_user_project jdoe",
            "set_user_enabled jdoe false",
            "set_user_description jdoe"
        ])
    );
}

#[tokio::test]
async fn create_user_refuses_excluded_names_in_every_spelling_without_calling_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let fake = Arc::new(FakePlatform::new());
    let prov = Provisioner::new(
        fake.clone(),
        Policy::new(config()),
        Audit::open(Some(&path)).unwrap(),
    );
    let users_before = fake.lock().users.len();
    let spellings = [
        "Administrator",
        " administrator",
        "ADMINISTRATOR",
        "Administr%61tor",
        "Administr%2561tor",
        "Ａｄｍｉｎｉｓｔｒａｔｏｒ",
        "Admin\u{200B}istrator",
        "superuser",
        "SYSTEM",
        "svc-backup",
        "SVC-Backup ",
    ];
    for spelling in spellings {
        let err = prov
            .create_user(&actor(), new_user(spelling))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Refused {
                    rule: Rule::UserExclusion,
                    ..
                }
            ),
            "{spelling:?}: {err:?}"
        );
    }
    assert_eq!(fake.log(), Vec::<String>::new(), "no platform call at all");
    assert_eq!(fake.lock().users.len(), users_before);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), spellings.len());
    for line in &lines {
        assert_eq!(line["operation"], "create_user");
        assert_eq!(line["result"], "refused");
        assert_eq!(line["client"], "10.0.0.7");
        assert!(line["reason"]
            .as_str()
            .unwrap()
            .contains("user provisioning exclusion list"));
    }
}

#[tokio::test]
async fn create_user_is_audited_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let fake = Arc::new(FakePlatform::new());
    let prov = Provisioner::new(
        fake.clone(),
        Policy::new(config()),
        Audit::open(Some(&path)).unwrap(),
    );
    let mut change = new_user("jdoe");
    change.password = Some(Secret::new("very-secret-value"));
    prov.create_user(&actor(), change).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("very-secret-value"), "{text}");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["operation"], "create_user");
    assert_eq!(line["target"], "jdoe");
    assert_eq!(line["result"], "done");
}

#[tokio::test]
async fn licence_cap_refuses_before_the_platform_creates_and_ignores_built_ins() {
    let mut cfg = config();
    cfg.max_users = Some(2);
    // The built-ins do not count; a configured excluded user is a named user and does.
    let (fake, prov) = provisioner(cfg, FakePlatform::new().with_user("svc-backup", &[]));

    prov.create_user(&actor(), new_user("alice")).await.unwrap();
    assert!(fake.user("alice").is_some());
    fake.clear_log();

    let err = prov
        .create_user(&actor(), new_user("bob"))
        .await
        .unwrap_err();
    match &err {
        ProvisionError::Refused {
            rule: Rule::LicenceCap,
            detail,
        } => assert!(detail.contains('2'), "{detail}"),
        other => panic!("expected a licence cap refusal, got {other:?}"),
    }
    assert!(fake.user("bob").is_none());
    assert_eq!(fake.writes(), Vec::<String>::new(), "no create call");

    // A disabled user still holds its licence; a deleted one frees it.
    let mut disable = new_user("alice");
    disable.active = Some(false);
    prov.update_user(&actor(), &id_for("alice"), disable)
        .await
        .unwrap();
    let err = prov
        .create_user(&actor(), new_user("bob"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Refused { .. }), "{err:?}");
    prov.delete_user(&actor(), &id_for("alice")).await.unwrap();
    prov.create_user(&actor(), new_user("bob")).await.unwrap();
}

#[tokio::test]
async fn licence_cap_holds_for_concurrent_creates() {
    // An identity provider provisions with several threads at once.
    let mut cfg = config();
    cfg.max_users = Some(1);
    let (fake, prov) = provisioner(cfg, FakePlatform::new());

    let who = actor();
    let (a, b) = tokio::join!(
        prov.create_user(&who, new_user("alice")),
        prov.create_user(&who, new_user("bob")),
    );

    let refused = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(ProvisionError::Refused {
                    rule: Rule::LicenceCap,
                    ..
                })
            )
        })
        .count();
    assert_eq!(
        prov.user_names().await.unwrap().len(),
        1,
        "the licence allows one user: {a:?} / {b:?}"
    );
    assert_eq!(refused, 1, "{a:?} / {b:?}");
    assert_eq!(
        fake.writes()
            .iter()
            .filter(|l| l.starts_with("create_user"))
            .count(),
        1
    );
}

#[tokio::test]
async fn create_removes_the_user_again_when_a_later_step_fails() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    fake.fail_next("set_user_extensions jdoe");
    let change = with_attributes(new_user("jdoe"), &[("name.givenName", set("Jane"))]);

    let err = prov
        .create_user(&actor(), change.clone())
        .await
        .unwrap_err();

    assert!(
        matches!(err, ProvisionError::Platform(PlatformError::Unavailable(_))),
        "{err:?}"
    );
    assert!(fake.user("jdoe").is_none(), "the user was removed again");
    assert_eq!(
        fake.writes(),
        strings(&[
            "create_user jdoe",
            "set_user_project jdoe",
            "set_user_extensions jdoe",
            "delete_user jdoe"
        ])
    );

    // A retry starts clean.
    let record = prov.create_user(&actor(), change).await.unwrap();
    assert_eq!(record.attributes.get("name.givenName").unwrap(), "Jane");
}

#[tokio::test]
async fn create_of_an_existing_user_is_a_conflict() {
    let (fake, prov) = provisioner(config(), FakePlatform::new().with_user("JDoe", &[]));
    let err = prov
        .create_user(&actor(), new_user("jdoe"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Conflict(_)), "{err:?}");
    // Found by reading first: no create is attempted (the platform's answer to a duplicate
    // create is a bare 500 that cannot be told from any other failure).
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(
        fake.lock()
            .users
            .iter()
            .filter(|u| u.name == "JDoe")
            .count(),
        1
    );
}

// ------------------------------------------------------------------ users: update

#[tokio::test]
async fn update_refuses_a_user_name_change_and_writes_nothing() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user("jdoe", &[("firstName", "Jane")]),
    );
    let mut change = with_attributes(new_user("jsmith"), &[("name.givenName", set("Janet"))]);
    change.active = Some(false);

    let err = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            ProvisionError::Invalid {
                kind: "mutability",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.writes(), Vec::<String>::new());
    let user = fake.user("jdoe").unwrap();
    assert_eq!(user.extensions, ext(&[("firstName", "Jane")]));
    assert!(user.enabled);

    // The same name in another case is no change.
    prov.update_user(&actor(), &id_for("jdoe"), new_user(" JDOE "))
        .await
        .unwrap();
    assert_eq!(fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn update_setting_unchanged_values_writes_nothing() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user(
            "jdoe",
            &[("firstName", "Jane"), ("scimExternalId", "ext-1")],
        ),
    );
    let mut change = with_attributes(
        new_user("jdoe"),
        &[("name.givenName", set("Jane")), ("title", Change::Clear)],
    );
    change.external_id = set("ext-1");
    change.active = Some(true);

    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap();

    assert_eq!(record.attributes.get("name.givenName").unwrap(), "Jane");
    assert_eq!(record.external_id.as_deref(), Some("ext-1"));
    assert_eq!(fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn update_clear_writes_an_empty_value() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user(
            "jdoe",
            &[
                ("title", "Engineer"),
                ("firstName", "Jane"),
                ("scimExternalId", "ext-1"),
            ],
        ),
    );
    let mut change = with_attributes(new_user("jdoe"), &[("title", Change::Clear)]);
    change.external_id = Change::Clear;

    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap();

    assert!(!record.attributes.contains_key("title"));
    assert_eq!(record.external_id, None);
    assert_eq!(fake.writes(), strings(&["set_user_extensions jdoe"]));
    assert_eq!(
        fake.extension_writes(),
        vec![(
            "jdoe".to_string(),
            ext(&[("scimExternalId", ""), ("title", "")])
        )]
    );
    assert_eq!(
        fake.user("jdoe").unwrap().extensions,
        ext(&[("firstName", "Jane")])
    );
}

#[tokio::test]
async fn update_clear_if_clears_only_a_matching_value_ignoring_case() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user("jdoe", &[("emailAddress", "Jane.Doe@Corp.com")]),
    );
    let id = id_for("jdoe");

    let other = with_attributes(
        new_user("jdoe"),
        &[("emails.work", Change::ClearIf("someone@corp.com".into()))],
    );
    let record = prov.update_user(&actor(), &id, other).await.unwrap();
    assert_eq!(
        record.attributes.get("emails.work").unwrap(),
        "Jane.Doe@Corp.com"
    );
    assert_eq!(fake.writes(), Vec::<String>::new());

    let matching = with_attributes(
        new_user("jdoe"),
        &[("emails.work", Change::ClearIf("jane.doe@corp.COM".into()))],
    );
    let record = prov.update_user(&actor(), &id, matching).await.unwrap();
    assert!(!record.attributes.contains_key("emails.work"));
    assert_eq!(fake.writes(), strings(&["set_user_extensions jdoe"]));
    assert_eq!(
        fake.extension_writes(),
        vec![("jdoe".to_string(), ext(&[("emailAddress", "")]))]
    );
    assert!(fake.user("jdoe").unwrap().extensions.is_empty());
}

#[tokio::test]
async fn update_clear_if_ignores_case_beyond_ascii() {
    // The platform and the rest of the gateway compare case-insensitively with Unicode case
    // folding (`names::fold`); a by-value delete must match the same way.
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user("jdoe", &[("emailAddress", "JÖRG@corp.com")]),
    );
    let change = with_attributes(
        new_user("jdoe"),
        &[("emails.work", Change::ClearIf("jörg@corp.com".into()))],
    );
    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap();
    assert!(
        !record.attributes.contains_key("emails.work"),
        "{:?}",
        record.attributes
    );
    assert_eq!(fake.writes(), strings(&["set_user_extensions jdoe"]));
}

#[tokio::test]
async fn update_active_false_disables_and_ends_sessions() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[])
            .with_user("alice", &[])
            .with_session("jdoe")
            .with_session("alice"),
    );
    let mut change = new_user("jdoe");
    change.active = Some(false);

    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap();

    assert!(!record.active);
    assert!(!fake.user("jdoe").unwrap().enabled);
    assert_eq!(fake.sessions(), strings(&["alice"]));
    assert_eq!(
        fake.writes(),
        strings(&["set_user_enabled jdoe false", "terminate_sessions jdoe"])
    );

    // Enabling again does not touch sessions.
    fake.clear_log();
    let mut change = new_user("jdoe");
    change.active = Some(true);
    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap();
    assert!(record.active);
    assert!(fake.user("jdoe").unwrap().enabled);
    assert_eq!(fake.writes(), strings(&["set_user_enabled jdoe true"]));
}

#[tokio::test]
async fn a_disable_whose_session_termination_failed_ends_the_sessions_on_retry() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[])
            .with_session("jdoe"),
    );
    let disable = || {
        let mut change = new_user("jdoe");
        change.active = Some(false);
        change
    };
    fake.fail_next("terminate_sessions jdoe");

    let err = prov
        .update_user(&actor(), &id_for("jdoe"), disable())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::Platform(PlatformError::Unavailable(_))),
        "{err:?}"
    );

    // The identity provider retries the same request: the user must end up disabled with no
    // live session (or the failed request must have left it enabled so the retry redoes both).
    prov.update_user(&actor(), &id_for("jdoe"), disable())
        .await
        .unwrap();
    assert!(!fake.user("jdoe").unwrap().enabled);
    assert_eq!(
        fake.sessions(),
        Vec::<String>::new(),
        "a disabled user kept a live session: {:?}",
        fake.writes()
    );
}

#[tokio::test]
async fn update_restores_previous_extension_values_when_a_later_step_fails() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user(
                "jdoe",
                &[
                    ("firstName", "Jane"),
                    ("title", "Engineer"),
                    ("scimExternalId", "ext-1"),
                ],
            )
            .with_session("jdoe"),
    );
    let mut change = with_attributes(
        new_user("jdoe"),
        &[
            ("name.givenName", set("Janet")),
            ("title", Change::Clear),
            ("name.familyName", set("Doe")),
        ],
    );
    change.external_id = set("ext-2");
    change.active = Some(false);
    fake.fail_next("set_user_enabled jdoe");

    let err = prov
        .update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap_err();

    assert!(
        matches!(err, ProvisionError::Platform(PlatformError::Unavailable(_))),
        "{err:?}"
    );
    assert_eq!(
        fake.writes(),
        strings(&[
            "set_user_extensions jdoe",
            "set_user_enabled jdoe false",
            "set_user_extensions jdoe"
        ])
    );
    assert_eq!(
        fake.extension_writes(),
        vec![
            (
                "jdoe".to_string(),
                ext(&[
                    ("firstName", "Janet"),
                    ("lastName", "Doe"),
                    ("scimExternalId", "ext-2"),
                    ("title", ""),
                ])
            ),
            (
                "jdoe".to_string(),
                ext(&[
                    ("firstName", "Jane"),
                    ("lastName", ""),
                    ("scimExternalId", "ext-1"),
                    ("title", "Engineer"),
                ])
            ),
        ]
    );
    let user = fake.user("jdoe").unwrap();
    assert_eq!(
        user.extensions,
        ext(&[
            ("firstName", "Jane"),
            ("scimExternalId", "ext-1"),
            ("title", "Engineer"),
        ])
    );
    assert!(user.enabled);
    assert_eq!(fake.sessions(), strings(&["jdoe"]));
}

#[tokio::test]
async fn update_of_an_unknown_user_is_not_found() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    let err = prov
        .update_user(&actor(), &id_for("ghost"), new_user("ghost"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::NotFound(_)), "{err:?}");
    assert_eq!(fake.writes(), Vec::<String>::new());
}

// ------------------------------------------------------------------ users: delete

#[tokio::test]
async fn delete_in_delete_mode_ends_sessions_then_deletes() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[])
            .with_group("Engineering", &[Member::user("jdoe")])
            .with_session("jdoe"),
    );

    prov.delete_user(&actor(), &id_for("JDoe")).await.unwrap();

    assert_eq!(
        fake.writes(),
        strings(&["terminate_sessions jdoe", "delete_user jdoe"])
    );
    assert!(fake.user("jdoe").is_none());
    assert!(fake.sessions().is_empty());
    assert!(fake.member_names("Engineering").is_empty());

    let err = prov
        .delete_user(&actor(), &id_for("jdoe"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn delete_in_disable_mode_disables_and_ends_sessions() {
    let mut cfg = config();
    cfg.deprovision = DeprovisionMode::Disable;
    let (fake, prov) = provisioner(
        cfg,
        FakePlatform::new()
            .with_user("jdoe", &[("firstName", "Jane")])
            .with_session("jdoe"),
    );

    prov.delete_user(&actor(), &id_for("jdoe")).await.unwrap();

    assert_eq!(
        fake.writes(),
        strings(&["set_user_enabled jdoe false", "terminate_sessions jdoe"])
    );
    let user = fake.user("jdoe").expect("the user is still there");
    assert!(!user.enabled);
    assert_eq!(user.extensions, ext(&[("firstName", "Jane")]));
    assert!(fake.sessions().is_empty());
    let record = prov.get_user(&id_for("jdoe")).await.unwrap();
    assert!(!record.active);
}

#[tokio::test]
async fn excluded_users_cannot_be_updated_or_deleted_and_the_platform_is_not_called() {
    for mode in [DeprovisionMode::Delete, DeprovisionMode::Disable] {
        let mut cfg = config();
        cfg.deprovision = mode;
        let (fake, prov) = provisioner(
            cfg,
            FakePlatform::new()
                .with_user("svc-backup", &[])
                .with_session("Administrator"),
        );
        for name in [
            "Administrator",
            "administr%61tor",
            "ａｄｍｉｎｉｓｔｒａｔｏｒ",
            "superuser",
            "svc-backup",
        ] {
            let id = id_for(name);
            let err = prov.delete_user(&actor(), &id).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ProvisionError::Hidden {
                        rule: Rule::UserExclusion,
                        ..
                    }
                ),
                "delete {name:?}: {err:?}"
            );
            let mut change = with_attributes(new_user(name), &[("title", set("Boss"))]);
            change.active = Some(false);
            change.password = Some(Secret::new("new-password"));
            let err = prov.update_user(&actor(), &id, change).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ProvisionError::Hidden {
                        rule: Rule::UserExclusion,
                        ..
                    }
                ),
                "update {name:?}: {err:?}"
            );
            let err = prov.get_user(&id).await.unwrap_err();
            assert!(matches!(err, ProvisionError::NotFound(_)), "{err:?}");
        }
        assert_eq!(fake.log(), Vec::<String>::new(), "no platform call at all");
        assert!(fake.user("Administrator").unwrap().enabled);
        assert!(fake.user("svc-backup").unwrap().enabled);
        assert_eq!(fake.sessions(), strings(&["Administrator"]));
    }
}

// ------------------------------------------------------------------ users: reads

#[tokio::test]
async fn user_names_omit_excluded_users() {
    let (_fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("SVC-Backup", &[])
            .with_user("bob", &[]),
    );
    let mut names = prov.user_names().await.unwrap();
    names.sort();
    assert_eq!(names, strings(&["alice", "bob"]));
}

#[tokio::test]
async fn read_user_hides_excluded_groups_and_shows_mapped_ones_under_the_idp_name() {
    let (_fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[("firstName", "Alice")])
            .with_group("Engineering", &[Member::user("alice")])
            .with_group("Sales", &[Member::user("alice")])
            .with_group("Auditors", &[Member::user("alice")])
            .with_group("Designers", &[Member::user("alice")])
            .with_group("Administrators", &[Member::user("alice")]),
    );

    let record = prov.read_user("Alice").await.unwrap();

    assert_eq!(record.user_name, "alice");
    let mut groups = record.groups.clone();
    groups.sort_by(|a, b| a.display.cmp(&b.display));
    assert_eq!(
        groups,
        vec![
            GroupRef {
                id: group_id_for("Engineering"),
                display: "Eng Team".into()
            },
            GroupRef {
                id: group_id_for("Administrators"),
                display: "IdP Admins".into()
            },
            GroupRef {
                id: group_id_for("Sales"),
                display: "Sales".into()
            },
        ]
    );

    let err = prov.read_user("Administrator").await.unwrap_err();
    assert!(matches!(err, ProvisionError::NotFound(_)), "{err:?}");
}

// ------------------------------------------------------------------ groups: create

#[tokio::test]
async fn create_group_applies_group_defaults() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());

    let record = prov
        .create_group(&actor(), group_change("Sales"))
        .await
        .unwrap();

    assert_eq!(record.display_name, "Sales");
    assert_eq!(record.id, group_id_for("Sales"));
    assert!(record.members.is_empty());
    let group = fake.group("Sales").unwrap();
    assert_eq!(group.description, "Group provisioned by SCIM");
    assert_eq!(group.project, "ScimGroups");
    assert_eq!(group.tags, vec![tag("Applications:SCIMGroups")]);
    assert_eq!(
        fake.writes(),
        strings(&["create_group Sales", "set_group_description Sales"])
    );
}

#[tokio::test]
async fn create_of_an_excluded_group_is_refused_without_calling_the_platform() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    for name in [
        "Administrators",
        "users",
        " DESIGNERS ",
        "Administr%61tors",
        "Ｇｕｅｓｔｓ",
        "Auditors",
        "auditors",
        // Mapped to the excluded Administrators: still refused.
        "IdP Admins",
    ] {
        let err = prov
            .create_group(&actor(), group_change(name))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Refused {
                    rule: Rule::GroupExclusion,
                    ..
                }
            ),
            "{name:?}: {err:?}"
        );
    }
    assert_eq!(fake.log(), Vec::<String>::new());
    assert!(fake.group("Auditors").is_none());
    assert_eq!(fake.group("Administrators").unwrap().description, "");
}

#[tokio::test]
async fn create_through_an_idp_mapping_creates_the_platform_name() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());

    let record = prov
        .create_group(&actor(), group_change("eng team"))
        .await
        .unwrap();

    assert_eq!(record.display_name, "Eng Team");
    assert_eq!(record.id, group_id_for("Engineering"));
    assert!(fake.group("Engineering").is_some());
    assert!(fake.group("eng team").is_none());
    assert_eq!(
        fake.writes(),
        strings(&[
            "create_group Engineering",
            "set_group_description Engineering"
        ])
    );
    let read = prov.get_group(&record.id).await.unwrap();
    assert_eq!(read.display_name, "Eng Team");
}

#[tokio::test]
async fn create_group_adds_members_one_by_one() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[]),
    );
    let mut change = group_change("Sales");
    change.members = MembersChange::Replace(vec![
        user_ref("alice"),
        MemberRef {
            id: id_for("bob"),
            display: None,
            kind: None,
        },
    ]);

    let record = prov.create_group(&actor(), change).await.unwrap();

    assert_eq!(
        fake.writes(),
        strings(&[
            "create_group Sales",
            "add_group_member Sales alice",
            "add_group_member Sales bob",
            "set_group_description Sales"
        ])
    );
    assert_eq!(fake.member_names("Sales"), strings(&["alice", "bob"]));
    let mut ids: Vec<String> = record.members.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    let mut expected = vec![id_for("alice"), id_for("bob")];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn create_group_removes_the_group_again_when_a_member_add_fails() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[]),
    );
    fake.fail_next("add_group_member Sales bob");
    let mut change = group_change("Sales");
    change.members = MembersChange::Replace(vec![user_ref("alice"), user_ref("bob")]);

    let err = prov.create_group(&actor(), change).await.unwrap_err();

    assert!(err.to_string().contains("bob"), "{err}");
    assert!(fake.group("Sales").is_none(), "the group was removed again");
    assert_eq!(
        fake.writes(),
        strings(&[
            "create_group Sales",
            "add_group_member Sales alice",
            "add_group_member Sales bob",
            "delete_group Sales"
        ])
    );
}

#[tokio::test]
async fn an_excluded_user_is_skipped_as_a_member_and_the_rest_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let fake = Arc::new(
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("svc-backup", &[])
            .with_group("Engineering", &[]),
    );
    let prov = Provisioner::new(
        fake.clone(),
        Policy::new(config()),
        Audit::open(Some(&path)).unwrap(),
    );

    // Through a create: the group is made with its other members.
    let mut change = group_change("Sales");
    change.members = MembersChange::Replace(vec![user_ref("alice"), user_ref("Administrator")]);
    let record = prov.create_group(&actor(), change).await.unwrap();
    assert_eq!(record.members.len(), 1, "{record:?}");
    assert_eq!(fake.member_names("Sales"), strings(&["alice"]));
    assert!(!fake.log().iter().any(|l| l
        .to_lowercase()
        .starts_with("add_group_member sales administrator")));

    // Through a membership edit, with every declared kind: a lie that says Group, no kind, and
    // spellings that fold to the excluded name.
    for member in [
        user_ref("svc-backup"),
        MemberRef {
            id: id_for("Administrator"),
            display: None,
            kind: None,
        },
        MemberRef {
            id: id_for("Administrator"),
            display: None,
            kind: Some(MemberKind::Group),
        },
        MemberRef {
            id: id_for("ａｄｍｉｎｉｓｔｒａｔｏｒ"),
            display: None,
            kind: Some(MemberKind::User),
        },
        MemberRef {
            id: id_for("svc-backup"),
            display: None,
            kind: Some(MemberKind::Group),
        },
    ] {
        fake.clear_log();
        let change = GroupChange {
            external_id: Change::Keep,
            display_name: None,
            members: MembersChange::Edit {
                add: vec![member.clone(), user_ref("alice")],
                remove: Vec::new(),
            },
        };
        prov.update_group(&actor(), &group_id_for("Engineering"), change)
            .await
            .unwrap_or_else(|e| panic!("{member:?}: {e:?}"));
        assert_eq!(
            fake.member_names("Engineering"),
            strings(&["alice"]),
            "{member:?}"
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let skips: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["rule"] == "user_exclusion_list")
        .collect();
    assert_eq!(skips.len(), 6, "{text}");
    assert!(skips.iter().all(|l| l["result"] == "refused"), "{text}");
}

// ------------------------------------------------------------------ groups: update

#[tokio::test]
async fn a_failed_member_add_takes_back_the_members_already_added() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[])
            .with_user("carol", &[])
            .with_group("Sales", &[]),
    );
    fake.fail_next("add_group_member Sales bob");
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![user_ref("alice"), user_ref("bob"), user_ref("carol")],
            remove: Vec::new(),
        },
    };

    let err = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap_err();

    match &err {
        ProvisionError::Partial { detail, first } => {
            assert!(detail.contains("bob"), "{detail}");
            assert!(detail.contains("nothing was changed"), "{detail}");
            assert!(
                matches!(
                    **first,
                    ProvisionError::Platform(PlatformError::Unavailable(_))
                ),
                "{first:?}"
            );
        }
        other => panic!("expected the failed member named, got {other:?}"),
    }
    assert!(fake.member_names("Sales").is_empty());
    assert_eq!(
        fake.writes(),
        strings(&[
            "add_group_member Sales alice",
            "add_group_member Sales bob",
            "remove_group_member Sales alice",
        ])
    );
}

#[tokio::test]
async fn a_member_that_names_nothing_fails_the_change_before_anything_is_written() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_group("Sales", &[]),
    );
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![
                user_ref("alice"),
                user_ref("Administrator"),
                user_ref("ghost"),
            ],
            remove: Vec::new(),
        },
    };

    let err = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap_err();

    assert!(matches!(err, ProvisionError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains(&id_for("ghost")), "{err}");
    assert!(fake.member_names("Sales").is_empty());
    assert_eq!(fake.writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_take_back_that_fails_is_reported_as_partial() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[])
            .with_group("Sales", &[]),
    );
    fake.fail_next("add_group_member Sales bob");
    // Taking back is tried again with backoff: it must fail every time to stay undone.
    for _ in 0..UNDO_ATTEMPTS {
        fake.fail_next("remove_group_member Sales alice");
    }
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![user_ref("alice"), user_ref("bob")],
            remove: Vec::new(),
        },
    };
    let err = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap_err();
    match &err {
        ProvisionError::Partial { detail, .. } => {
            assert!(detail.contains("bob"), "{detail}");
            assert!(detail.contains("added User alice"), "{detail}");
        }
        other => panic!("expected a partial failure, got {other:?}"),
    }
}

#[tokio::test]
async fn replace_applies_only_the_difference_and_keeps_hidden_members() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[])
            .with_user("carol", &[])
            .with_user("svc-backup", &[])
            .with_group(
                "Sales",
                &[
                    Member::user("alice"),
                    Member::user("Bob"),
                    Member::user("Administrator"),
                    Member::user("svc-backup"),
                    Member::group("Designers"),
                ],
            ),
    );
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Replace(vec![user_ref("bob"), user_ref("carol")]),
    };

    let record = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap();

    // Updates address the group and its members by the platform's own spelling.
    assert_eq!(
        fake.writes(),
        strings(&[
            "add_group_member Sales carol",
            "remove_group_member Sales alice"
        ])
    );
    assert_eq!(
        fake.member_names("Sales"),
        strings(&["Administrator", "Bob", "Designers", "carol", "svc-backup"])
    );
    let mut ids: Vec<String> = record.members.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    let mut expected = vec![id_for("bob"), id_for("carol")];
    expected.sort();
    assert_eq!(ids, expected, "hidden members are not shown");
}

#[tokio::test]
async fn a_group_cannot_be_renamed() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_group("Engineering", &[])
            .with_group("Sales", &[]),
    );
    for (id, new_name) in [
        (group_id_for("Sales"), "Marketing"),
        (group_id_for("Engineering"), "Engineering Old"),
        // Maps to another platform group.
        (group_id_for("Sales"), "Eng Team"),
        (group_id_for("Sales"), "IdP Admins"),
    ] {
        let err = prov
            .update_group(&actor(), &id, group_change(new_name))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Invalid {
                    kind: "mutability",
                    ..
                }
            ),
            "{new_name:?}: {err:?}"
        );
    }
    // The IdP name of the group itself, or its platform name in another case, is no rename.
    prov.update_group(
        &actor(),
        &group_id_for("Engineering"),
        group_change("ENG TEAM"),
    )
    .await
    .unwrap();
    prov.update_group(&actor(), &group_id_for("Sales"), group_change("sales"))
        .await
        .unwrap();
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert!(fake.group("Marketing").is_none());
}

#[tokio::test]
async fn a_mapped_excluded_group_is_visible_and_takes_members_but_cannot_be_deleted() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[])
            .with_group(
                "Administrators",
                &[Member::user("Administrator"), Member::user("bob")],
            ),
    );
    let id = group_id_for("Administrators");

    let record = prov.read_group("Administrators").await.unwrap();
    assert_eq!(record.display_name, "IdP Admins");
    assert_eq!(record.id, id);
    assert_eq!(
        record
            .members
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>(),
        vec![id_for("bob")]
    );
    assert_eq!(prov.get_group(&id).await.unwrap(), record);
    assert!(prov
        .group_names()
        .await
        .unwrap()
        .contains(&"Administrators".to_string()));

    // Membership may change through the mapping; the built-in admin stays.
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: Some("IdP Admins".into()),
        members: MembersChange::Replace(vec![user_ref("alice")]),
    };
    let record = prov.update_group(&actor(), &id, change).await.unwrap();
    assert_eq!(record.display_name, "IdP Admins");
    assert_eq!(
        fake.member_names("Administrators"),
        strings(&["Administrator", "alice"])
    );
    assert_eq!(
        fake.writes(),
        strings(&[
            "add_group_member Administrators alice",
            "remove_group_member Administrators bob"
        ])
    );

    fake.clear_log();
    let err = prov.delete_group(&actor(), &id).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProvisionError::Refused {
                rule: Rule::GroupExclusion,
                ..
            }
        ),
        "{err:?}"
    );
    let err = prov
        .update_group(&actor(), &id, group_change("Admins Renamed"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProvisionError::Invalid {
                kind: "mutability",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert!(fake.group("Administrators").is_some());
}

#[tokio::test]
async fn unmapped_excluded_groups_are_invisible_and_untouchable() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_group("Auditors", &[])
            .with_group("Sales", &[]),
    );

    let mut names = prov.group_names().await.unwrap();
    names.sort();
    assert_eq!(names, strings(&["Administrators", "Sales"]));

    for name in ["Designers", "Users", "Auditors", "Guests"] {
        let id = group_id_for(name);
        let err = prov.get_group(&id).await.unwrap_err();
        assert!(
            matches!(err, ProvisionError::NotFound(_)),
            "{name}: {err:?}"
        );
        let err = prov.read_group(name).await.unwrap_err();
        assert!(
            matches!(err, ProvisionError::NotFound(_)),
            "{name}: {err:?}"
        );
        let change = GroupChange {
            external_id: Change::Keep,
            display_name: None,
            members: MembersChange::Edit {
                add: vec![user_ref("alice")],
                remove: Vec::new(),
            },
        };
        // Changed through its id, it is as absent as when read; the rule stays for the audit.
        let err = prov.update_group(&actor(), &id, change).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Hidden {
                    rule: Rule::GroupExclusion,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let err = prov.delete_group(&actor(), &id).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Hidden {
                    rule: Rule::GroupExclusion,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
    }
    // Nor can such a group be nested into a visible one: it is skipped, not fatal.
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![MemberRef {
                id: group_id_for("Designers"),
                display: Some("Designers".into()),
                kind: Some(MemberKind::Group),
            }],
            remove: Vec::new(),
        },
    };
    let record = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap();
    assert!(record.members.is_empty(), "{record:?}");
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert!(fake.member_names("Designers").is_empty());
}

#[tokio::test]
async fn delete_group_deletes_a_provisioned_group() {
    let (fake, prov) = provisioner(config(), FakePlatform::new().with_group("Sales", &[]));
    prov.delete_group(&actor(), &group_id_for("sales"))
        .await
        .unwrap();
    assert!(fake.group("Sales").is_none());
    assert_eq!(fake.writes(), strings(&["delete_group Sales"]));
    let err = prov
        .delete_group(&actor(), &group_id_for("Sales"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::NotFound(_)), "{err:?}");
}

// ------------------------------------------------------------------ configuration changes

#[tokio::test]
async fn a_changed_configuration_ends_every_session_but_those_of_excluded_users() {
    let mut cfg = config();
    cfg.terminate_sessions_on_config_change = true;
    let (fake, prov) = provisioner(
        cfg.clone(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_user("bob", &[])
            .with_user("svc-backup", &[])
            .with_session("alice")
            .with_session("bob")
            .with_session("Administrator")
            .with_session("SVC-Backup"),
    );

    // Unchanged: nothing ends.
    assert_eq!(
        prov.replace_policy(Policy::new(cfg.clone())).await.unwrap(),
        0
    );
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert_eq!(fake.sessions().len(), 4);

    let mut next = cfg.clone();
    next.max_users = Some(100);
    let ended = prov
        .replace_policy(Policy::new(next.clone()))
        .await
        .unwrap();

    assert_eq!(ended, 2);
    let mut writes = fake.writes();
    writes.sort();
    assert_eq!(
        writes,
        strings(&["terminate_sessions alice", "terminate_sessions bob"])
    );
    assert_eq!(fake.sessions(), strings(&["Administrator", "SVC-Backup"]));
    assert_eq!(prov.policy().config, next);
}

#[tokio::test]
async fn a_changed_configuration_without_the_option_ends_no_session() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("alice", &[])
            .with_session("alice"),
    );
    let mut next = config();
    next.max_users = Some(5);
    assert_eq!(prov.replace_policy(Policy::new(next)).await.unwrap(), 0);
    assert_eq!(fake.log(), Vec::<String>::new());
    assert_eq!(fake.sessions(), strings(&["alice"]));
}

// ------------------------------------------------------------------ defaults checked live

#[tokio::test]
async fn defaults_naming_missing_projects_and_mashups_are_found_asking_once_per_name() {
    let mut cfg = config();
    // The same project, spelled differently, for users and groups: asked once.
    cfg.group_defaults.project = Some("SCIMPROJECT".into());
    let fake = FakePlatform::new()
        .with_entity(EntityKind::Project, "ScimProject")
        // A project of the mashup's name does not make the mashup exist.
        .with_entity(EntityKind::Project, "HomeMashup")
        .with_entity(EntityKind::Mashup, "mobilemashup");
    let missing = missing_defaults(&fake, &cfg).await.unwrap();
    assert_eq!(
        missing,
        vec![MissingDefault {
            setting: "provisioning.user_defaults.home_mashup",
            kind: EntityKind::Mashup,
            name: "HomeMashup".into(),
        }]
    );
    assert_eq!(
        fake.log(),
        strings(&[
            "entity_exists Project ScimProject",
            "entity_exists Mashup HomeMashup",
            "entity_exists Mashup MobileMashup",
        ])
    );

    // Nothing named, nothing asked; empty names clear a value and are not entities.
    let mut cfg = config();
    cfg.user_defaults = UserDefaults {
        project: Some(" ".into()),
        ..UserDefaults::default()
    };
    cfg.group_defaults = GroupDefaults::default();
    let fake = FakePlatform::new();
    assert!(missing_defaults(&fake, &cfg).await.unwrap().is_empty());
    assert!(fake.log().is_empty());
}

#[tokio::test]
async fn a_platform_that_cannot_answer_ends_the_defaults_check() {
    let fake = FakePlatform::new();
    fake.fail_next("entity_exists");
    let err = missing_defaults(&fake, &config()).await.unwrap_err();
    assert!(matches!(err, PlatformError::Unavailable(_)), "{err}");
    assert_eq!(fake.log().len(), 1, "{:?}", fake.log());
}

// ------------------------------------------------------------------ issue 13: ids, audit truth

/// A provisioner writing its audit log to a file, and a reader for its lines.
fn audited_provisioner(
    config: ProvisioningConfig,
    fake: FakePlatform,
) -> (
    Arc<FakePlatform>,
    Provisioner,
    impl Fn() -> Vec<serde_json::Value>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let fake = Arc::new(fake);
    let prov = Provisioner::new(
        fake.clone(),
        Policy::new(config),
        Audit::open(Some(&path)).unwrap(),
    );
    let read = move || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    (fake, prov, read, dir)
}

#[test]
fn users_and_groups_of_one_name_have_different_ids() {
    assert_ne!(id_for("ops"), group_id_for("ops"));
    assert_eq!(group_name_for(&group_id_for("Ops")).as_deref(), Some("ops"));
    // The form issued before groups had their own id space is still read as a group id.
    assert_eq!(group_name_for(&id_for("Ops")).as_deref(), Some("ops"));
    // A group id never reads as a user id.
    assert!(name_for(&group_id_for("ops")).is_none());
}

#[tokio::test]
async fn a_member_id_in_the_group_form_names_the_group_whatever_the_type_says() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("ops", &[])
            .with_group("ops", &[])
            .with_group("Sales", &[]),
    );
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![MemberRef {
                id: group_id_for("ops"),
                display: None,
                kind: Some(MemberKind::User),
            }],
            remove: Vec::new(),
        },
    };
    let record = prov
        .update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap();
    assert_eq!(fake.writes(), strings(&["add_group_member Sales ops"]));
    assert_eq!(record.members[0].kind, Some(MemberKind::Group));
    assert_eq!(record.members[0].id, group_id_for("ops"));
}

#[tokio::test]
async fn a_mapped_built_in_group_put_applies_the_membership_and_ignores_the_external_id() {
    let mut cfg = config();
    cfg.group_external_id_vocabulary = Some("SCIMExternalId".into());
    let (fake, prov) = provisioner(
        cfg,
        FakePlatform::new()
            .with_user("alice", &[])
            .with_group("Administrators", &[Member::user("Administrator")]),
    );
    let change = GroupChange {
        external_id: Change::Set("7f3e-entra-object-id".into()),
        display_name: Some("IdP Admins".into()),
        members: MembersChange::Replace(vec![user_ref("alice")]),
    };
    let record = prov
        .update_group(&actor(), &group_id_for("Administrators"), change)
        .await
        .unwrap();
    assert_eq!(record.external_id, None);
    assert_eq!(
        fake.member_names("Administrators"),
        strings(&["Administrator", "alice"])
    );
    assert_eq!(
        fake.writes(),
        strings(&["add_group_member Administrators alice"])
    );
}

#[tokio::test]
async fn the_audit_log_claims_no_create_that_failed_and_names_the_platform_spelling() {
    let (_fake, prov, audit, _dir) = audited_provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[])
            .with_user("alice", &[]),
    );
    let err = prov
        .create_user(&actor(), new_user("JDoe"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Conflict(_)), "{err:?}");
    let lines = audit();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["result"], "failed");
    assert_eq!(lines[0]["changes"], serde_json::json!([]), "{lines:?}");

    prov.create_group(&actor(), group_change("Corp-Sales"))
        .await
        .unwrap();
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: vec![user_ref("alice")],
            remove: Vec::new(),
        },
    };
    prov.update_group(&actor(), &group_id_for("corp-sales"), change)
        .await
        .unwrap();
    let lines = audit();
    let targets: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["Corp-Sales", "Corp-Sales"], "{lines:?}");
    assert_eq!(
        lines[2]["changes"],
        serde_json::json!(["added User alice"]),
        "{lines:?}"
    );
}

#[tokio::test]
async fn every_refusal_has_an_audit_line_with_its_rule() {
    let (fake, prov, audit, _dir) = audited_provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[])
            .with_user("svc-backup", &[])
            .with_group("Sales", &[]),
    );
    // A rename (validation), an excluded user's update and delete (hidden), an excluded
    // group's update (hidden), and an excluded user's create (policy).
    let mut rename = new_user("someone-else");
    rename.active = Some(true);
    prov.update_user(&actor(), &id_for("jdoe"), rename)
        .await
        .unwrap_err();
    prov.update_user(&actor(), &id_for("svc-backup"), new_user("svc-backup"))
        .await
        .unwrap_err();
    prov.delete_user(&actor(), &id_for("Administrator"))
        .await
        .unwrap_err();
    prov.update_group(
        &actor(),
        &group_id_for("Designers"),
        group_change("Designers"),
    )
    .await
    .unwrap_err();
    prov.create_user(&actor(), new_user("SuperUser"))
        .await
        .unwrap_err();
    let lines = audit();
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["operation"].as_str().unwrap().to_string(),
                l["result"].as_str().unwrap().to_string(),
                l["rule"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("update_user", "refused", "-"),
        ("update_user", "refused", "user_exclusion_list"),
        ("delete_user", "refused", "user_exclusion_list"),
        ("update_group", "refused", "group_exclusion_list"),
        ("create_user", "refused", "user_exclusion_list"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(summary, expected, "{lines:?}");
    assert_eq!(lines[0]["target"], "jdoe");
    assert!(lines[1]["reason"]
        .as_str()
        .unwrap()
        .contains("exclusion list"));
    assert_eq!(fake.writes(), Vec::<String>::new());
}

// ------------------------------------------------------------------ outcome rules under faults

/// The finished state of `create_user_with_defaults("jdoe")`'s user.
fn assert_finished_user(fake: &FakePlatform, enabled: bool) {
    let user = fake.user("jdoe").expect("the user exists");
    assert_eq!(
        user.description,
        "Provisioned by SCIM",
        "{:?}",
        fake.writes()
    );
    assert_eq!(user.project, "ScimProject");
    assert_eq!(
        user.extensions.get("firstName").map(String::as_str),
        Some("Jane")
    );
    assert_eq!(user.enabled, enabled);
}

fn jane(active: Option<bool>) -> UserChange {
    let mut change = with_attributes(new_user("jdoe"), &[("name.givenName", set("Jane"))]);
    change.active = active;
    change
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_or_late_is_finished() {
    for fault in [FakeFault::Lost, FakeFault::Late] {
        let (fake, prov) = provisioner(config(), FakePlatform::new());
        fake.fault_next("create_user jdoe", fault);
        let record = prov.create_user(&actor(), jane(Some(false))).await.unwrap();
        assert!(!record.active, "{fault:?}");
        assert_finished_user(&fake, false);
    }
}

#[tokio::test]
async fn a_create_that_did_not_happen_fails_and_leaves_nothing() {
    for fault in [FakeFault::Reset, FakeFault::Error500] {
        let (fake, prov) = provisioner(config(), FakePlatform::new());
        fake.fault_next("create_user jdoe", fault);
        prov.create_user(&actor(), jane(None)).await.unwrap_err();
        assert!(fake.user("jdoe").is_none(), "{fault:?}");
        prov.create_user(&actor(), jane(None)).await.unwrap();
        assert_finished_user(&fake, true);
    }
}

#[tokio::test]
async fn every_idempotent_step_of_a_create_is_sent_again_after_a_lost_answer() {
    for step in [
        "set_user_project",
        "set_user_extensions",
        "set_user_enabled",
        "set_user_description",
    ] {
        for fault in [FakeFault::Reset, FakeFault::Lost, FakeFault::Late] {
            let (fake, prov) = provisioner(config(), FakePlatform::new());
            fake.fault_next(&format!("{step} jdoe"), fault);
            prov.create_user(&actor(), jane(Some(false)))
                .await
                .unwrap_or_else(|e| panic!("{step} {fault:?}: {e}"));
            assert_finished_user(&fake, false);
        }
    }
}

#[tokio::test]
async fn a_refused_step_undoes_the_create_and_a_failed_undo_is_resumed_by_the_retry() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    fake.fault_next("set_user_description jdoe", FakeFault::Error500);
    prov.create_user(&actor(), jane(None)).await.unwrap_err();
    assert!(fake.user("jdoe").is_none(), "{:?}", fake.writes());

    // The undo fails every time: the user stays, marked unfinished.
    fake.fault_next("set_user_project jdoe", FakeFault::Error500);
    for _ in 0..UNDO_ATTEMPTS {
        fake.fault_next("delete_user jdoe", FakeFault::Error500);
    }
    prov.create_user(&actor(), jane(None)).await.unwrap_err();
    let left = fake.user("jdoe").unwrap();
    assert!(is_unfinished(&left.description), "{}", left.description);

    // The identity provider's retry completes it (not 409).
    let record = prov.create_user(&actor(), jane(None)).await.unwrap();
    assert!(record.active);
    assert_finished_user(&fake, true);
    // A finished user is a conflict for a further create.
    let err = prov.create_user(&actor(), jane(None)).await.unwrap_err();
    assert!(matches!(err, ProvisionError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn a_create_over_an_unfinished_user_resumes_it_with_the_retry_s_values() {
    let mut unfinished = FakeUser::named("jdoe");
    unfinished.description = format!("{UNFINISHED}Provisioned by SCIM");
    unfinished.enabled = false;
    let fake = FakePlatform::new();
    fake.lock().users.push(unfinished);
    let (fake, prov) = provisioner(config(), fake);
    let record = prov.create_user(&actor(), jane(None)).await.unwrap();
    assert!(record.active);
    assert_finished_user(&fake, true);
}

#[tokio::test]
async fn a_read_back_that_keeps_failing_answers_with_what_was_written() {
    let (fake, prov) = provisioner(config(), FakePlatform::new());
    // The read-back's own reads fail every time; the existence read before the create (a
    // `get_user` of a user not there yet) is left alone.
    for _ in 0..READ_ATTEMPTS {
        fake.fault_next("user_extensions jdoe", FakeFault::Error500);
    }
    let mut change = jane(Some(false));
    change.external_id = set("ext-1");
    let record = prov.create_user(&actor(), change).await.unwrap();
    assert_eq!(record.user_name, "jdoe");
    assert_eq!(record.external_id.as_deref(), Some("ext-1"));
    assert_eq!(
        record.attributes.get("name.givenName").map(String::as_str),
        Some("Jane")
    );
    assert!(!record.active);
    assert_finished_user(&fake, false);

    // A read that fails fewer times than that is simply repeated.
    fake.fault_next("is_user_enabled jdoe", FakeFault::Reset);
    fake.fault_next("user_groups jdoe", FakeFault::Error500);
    let read = prov.get_user(&id_for("jdoe")).await.unwrap();
    assert!(!read.active);
}

#[tokio::test]
async fn a_disable_whose_session_termination_failed_is_undone_whole() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new()
            .with_user("jdoe", &[("firstName", "Jane")])
            .with_session("jdoe"),
    );
    let change = || {
        let mut c = with_attributes(new_user("jdoe"), &[("name.givenName", set("Janet"))]);
        c.active = Some(false);
        c
    };
    fake.fault_next("terminate_sessions jdoe", FakeFault::Error500);
    prov.update_user(&actor(), &id_for("jdoe"), change())
        .await
        .unwrap_err();
    let user = fake.user("jdoe").unwrap();
    assert!(user.enabled, "re-enabled: {:?}", fake.writes());
    assert_eq!(user.extensions.get("firstName").unwrap(), "Jane");

    // A lost answer to the same call is resent; the change is made and reported.
    fake.fault_next("terminate_sessions jdoe", FakeFault::Lost);
    let record = prov
        .update_user(&actor(), &id_for("jdoe"), change())
        .await
        .unwrap();
    assert!(!record.active);
    let user = fake.user("jdoe").unwrap();
    assert!(!user.enabled);
    assert_eq!(user.extensions.get("firstName").unwrap(), "Janet");
    assert!(fake.sessions().is_empty());
}

#[tokio::test]
async fn a_disable_whose_answer_was_lost_twice_is_taken_back() {
    let (fake, prov) = provisioner(config(), FakePlatform::new().with_user("jdoe", &[]));
    let mut change = new_user("jdoe");
    change.active = Some(false);
    fake.fault_next("set_user_enabled jdoe false", FakeFault::Lost);
    fake.fault_next("set_user_enabled jdoe false", FakeFault::Lost);
    prov.update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap_err();
    assert!(fake.user("jdoe").unwrap().enabled, "{:?}", fake.writes());
}

#[tokio::test]
async fn a_lost_property_write_is_sent_again_and_a_refused_one_restores_nothing_it_did_not_write() {
    let (fake, prov) = provisioner(
        config(),
        FakePlatform::new().with_user("jdoe", &[("firstName", "Jane")]),
    );
    let change = with_attributes(new_user("jdoe"), &[("name.givenName", set("Janet"))]);
    fake.fault_next("set_user_extensions jdoe", FakeFault::Lost);
    prov.update_user(&actor(), &id_for("jdoe"), change.clone())
        .await
        .unwrap();
    assert_eq!(
        fake.user("jdoe")
            .unwrap()
            .extensions
            .get("firstName")
            .unwrap(),
        "Janet"
    );
    let back = with_attributes(new_user("jdoe"), &[("name.givenName", set("Jane"))]);
    fake.fault_next("set_user_extensions jdoe", FakeFault::Error500);
    fake.clear_log();
    prov.update_user(&actor(), &id_for("jdoe"), back)
        .await
        .unwrap_err();
    assert_eq!(fake.writes(), strings(&["set_user_extensions jdoe"]));
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_is_settled_by_looking() {
    for (fault, ok) in [
        (FakeFault::Lost, true),
        (FakeFault::Late, true),
        (FakeFault::Reset, true),
        (FakeFault::Error500, false),
    ] {
        let (fake, prov) = provisioner(config(), FakePlatform::new().with_user("jdoe", &[]));
        fake.fault_next("delete_user jdoe", fault);
        let result = prov.delete_user(&actor(), &id_for("jdoe")).await;
        assert_eq!(result.is_ok(), ok, "{fault:?}: {result:?}");
        assert_eq!(fake.user("jdoe").is_none(), ok, "{fault:?}");
    }
}

#[tokio::test]
async fn a_deprovision_by_disable_that_fails_leaves_the_user_enabled() {
    let mut cfg = config();
    cfg.deprovision = DeprovisionMode::Disable;
    let (fake, prov) = provisioner(cfg, FakePlatform::new().with_user("jdoe", &[]));
    fake.fault_next("terminate_sessions jdoe", FakeFault::Error500);
    prov.delete_user(&actor(), &id_for("jdoe"))
        .await
        .unwrap_err();
    assert!(fake.user("jdoe").unwrap().enabled);
    fake.fault_next("set_user_enabled jdoe false", FakeFault::Late);
    prov.delete_user(&actor(), &id_for("jdoe")).await.unwrap();
    assert!(!fake.user("jdoe").unwrap().enabled);
}

#[tokio::test]
async fn group_creates_and_member_changes_converge_under_lost_answers() {
    let fake = FakePlatform::new()
        .with_user("alice", &[])
        .with_user("bob", &[]);
    let (fake, prov) = provisioner(config(), fake);
    let create = || {
        let mut change = group_change("Sales");
        change.members = MembersChange::Replace(vec![user_ref("alice"), user_ref("bob")]);
        change
    };
    fake.fault_next("create_group Sales", FakeFault::Lost);
    fake.fault_next("add_group_member Sales bob", FakeFault::Reset);
    fake.fault_next("set_group_description Sales", FakeFault::Late);
    let record = prov.create_group(&actor(), create()).await.unwrap();
    assert_eq!(record.members.len(), 2);
    let group = fake.group("Sales").unwrap();
    assert_eq!(group.description, "Group provisioned by SCIM");
    assert_eq!(fake.member_names("Sales"), strings(&["alice", "bob"]));

    // A group an earlier attempt left unfinished is completed by the retry.
    fake.lock().group_mut("Sales").unwrap().description = format!("{UNFINISHED}x");
    fake.lock().group_mut("Sales").unwrap().members.clear();
    prov.create_group(&actor(), create()).await.unwrap();
    assert_eq!(fake.member_names("Sales"), strings(&["alice", "bob"]));
    assert!(!is_unfinished(&fake.group("Sales").unwrap().description));

    // A member call whose answer was lost twice is taken back with the others.
    let edit = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: Vec::new(),
            remove: vec![user_ref("alice"), user_ref("bob")],
        },
    };
    fake.fault_next("remove_group_member Sales bob", FakeFault::Lost);
    fake.fault_next("remove_group_member Sales bob", FakeFault::Lost);
    prov.update_group(&actor(), &group_id_for("Sales"), edit)
        .await
        .unwrap_err();
    assert_eq!(fake.member_names("Sales"), strings(&["alice", "bob"]));

    fake.fault_next("delete_group Sales", FakeFault::Lost);
    prov.delete_group(&actor(), &group_id_for("Sales"))
        .await
        .unwrap();
    assert!(fake.group("Sales").is_none());
}

#[tokio::test]
async fn what_compensation_could_not_restore_is_audited_with_the_state_left() {
    let (fake, prov, audit, _dir) =
        audited_provisioner(config(), FakePlatform::new().with_user("jdoe", &[]));
    let mut change = with_attributes(new_user("jdoe"), &[("title", set("Lead"))]);
    change.active = Some(false);
    fake.fault_next("terminate_sessions jdoe", FakeFault::Error500);
    for _ in 0..UNDO_ATTEMPTS {
        fake.fault_next("set_user_enabled jdoe true", FakeFault::Error500);
    }
    prov.update_user(&actor(), &id_for("jdoe"), change)
        .await
        .unwrap_err();
    let user = fake.user("jdoe").unwrap();
    assert!(!user.enabled);
    assert!(
        !user.extensions.contains_key("title"),
        "attributes restored"
    );
    let lines = audit();
    let line = lines.last().unwrap();
    assert_eq!(line["result"], "failed");
    let changes = line["changes"].to_string();
    assert!(changes.contains("the user stays disabled"), "{changes}");
    assert!(
        changes.contains("restored the previous attribute values"),
        "{changes}"
    );
}

// ------------------------------------------------------------------ large membership changes

/// A platform with `n` users `u00`.. and an empty group Sales, and a provisioner that runs up
/// to `bound` member calls at once.
fn many_members(
    n: usize,
    bound: usize,
) -> (
    Arc<FakePlatform>,
    Provisioner,
    impl Fn() -> Vec<serde_json::Value>,
    tempfile::TempDir,
    Vec<String>,
) {
    let names: Vec<String> = (0..n).map(|i| format!("u{i:02}")).collect();
    let mut fake = FakePlatform::new().with_group("Sales", &[]);
    for name in &names {
        fake = fake.with_user(name, &[]);
    }
    let (fake, prov, audit, dir) = audited_provisioner(config(), fake);
    (fake, prov.with_member_concurrency(bound), audit, dir, names)
}

fn add_all(names: &[String]) -> GroupChange {
    GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Edit {
            add: names.iter().map(|n| user_ref(n)).collect(),
            remove: Vec::new(),
        },
    }
}

#[tokio::test]
async fn a_large_member_change_runs_calls_in_parallel_within_the_bound() {
    let (fake, prov, audit, _dir, mut names) = many_members(30, 4);
    // An excluded user among them is skipped and audited once, in parallel as serially.
    names.push("svc-backup".into());
    fake.lock().users.push(FakeUser::named("svc-backup"));
    fake.clear_log();
    prov.update_group(&actor(), &group_id_for("Sales"), add_all(&names))
        .await
        .unwrap();
    names.pop();
    assert_eq!(fake.member_names("Sales"), names);
    let max = fake.max_in_flight();
    assert!(
        max > 1 && max <= 4,
        "at most 4 calls at once, more than one: {max}"
    );
    let reads = fake
        .log()
        .iter()
        .filter(|l| l.starts_with("get_user"))
        .count();
    assert_eq!(
        reads, 30,
        "each member resolved once, the excluded one never asked"
    );
    let lines = audit();
    let skips: Vec<_> = lines
        .iter()
        .filter(|l| l["rule"] == "user_exclusion_list")
        .collect();
    assert_eq!(skips.len(), 1, "{lines:?}");
    let line = lines
        .iter()
        .find(|l| l["operation"] == "update_group" && l["rule"].is_null())
        .unwrap();
    assert_eq!(line["result"], "done");
    let changes: Vec<String> = serde_json::from_value(line["changes"].clone()).unwrap();
    let mut added: Vec<&str> = changes
        .iter()
        .filter_map(|c| c.strip_prefix("added User "))
        .collect();
    added.sort();
    assert_eq!(added, names.iter().map(String::as_str).collect::<Vec<_>>());

    // Removing them all is parallel too.
    fake.clear_log();
    fake.max_in_flight
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let change = GroupChange {
        external_id: Change::Keep,
        display_name: None,
        members: MembersChange::Replace(Vec::new()),
    };
    prov.update_group(&actor(), &group_id_for("Sales"), change)
        .await
        .unwrap();
    assert!(fake.member_names("Sales").is_empty());
    let max = fake.max_in_flight();
    assert!(max > 1 && max <= 4, "{max}");
}

#[tokio::test]
async fn with_a_bound_of_one_member_calls_run_one_at_a_time() {
    let (fake, prov, _audit, _dir, names) = many_members(10, 1);
    prov.update_group(&actor(), &group_id_for("Sales"), add_all(&names))
        .await
        .unwrap();
    assert_eq!(fake.member_names("Sales"), names);
    assert_eq!(fake.max_in_flight(), 1);
}

#[tokio::test]
async fn a_failed_write_among_parallel_ones_takes_back_every_confirmed_one() {
    for fault in [FakeFault::Error500, FakeFault::Unreached] {
        let (fake, prov, audit, _dir, names) = many_members(30, 4);
        fake.fault_next("add_group_member Sales u12", fault);
        let err = prov
            .update_group(&actor(), &group_id_for("Sales"), add_all(&names))
            .await
            .unwrap_err();
        match &err {
            ProvisionError::Partial { detail, .. } => {
                assert!(detail.contains("u12"), "{detail}");
                assert!(detail.contains("nothing was changed"), "{detail}");
            }
            other => panic!("expected the failed member named, got {other:?}"),
        }
        assert!(fake.member_names("Sales").is_empty(), "{fault:?}");
        let writes = fake.writes();
        let added: BTreeSet<&str> = writes
            .iter()
            .filter_map(|w| w.strip_prefix("add_group_member Sales "))
            .filter(|n| *n != "u12")
            .collect();
        let removed: BTreeSet<&str> = writes
            .iter()
            .filter_map(|w| w.strip_prefix("remove_group_member Sales "))
            .collect();
        assert_eq!(
            added, removed,
            "every confirmed add is taken back, nothing else"
        );
        assert!(
            added.len() < 29,
            "no write starts after the failure: {writes:?}"
        );
        assert!(
            !removed.contains("u12"),
            "a refused write did not happen and is not taken back"
        );
        let line = audit()
            .into_iter()
            .find(|l| l["operation"] == "update_group")
            .unwrap();
        assert_eq!(line["result"], "failed");
        let changes: Vec<String> = serde_json::from_value(line["changes"].clone()).unwrap();
        let confirmed = changes.iter().filter(|c| c.starts_with("added ")).count();
        let undone = changes.iter().filter(|c| c.starts_with("undone: ")).count();
        assert_eq!(confirmed, added.len(), "{changes:?}");
        assert_eq!(undone, added.len(), "{changes:?}");
    }
}

#[tokio::test]
async fn a_lost_answer_among_parallel_writes_is_resent_once_and_a_lost_failure_taken_back() {
    // Lost once: the resend answers, and the change completes.
    let (fake, prov, _audit, _dir, names) = many_members(20, 4);
    fake.fault_next("add_group_member Sales u07", FakeFault::Lost);
    prov.update_group(&actor(), &group_id_for("Sales"), add_all(&names))
        .await
        .unwrap();
    assert_eq!(fake.member_names("Sales"), names);
    let sends = fake
        .writes()
        .iter()
        .filter(|w| *w == "add_group_member Sales u07")
        .count();
    assert_eq!(sends, 2);

    // Lost twice: it may have happened, so it is taken back with the confirmed ones.
    let (fake, prov, _audit, _dir, names) = many_members(20, 4);
    fake.fault_next("add_group_member Sales u07", FakeFault::Lost);
    fake.fault_next("add_group_member Sales u07", FakeFault::Lost);
    prov.update_group(&actor(), &group_id_for("Sales"), add_all(&names))
        .await
        .unwrap_err();
    assert!(fake.member_names("Sales").is_empty());
    assert!(fake
        .writes()
        .contains(&"remove_group_member Sales u07".to_string()));
}

#[tokio::test]
async fn a_parallel_create_with_a_failed_member_removes_the_group_whole() {
    let (fake, prov, _audit, _dir, names) = many_members(20, 4);
    fake.fail_next("add_group_member Team u05");
    let mut change = group_change("Team");
    change.members = MembersChange::Replace(names.iter().map(|n| user_ref(n)).collect());
    prov.create_group(&actor(), change).await.unwrap_err();
    assert!(fake.group("Team").is_none());
    assert!(!fake
        .writes()
        .iter()
        .any(|w| w.starts_with("remove_group_member")));
}

#[tokio::test]
async fn members_that_name_nothing_are_all_reported_before_any_parallel_write() {
    let (fake, prov, _audit, _dir, mut names) = many_members(20, 4);
    names.insert(3, "ghost1".into());
    names.push("ghost2".into());
    let err = prov
        .update_group(&actor(), &group_id_for("Sales"), add_all(&names))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&id_for("ghost1")) && text.contains(&id_for("ghost2")),
        "{text}"
    );
    assert!(fake.writes().is_empty());
    assert!(fake.max_in_flight() > 1);
}
