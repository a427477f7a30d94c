//! The platform's persistent entities and the rules that govern them. No I/O and no locking
//! here, so every change can be applied to a copy of the state and only kept once it is saved.

use super::error::{DevPlatformError, Fault};
use super::model::{
    seeded_mashups, seeded_projects, seeded_vocabularies, AppKey, Delta, Extensions, Group, Kind,
    Member, ModelEntity, NewGroup, NewUser, Tag, User, Vocabulary, ADMINISTRATOR, ADMIN_GROUPS,
    ALL_USERS, BUILTIN_GROUPS, BUILTIN_USERS, FORMER_DEFAULT_PROPERTY, STATE_VERSION,
    USER_EXTENSION_PROPERTIES,
};
use super::secret::PasswordHash;
use super::tracked::{Loading, Tracked, TrackedList};
use crate::platform::names::{fold, invalid_reason, same};
use crate::platform::EntityKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Users and groups keyed by their folded names, so lookups ignore case and iteration is in
/// the order listings are sorted in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct State {
    users: Tracked<User>,
    groups: Tracked<Group>,
    projects: Tracked<ModelEntity>,
    mashups: Tracked<ModelEntity>,
    app_keys: TrackedList<AppKey>,
    /// Properties an administrator added to the `UserExtensions` shape.
    added_properties: TrackedList<String>,
    vocabularies: Tracked<Vocabulary>,
    /// ThingWorx 8.x: a name is looked up as spelled (it is still unique ignoring case).
    /// Not persisted: the flavor the platform runs as decides.
    case_sensitive: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredRef<'a> {
    version: u32,
    users: Vec<&'a User>,
    groups: Vec<&'a Group>,
    projects: Vec<&'a ModelEntity>,
    mashups: Vec<&'a ModelEntity>,
    application_keys: &'a [AppKey],
    added_extension_properties: &'a [String],
    vocabularies: Vec<&'a Vocabulary>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    version: u32,
    users: Vec<User>,
    groups: Vec<Group>,
    #[serde(default = "seeded_projects")]
    projects: Vec<ModelEntity>,
    #[serde(default = "seeded_mashups")]
    mashups: Vec<ModelEntity>,
    application_keys: Vec<AppKey>,
    #[serde(default)]
    added_extension_properties: Vec<String>,
    #[serde(default = "seeded_vocabularies")]
    vocabularies: Vec<Vocabulary>,
}

pub(crate) fn user_missing(name: &str) -> Fault {
    Fault::not_found(format!("User [{name}] does not exist"))
}

pub(crate) fn group_missing(name: &str) -> Fault {
    Fault::not_found(format!("Group [{name}] does not exist"))
}

fn check_name(kind: Kind, name: &str) -> Result<(), Fault> {
    match invalid_reason(name) {
        Some(reason) => Err(Fault::bad_request(format!(
            "Invalid {} name [{name}]: {reason}",
            kind.as_str().to_lowercase()
        ))),
        None => Ok(()),
    }
}

pub(crate) fn is_system_object(kind: Kind, name: &str) -> bool {
    match kind {
        Kind::User => BUILTIN_USERS.iter().any(|(n, _)| same(n, name)),
        Kind::Group => BUILTIN_GROUPS.iter().any(|(n, _)| same(n, name)),
    }
}

impl State {
    /// The built-ins only, as a new platform starts.
    pub fn fresh(administrator_password: PasswordHash) -> State {
        let mut state = State::default();
        for (name, description) in BUILTIN_USERS {
            let mut user = User::new(name, description);
            if name == ADMINISTRATOR {
                user.password = Some(administrator_password.clone());
            }
            state.users.insert(fold(name), user);
        }
        for (name, description) in BUILTIN_GROUPS {
            state
                .groups
                .insert(fold(name), Group::new(name, description));
        }
        if let Some(admins) = state.groups.get_mut(&fold("Administrators")) {
            admins.members.push(Member {
                name: ADMINISTRATOR.into(),
                kind: Kind::User,
            });
        }
        for entity in seeded_projects() {
            state.projects.insert(fold(&entity.name), entity);
        }
        for entity in seeded_mashups() {
            state.mashups.insert(fold(&entity.name), entity);
        }
        for vocabulary in seeded_vocabularies() {
            state
                .vocabularies
                .insert(fold(&vocabulary.name), vocabulary);
        }
        state.settle();
        state
    }

    pub fn vocabulary(&self, name: &str) -> Option<&Vocabulary> {
        self.vocabularies.get(&fold(name))
    }

    /// Creates a vocabulary, or changes whether an existing one is dynamic.
    pub fn ensure_vocabulary(&mut self, name: &str, dynamic: bool) -> Result<(), Fault> {
        if name.is_empty() || name.contains([':', ';']) || invalid_reason(name).is_some() {
            return Err(Fault::bad_request(format!(
                "Invalid vocabulary name [{name}]"
            )));
        }
        match self.vocabularies.get_mut(&fold(name)) {
            Some(v) => v.dynamic = dynamic,
            None => {
                self.vocabularies.insert(
                    fold(name),
                    Vocabulary {
                        name: name.to_string(),
                        dynamic,
                        terms: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Admits tags about to be set: each names an existing vocabulary, and a term that vocabulary
    /// lacks is added when it is dynamic and refused when it is static.
    pub fn admit_tags(&mut self, tags: &[Tag]) -> Result<(), Fault> {
        for tag in tags {
            let Some(vocabulary) = self.vocabularies.get_mut(&fold(&tag.vocabulary)) else {
                return Err(Fault::bad_request(format!(
                    "Vocabulary [{}] does not exist",
                    tag.vocabulary
                )));
            };
            if vocabulary.terms.iter().any(|t| t == &tag.term) {
                continue;
            }
            if !vocabulary.dynamic {
                return Err(Fault::bad_request(format!(
                    "[{}] is not a term of the static vocabulary [{}]",
                    tag.term, vocabulary.name
                )));
            }
            vocabulary.terms.push(tag.term.clone());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(&StoredRef {
            version: STATE_VERSION,
            users: self.users.values().collect(),
            groups: self.groups.values().collect(),
            projects: self.projects.values().collect(),
            mashups: self.mashups.values().collect(),
            application_keys: self.app_keys.as_slice(),
            added_extension_properties: self.added_properties.as_slice(),
            vocabularies: self.vocabularies.values().collect(),
        })
    }

    /// Parses and checks a saved state; the error says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<State, String> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if stored.version != STATE_VERSION {
            return Err(format!(
                "state version {} is not supported (expected {STATE_VERSION})",
                stored.version
            ));
        }
        let mut state = State {
            added_properties: stored.added_extension_properties.into(),
            ..State::default()
        };
        for vocabulary in stored.vocabularies {
            let key = fold(&vocabulary.name);
            if state.vocabularies.insert(key, vocabulary).is_some() {
                return Err("two vocabularies share a name".to_string());
            }
        }
        // A name given twice is found once all are read, but reported as when each entry was
        // inserted as it was read: before a damaged entry that comes after the second one.
        const USERS_SHARE: &str = "two users share a name";
        const GROUPS_SHARE: &str = "two groups share a name";
        let mut users = Loading::with_capacity(stored.users.len());
        for user in stored.users {
            if let Err(reason) = state.admit_loaded_user(&user) {
                return Err(if users.repeats_a_key() {
                    USERS_SHARE.to_string()
                } else {
                    reason
                });
            }
            users.push(fold(&user.name), user);
        }
        state.users = users.finish().ok_or(USERS_SHARE)?;
        let mut groups = Loading::with_capacity(stored.groups.len());
        for group in stored.groups {
            if let Some(reason) = invalid_reason(&group.name) {
                return Err(if groups.repeats_a_key() {
                    GROUPS_SHARE.to_string()
                } else {
                    format!("group name {:?}: {reason}", group.name)
                });
            }
            groups.push(fold(&group.name), group);
        }
        state.groups = groups.finish().ok_or(GROUPS_SHARE)?;
        for (kind, entities) in [
            (EntityKind::Project, stored.projects),
            (EntityKind::Mashup, stored.mashups),
        ] {
            let what = kind.as_str().to_lowercase();
            for entity in entities {
                if let Some(reason) = invalid_reason(&entity.name) {
                    return Err(format!("{what} name {:?}: {reason}", entity.name));
                }
                let key = fold(&entity.name);
                if state.model_mut(kind).insert(key, entity).is_some() {
                    return Err(format!("two {what}s share a name"));
                }
            }
        }
        for group in state.groups.values() {
            for member in &group.members {
                let known = match member.kind {
                    Kind::User => state.users.contains_key(&fold(&member.name)),
                    Kind::Group => state.groups.contains_key(&fold(&member.name)),
                };
                if !known {
                    return Err(format!(
                        "group {:?} lists a member that does not exist: {} {:?}",
                        group.name,
                        member.kind.as_str(),
                        member.name
                    ));
                }
            }
        }
        for (i, key) in stored.application_keys.iter().enumerate() {
            if !state.users.contains_key(&fold(&key.user)) {
                return Err(format!(
                    "application key {:?} belongs to a user that does not exist",
                    key.name
                ));
            }
            if key.key_id.len() < 32 {
                return Err(format!("application key {:?} has a short id", key.name));
            }
            let clash = stored.application_keys[..i]
                .iter()
                .any(|k| same(&k.name, &key.name) || k.key_id == key.key_id);
            if clash {
                return Err(format!(
                    "application key {:?} is listed twice or shares its id",
                    key.name
                ));
            }
        }
        state.app_keys = stored.application_keys.into();
        state.settle();
        Ok(state)
    }

    /// Checks a user of a saved state; a user with the property an earlier development
    /// platform had by default brings it back as an added property.
    fn admit_loaded_user(&mut self, user: &User) -> Result<(), String> {
        if let Some(reason) = invalid_reason(&user.name) {
            return Err(format!("user name {:?}: {reason}", user.name));
        }
        if let Some(hash) = &user.password {
            hash.check_form()
                .map_err(|e| format!("user {:?}: {e}", user.name))?;
        }
        if user.extensions.contains_key(FORMER_DEFAULT_PROPERTY)
            && !self.has_extension_property(FORMER_DEFAULT_PROPERTY)
        {
            self.added_properties
                .push(FORMER_DEFAULT_PROPERTY.to_string());
        }
        if let Some(unknown) = user
            .extensions
            .keys()
            .find(|k| !self.has_extension_property(k))
        {
            return Err(format!(
                "user {:?} has an unknown extension property {unknown:?}",
                user.name
            ));
        }
        Ok(())
    }

    /// Persistence hook, at the end of a change made in place: sets `lastModifiedDate` on every
    /// user and group the change created or altered, as the platform does on each change of an
    /// entity (a group's membership included; the date only moves forward, even when two
    /// changes fall into one millisecond), and returns what changed, for the journal. The
    /// change stays open: [`State::settle`] keeps it, [`State::roll_back`] undoes it.
    pub fn pending_changes(&mut self, now_millis: i64) -> Delta {
        fn stamped<T: Clone + PartialEq>(
            entities: &mut Tracked<T>,
            date: impl Fn(&mut T) -> &mut i64,
            now_millis: i64,
        ) -> BTreeMap<String, Option<T>> {
            let mut out = BTreeMap::new();
            entities.for_each_changed(|key, value| {
                let value = value.map(|v| {
                    let d = date(v);
                    *d = now_millis.max(*d + 1);
                    v.clone()
                });
                out.insert(key.to_string(), value);
            });
            out
        }
        fn unstamped<T: Clone + PartialEq>(
            entities: &mut Tracked<T>,
        ) -> BTreeMap<String, Option<T>> {
            let mut out = BTreeMap::new();
            entities.for_each_changed(|key, value| {
                out.insert(key.to_string(), value.map(|v| v.clone()));
            });
            out
        }
        Delta {
            users: stamped(&mut self.users, |u| &mut u.last_modified_date, now_millis),
            groups: stamped(&mut self.groups, |g| &mut g.last_modified_date, now_millis),
            projects: unstamped(&mut self.projects),
            mashups: unstamped(&mut self.mashups),
            application_keys: self.app_keys.changed(),
            vocabularies: unstamped(&mut self.vocabularies),
            added_extension_properties: self.added_properties.changed(),
        }
    }

    /// Persistence hook: keeps the change in progress.
    pub fn settle(&mut self) {
        self.users.settle();
        self.groups.settle();
        self.projects.settle();
        self.mashups.settle();
        self.app_keys.settle();
        self.vocabularies.settle();
        self.added_properties.settle();
    }

    /// Persistence hook: undoes the change in progress (refused, not saved, or cut short).
    pub fn roll_back(&mut self) {
        self.users.roll_back();
        self.groups.roll_back();
        self.projects.roll_back();
        self.mashups.roll_back();
        self.app_keys.roll_back();
        self.vocabularies.roll_back();
        self.added_properties.roll_back();
    }

    /// Persistence hook for loading: sets what a journalled change set. The result is checked
    /// as a whole once every change is applied (see `journal::load`).
    pub fn apply(&mut self, delta: Delta) {
        fn put<T: Clone + PartialEq>(map: &mut Tracked<T>, changes: BTreeMap<String, Option<T>>) {
            for (key, value) in changes {
                match value {
                    Some(v) => {
                        map.insert(key, v);
                    }
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        put(&mut self.users, delta.users);
        put(&mut self.groups, delta.groups);
        put(&mut self.projects, delta.projects);
        put(&mut self.mashups, delta.mashups);
        if let Some(keys) = delta.application_keys {
            self.app_keys = keys.into();
        }
        put(&mut self.vocabularies, delta.vocabularies);
        if let Some(properties) = delta.added_extension_properties {
            self.added_properties = properties.into();
        }
        self.settle();
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Projects or mashups, sorted by name.
    pub fn model(&self, kind: EntityKind) -> impl Iterator<Item = &ModelEntity> {
        match kind {
            EntityKind::Project => self.projects.values(),
            EntityKind::Mashup => self.mashups.values(),
        }
    }

    fn model_mut(&mut self, kind: EntityKind) -> &mut Tracked<ModelEntity> {
        match kind {
            EntityKind::Project => &mut self.projects,
            EntityKind::Mashup => &mut self.mashups,
        }
    }

    /// 8.x looks names up as spelled; 9.x/10.x ignore case (names are unique ignoring case on
    /// both, and keep the spelling they were created with).
    pub fn set_case_sensitive(&mut self, on: bool) {
        self.case_sensitive = on;
    }

    fn finds(case_sensitive: bool, stored: &str, asked: &str) -> bool {
        !case_sensitive || stored == asked
    }

    pub fn user(&self, name: &str) -> Result<&User, Fault> {
        self.users
            .get(&fold(name))
            .filter(|u| Self::finds(self.case_sensitive, &u.name, name))
            .ok_or_else(|| user_missing(name))
    }

    pub fn user_mut(&mut self, name: &str) -> Result<&mut User, Fault> {
        let exact = self.case_sensitive;
        self.users
            .get_mut(&fold(name))
            .filter(|u| Self::finds(exact, &u.name, name))
            .ok_or_else(|| user_missing(name))
    }

    pub fn group(&self, name: &str) -> Result<&Group, Fault> {
        self.groups
            .get(&fold(name))
            .filter(|g| Self::finds(self.case_sensitive, &g.name, name))
            .ok_or_else(|| group_missing(name))
    }

    pub fn group_mut(&mut self, name: &str) -> Result<&mut Group, Fault> {
        let exact = self.case_sensitive;
        self.groups
            .get_mut(&fold(name))
            .filter(|g| Self::finds(exact, &g.name, name))
            .ok_or_else(|| group_missing(name))
    }

    /// The user by its folded name, as sessions remember it.
    pub fn user_by_key(&self, key: &str) -> Option<&User> {
        self.users.get(key)
    }

    /// Creates the user and joins it to `groups`; nothing changes if any group is missing.
    pub fn create_user(&mut self, new: NewUser) -> Result<(), Fault> {
        check_name(Kind::User, &new.name)?;
        let key = fold(&new.name);
        if self.users.contains_key(&key) {
            return Err(Fault::forbidden(format!(
                "User [{}] already exists",
                new.name
            )));
        }
        for group in &new.groups {
            self.group(group)?;
        }
        self.admit_tags(&new.tags)?;
        let user = User {
            name: new.name.clone(),
            description: new.description.into(),
            enabled: true,
            password: new.password,
            project_name: new.project_name.into(),
            home_mashup: new.home_mashup.into(),
            mobile_mashup: new.mobile_mashup.into(),
            language: new.language.into(),
            tags: new.tags.into(),
            extensions: Extensions::default(),
            last_modified_date: 0,
        };
        self.users.insert(key, user);
        for group in &new.groups {
            self.add_member(group, &new.name, Kind::User)?;
        }
        Ok(())
    }

    /// Removes the user, its memberships and its application keys (so a later user of the same
    /// name does not inherit them). Returns the folded name, for ending its sessions.
    pub fn delete_user(&mut self, name: &str) -> Result<String, Fault> {
        let key = fold(name);
        self.user(name)?;
        if is_system_object(Kind::User, name) {
            return Err(Fault::forbidden("Cannot delete system object"));
        }
        self.users.remove(&key);
        for group in self.groups.values_mut() {
            group
                .members
                .retain(|m| !(m.kind == Kind::User && same(&m.name, name)));
        }
        self.app_keys.retain(|k| !same(&k.user, name));
        Ok(key)
    }

    pub fn create_group(&mut self, new: NewGroup) -> Result<(), Fault> {
        check_name(Kind::Group, &new.name)?;
        let key = fold(&new.name);
        if self.groups.contains_key(&key) {
            return Err(Fault::forbidden(format!(
                "Group [{}] already exists",
                new.name
            )));
        }
        self.admit_tags(&new.tags)?;
        let mut group = Group::new(&new.name, &new.description);
        group.project_name = new.project_name;
        group.tags = new.tags.into();
        self.groups.insert(key, group);
        Ok(())
    }

    pub fn delete_group(&mut self, name: &str) -> Result<(), Fault> {
        let key = fold(name);
        self.group(name)?;
        if is_system_object(Kind::Group, name) {
            return Err(Fault::forbidden("Cannot delete system object"));
        }
        self.groups.remove(&key);
        for group in self.groups.values_mut() {
            group
                .members
                .retain(|m| !(m.kind == Kind::Group && same(&m.name, name)));
        }
        Ok(())
    }

    pub fn add_member(&mut self, group: &str, member: &str, kind: Kind) -> Result<(), Fault> {
        let group_key = fold(group);
        self.group(group)?;
        let display = match kind {
            Kind::User => self.user(member)?.name.clone(),
            Kind::Group => self.group(member)?.name.clone(),
        };
        if kind == Kind::User && group_key == fold(ALL_USERS) {
            return Ok(());
        }
        if kind == Kind::Group
            && (fold(member) == group_key
                || self.group_contains_group(&fold(member), &group_key, &mut HashSet::new()))
        {
            return Err(Fault::bad_request(format!(
                "Group [{member}] cannot be a member of [{group}]: a group cannot contain itself or a group that contains it"
            )));
        }
        let target = self.group_mut(group)?;
        if !target.has(kind, member) {
            target.members.push(Member {
                name: display.into(),
                kind,
            });
        }
        Ok(())
    }

    /// Idempotent for a non-member, but the principal must exist (as spelled, on 8.x).
    pub fn remove_member(&mut self, group: &str, member: &str, kind: Kind) -> Result<(), Fault> {
        match kind {
            Kind::User => self.user(member).map(|_| ())?,
            Kind::Group => self.group(member).map(|_| ())?,
        }
        self.group_mut(group)?
            .members
            .retain(|m| !(m.kind == kind && same(&m.name, member)));
        Ok(())
    }

    /// Members as listed: name, description, type. For the all-users group that is every user
    /// plus its explicit (group) members.
    pub fn members(&self, group: &str) -> Result<Vec<(&str, &str, Kind)>, Fault> {
        let g = self.group(group)?;
        let mut out = Vec::new();
        let all_users = same(&g.name, ALL_USERS);
        if all_users {
            out.extend(
                self.users
                    .values()
                    .map(|u| (u.name.as_str(), &*u.description, Kind::User)),
            );
        }
        for m in &g.members {
            let found = match m.kind {
                Kind::User if all_users => None,
                Kind::User => self
                    .users
                    .get(&fold(&m.name))
                    .map(|u| (u.name.as_str(), &*u.description)),
                Kind::Group => self
                    .groups
                    .get(&fold(&m.name))
                    .map(|g| (g.name.as_str(), g.description.as_str())),
            };
            if let Some((name, description)) = found {
                out.push((name, description, m.kind));
            }
        }
        Ok(out)
    }

    /// Groups whose explicit members include the principal (the implicit all-users
    /// membership is not listed).
    pub fn groups_containing(&self, kind: Kind, name: &str) -> Vec<&Group> {
        self.groups.values().filter(|g| g.has(kind, name)).collect()
    }

    fn group_contains_user(
        &self,
        group_key: &str,
        user_key: &str,
        seen: &mut HashSet<String>,
    ) -> bool {
        if !seen.insert(group_key.to_string()) {
            return false;
        }
        let Some(group) = self.groups.get(group_key) else {
            return false;
        };
        if group_key == fold(ALL_USERS) && self.users.contains_key(user_key) {
            return true;
        }
        group.members.iter().any(|m| match m.kind {
            Kind::User => fold(&m.name) == user_key,
            Kind::Group => self.group_contains_user(&fold(&m.name), user_key, seen),
        })
    }

    fn group_contains_group(
        &self,
        outer_key: &str,
        inner_key: &str,
        seen: &mut HashSet<String>,
    ) -> bool {
        if !seen.insert(outer_key.to_string()) {
            return false;
        }
        let Some(outer) = self.groups.get(outer_key) else {
            return false;
        };
        outer
            .members
            .iter()
            .filter(|m| m.kind == Kind::Group)
            .any(|m| {
                let key = fold(&m.name);
                key == inner_key || self.group_contains_group(&key, inner_key, seen)
            })
    }

    /// Whether the user may use the management services.
    pub fn is_admin(&self, user_key: &str) -> bool {
        user_key == fold(ADMINISTRATOR)
            || ADMIN_GROUPS
                .iter()
                .any(|g| self.group_contains_user(&fold(g), user_key, &mut HashSet::new()))
    }

    /// Every `UserExtensions` property with its value ("" when unset).
    pub fn extensions(&self, user: &str) -> Result<Vec<(String, String)>, Fault> {
        let user = self.user(user)?;
        Ok(self
            .extension_properties()
            .into_iter()
            .map(|p| {
                let value = user.extensions.get(&p).unwrap_or_default().to_string();
                (p, value)
            })
            .collect())
    }

    /// The `UserExtensions` shape: the stock properties, then any an administrator added.
    pub fn extension_properties(&self) -> Vec<String> {
        USER_EXTENSION_PROPERTIES
            .iter()
            .map(|p| p.to_string())
            .chain(self.added_properties.iter().cloned())
            .collect()
    }

    pub fn has_extension_property(&self, name: &str) -> bool {
        USER_EXTENSION_PROPERTIES.contains(&name) || self.added_properties.iter().any(|p| p == name)
    }

    /// `AddPropertyDefinition` on the shape: a STRING property (adding one twice is refused).
    pub fn add_extension_property(&mut self, name: &str) -> Result<(), Fault> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(Fault::bad_request(format!(
                "Invalid property name [{name}]"
            )));
        }
        if self.has_extension_property(name) {
            return Err(Fault::bad_request(format!(
                "Property [{name}] already defined"
            )));
        }
        self.added_properties.push(name.to_string());
        Ok(())
    }

    /// Sets the given properties; an unknown one refuses the whole change.
    pub fn set_extensions(
        &mut self,
        user: &str,
        values: Vec<(String, String)>,
    ) -> Result<(), Fault> {
        if let Some((unknown, _)) = values.iter().find(|(k, _)| !self.has_extension_property(k)) {
            return Err(Fault::not_found(format!(
                "Property [{unknown}] does not exist"
            )));
        }
        let user = self.user_mut(user)?;
        for (k, v) in values {
            if v.is_empty() {
                user.extensions.remove(&k);
            } else {
                user.extensions
                    .insert(&k, &v)
                    .map_err(|e| Fault::bad_request(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The enabled user an application key acts for. Every key is compared, in constant time,
    /// so neither timing nor an early exit tells how close a guess was.
    pub fn app_key_user(&self, presented: &[u8]) -> Option<&User> {
        let mut found = None;
        for key in &self.app_keys {
            if aws_lc_rs::constant_time::verify_slices_are_equal(key.key_id.as_bytes(), presented)
                .is_ok()
            {
                found = Some(key);
            }
        }
        let user = self.users.get(&fold(&found?.user))?;
        user.enabled.then_some(user)
    }

    /// The id of key `name` bound to `user`, adding it with `fresh_id` when there is none.
    pub fn ensure_app_key(
        &mut self,
        name: &str,
        user: &str,
        fresh_id: String,
    ) -> Result<String, DevPlatformError> {
        if let Some(reason) = invalid_reason(name) {
            return Err(DevPlatformError::InvalidName {
                name: name.to_string(),
                reason,
            });
        }
        let Some(owner) = self.users.get(&fold(user)) else {
            return Err(DevPlatformError::UnknownUser(user.to_string()));
        };
        if let Some(existing) = self.app_keys.iter().find(|k| same(&k.name, name)) {
            if !same(&existing.user, user) {
                return Err(DevPlatformError::AppKeyBoundElsewhere {
                    name: existing.name.clone(),
                    bound: existing.user.clone(),
                    requested: user.to_string(),
                });
            }
            return Ok(existing.key_id.clone());
        }
        let key = AppKey {
            name: name.to_string(),
            key_id: fresh_id.clone(),
            user: owner.name.clone(),
        };
        self.app_keys.push(key);
        Ok(fresh_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> State {
        State::fresh(PasswordHash::new("administrator-password").unwrap())
    }

    fn user(state: &mut State, name: &str) {
        state.create_user(NewUser::named(name)).unwrap();
    }

    fn group(state: &mut State, name: &str) {
        state
            .create_group(NewGroup {
                name: name.into(),
                description: String::new(),
                project_name: String::new(),
                tags: Vec::new(),
            })
            .unwrap();
    }

    #[test]
    fn built_ins_exist_and_cannot_be_deleted() {
        let mut s = fresh();
        assert!(s.user("administrator").unwrap().password.is_some());
        assert!(s.user("System").unwrap().password.is_none());
        assert_eq!(s.groups().count(), 8);
        let admins = s.members("Administrators").unwrap();
        assert_eq!(
            admins,
            vec![("Administrator", "Platform administrator", Kind::User)]
        );
        for fault in [
            s.delete_user("SuperUser"),
            s.delete_group("users").map(|_| String::new()),
        ] {
            assert_eq!(fault.unwrap_err().message, "Cannot delete system object");
        }
        assert!(is_system_object(Kind::Group, "DESIGNERS"));
        assert!(!is_system_object(Kind::User, "jdoe"));
    }

    #[test]
    fn names_are_unique_ignoring_case_and_keep_their_display_form() {
        let mut s = fresh();
        user(&mut s, "Jörg@Example.com");
        let dup = s
            .create_user(NewUser::named("jörg@example.COM"))
            .unwrap_err();
        assert_eq!(dup.status, http::StatusCode::FORBIDDEN);
        assert!(dup.message.contains("already exists"));
        assert_eq!(s.user("JÖRG@example.com").unwrap().name, "Jörg@Example.com");
        let bad = s.create_user(NewUser::named("a/b")).unwrap_err();
        assert_eq!(bad.status, http::StatusCode::BAD_REQUEST);
        let missing = s.user("nobody").unwrap_err();
        assert_eq!(missing.message, "User [nobody] does not exist");
    }

    #[test]
    fn the_8x_flavor_finds_names_only_as_spelled_but_keeps_them_unique_ignoring_case() {
        let mut s = fresh();
        s.set_case_sensitive(true);
        user(&mut s, "JDoe");
        group(&mut s, "Sales Team");
        assert!(s.user("JDoe").is_ok());
        assert_eq!(
            s.user("jdoe").unwrap_err().status,
            http::StatusCode::NOT_FOUND
        );
        assert!(s.group("sales team").is_err());
        assert!(s.create_user(NewUser::named("jdoe")).is_err());
        assert!(s.add_member("Sales Team", "jdoe", Kind::User).is_err());
        s.add_member("Sales Team", "JDoe", Kind::User).unwrap();
        assert!(s.remove_member("Sales Team", "JDOE", Kind::User).is_err());
        assert_eq!(s.members("Sales Team").unwrap().len(), 1);
        assert!(s.delete_user("jdoe").is_err());
        s.delete_user("JDoe").unwrap();
    }

    #[test]
    fn creating_into_a_missing_group_changes_nothing() {
        let mut s = fresh();
        group(&mut s, "Eng");
        let mut new = NewUser::named("jdoe");
        new.groups = vec!["Eng".into(), "Nope".into()];
        let before = s.clone();
        assert_eq!(
            s.create_user(new).unwrap_err().message,
            "Group [Nope] does not exist"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn membership_nesting_and_cycles() {
        let mut s = fresh();
        user(&mut s, "alice");
        group(&mut s, "Outer");
        group(&mut s, "Inner");
        s.add_member("outer", "INNER", Kind::Group).unwrap();
        s.add_member("Inner", "Alice", Kind::User).unwrap();
        s.add_member("Inner", "alice", Kind::User).unwrap();
        assert_eq!(s.members("Inner").unwrap(), vec![("alice", "", Kind::User)]);
        for (g, m) in [("Inner", "Outer"), ("Inner", "inner")] {
            let err = s.add_member(g, m, Kind::Group).unwrap_err();
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST, "{g} {m}");
        }
        assert!(!s.is_admin("alice"));
        s.add_member("SecurityAdministrators", "Outer", Kind::Group)
            .unwrap();
        assert!(s.is_admin("alice"));
        assert!(s.is_admin(&fold("Administrator")));

        let names: Vec<&str> = s
            .groups_containing(Kind::User, "ALICE")
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, vec!["Inner"]);

        s.delete_group("Inner").unwrap();
        assert!(s.members("Outer").unwrap().is_empty());
        assert!(!s.is_admin("alice"));
    }

    #[test]
    fn the_all_users_group_is_implicit() {
        let mut s = fresh();
        user(&mut s, "bob");
        s.add_member("Users", "bob", Kind::User).unwrap();
        assert!(s.group("Users").unwrap().members.is_empty());
        let listed: Vec<&str> = s.members("users").unwrap().iter().map(|m| m.0).collect();
        assert_eq!(listed, vec!["Administrator", "bob", "SuperUser", "System"]);
        assert!(s.add_member("Users", "ghost", Kind::User).is_err());
        // Nesting the all-users group makes everyone a member of the outer group.
        s.add_member("Administrators", "Users", Kind::Group)
            .unwrap();
        assert!(s.is_admin("bob"));
    }

    #[test]
    fn deleting_a_user_cleans_up_memberships_and_keys() {
        let mut s = fresh();
        user(&mut s, "carol");
        group(&mut s, "G");
        s.add_member("G", "carol", Kind::User).unwrap();
        let id = s.ensure_app_key("k", "CAROL", "x".repeat(43)).unwrap();
        assert!(s.app_key_user(id.as_bytes()).is_some());
        assert_eq!(s.delete_user("Carol").unwrap(), "carol");
        assert!(s.members("G").unwrap().is_empty());
        user(&mut s, "carol");
        assert!(s.app_key_user(id.as_bytes()).is_none());
    }

    #[test]
    fn app_keys_are_stable_and_checked() {
        let mut s = fresh();
        let id = s
            .ensure_app_key("gw", "Administrator", "a".repeat(43))
            .unwrap();
        assert_eq!(
            s.ensure_app_key("GW", "administrator", "b".repeat(43))
                .unwrap(),
            id
        );
        assert!(matches!(
            s.ensure_app_key("gw", "SuperUser", "c".repeat(43)),
            Err(DevPlatformError::AppKeyBoundElsewhere { .. })
        ));
        assert!(matches!(
            s.ensure_app_key("other", "nobody", "d".repeat(43)),
            Err(DevPlatformError::UnknownUser(_))
        ));
        assert_eq!(s.app_key_user(id.as_bytes()).unwrap().name, "Administrator");
        assert!(s.app_key_user(b"aaaa").is_none());
        s.user_mut("Administrator").unwrap().enabled = false;
        assert!(s.app_key_user(id.as_bytes()).is_none());
    }

    #[test]
    fn extensions_accept_only_known_properties() {
        let mut s = fresh();
        user(&mut s, "dave");
        s.set_extensions("dave", vec![("firstName".into(), "Dave".into())])
            .unwrap();
        let err = s
            .set_extensions(
                "dave",
                vec![
                    ("lastName".into(), "X".into()),
                    ("shoeSize".into(), "9".into()),
                ],
            )
            .unwrap_err();
        assert_eq!(err.message, "Property [shoeSize] does not exist");
        let ext = s.extensions("dave").unwrap();
        assert_eq!(ext.len(), USER_EXTENSION_PROPERTIES.len());
        assert!(ext.contains(&("firstName".to_string(), "Dave".to_string())));
        assert!(ext.contains(&("lastName".to_string(), String::new())));
        // No scimExternalId on a stock shape; an administrator can add it.
        assert!(s
            .set_extensions("dave", vec![("scimExternalId".into(), "x".into())])
            .is_err());
        s.add_extension_property("scimExternalId").unwrap();
        assert!(s.add_extension_property("scimExternalId").is_err());
        s.set_extensions("dave", vec![("scimExternalId".into(), "x".into())])
            .unwrap();
        assert_eq!(s.extensions("dave").unwrap().len(), 16);
        assert_eq!(State::from_json(&s.to_json().unwrap()).unwrap(), s);
    }

    #[test]
    fn changes_stamp_the_last_modified_date_of_what_changed() {
        let mut s = fresh();
        user(&mut s, "fay");
        user(&mut s, "gus");
        group(&mut s, "Crew");
        s.pending_changes(1_000);
        s.settle();
        assert_eq!(s.user("fay").unwrap().last_modified_date, 1_000);
        assert_eq!(s.group("Crew").unwrap().last_modified_date, 1_000);

        s.add_member("Crew", "fay", Kind::User).unwrap();
        s.set_extensions("fay", vec![("city".into(), "Bern".into())])
            .unwrap();
        // The same millisecond still moves the date forward.
        s.pending_changes(1_000);
        s.settle();
        assert_eq!(s.user("fay").unwrap().last_modified_date, 1_001);
        assert_eq!(s.group("Crew").unwrap().last_modified_date, 1_001);
        assert_eq!(s.user("gus").unwrap().last_modified_date, 1_000);

        // A state saved before the date was kept still loads, with no date.
        let mut value: serde_json::Value = serde_json::from_slice(&s.to_json().unwrap()).unwrap();
        for list in ["users", "groups"] {
            for e in value[list].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("lastModifiedDate");
            }
        }
        let older = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(older.user("fay").unwrap().last_modified_date, 0);
        assert_eq!(
            older.user("fay").unwrap().extensions.get("city"),
            Some("Bern")
        );
    }

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let mut s = fresh();
        user(&mut s, "erin");
        group(&mut s, "Team");
        s.add_member("Team", "erin", Kind::User).unwrap();
        s.set_extensions("erin", vec![("city".into(), "Zürich".into())])
            .unwrap();
        s.ensure_app_key("k", "erin", "e".repeat(43)).unwrap();
        let bytes = s.to_json().unwrap();
        assert_eq!(State::from_json(&bytes).unwrap(), s);

        assert!(State::from_json(b"{").is_err());
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["groups"][0]["members"] = serde_json::json!([{"name": "ghost", "type": "User"}]);
        let err = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.contains("ghost"), "{err}");
        value["version"] = serde_json::json!(99);
        assert!(State::from_json(&serde_json::to_vec(&value).unwrap()).is_err());
    }

    /// A state document in the shape every earlier version wrote (field names and order, the
    /// stored password form, extension values as an object in name order): loading and saving
    /// it gives back the same bytes.
    const SAVED_STATE: &str = r#"{
  "version": 1,
  "users": [
    {
      "name": "Administrator",
      "description": "Platform administrator",
      "enabled": true,
      "password": {
        "algorithm": "pbkdf2-hmac-sha256",
        "iterations": 100000,
        "salt": "AAECAwQFBgcICQoLDA0ODw==",
        "hash": "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="
      },
      "projectName": "",
      "homeMashup": "",
      "mobileMashup": "",
      "language": "",
      "tags": [],
      "extensions": {},
      "lastModifiedDate": 0
    },
    {
      "name": "jdoe@example.com",
      "description": "He said \"hi\" \\ \t\u0001 ünïcødé",
      "enabled": false,
      "password": null,
      "projectName": "MyProject",
      "homeMashup": "Home",
      "mobileMashup": "MobileHome",
      "language": "de",
      "tags": [
        {
          "vocabulary": "SCIMExternalId",
          "vocabularyTerm": "ext-1"
        },
        {
          "vocabulary": "Applications",
          "vocabularyTerm": "SCIM"
        }
      ],
      "extensions": {
        "city": "Zürich",
        "emailAddress": "jdoe@example.com",
        "firstName": "Jane",
        "lastName": "Doe \"Q\"",
        "scimExternalId": "ext-1"
      },
      "lastModifiedDate": 1700000000123
    },
    {
      "name": "Zoë",
      "description": "",
      "enabled": true,
      "password": {
        "algorithm": "pbkdf2-hmac-sha256",
        "iterations": 1,
        "salt": "AAECAwQFBgc=",
        "hash": "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="
      },
      "projectName": "",
      "homeMashup": "",
      "mobileMashup": "",
      "language": "",
      "tags": [
        {
          "vocabulary": "Applications",
          "vocabularyTerm": "SCIM"
        }
      ],
      "extensions": {
        "fullName": ""
      },
      "lastModifiedDate": 5
    }
  ],
  "groups": [
    {
      "name": "Administrators",
      "description": "Platform administrators",
      "projectName": "",
      "homeMashup": "",
      "tags": [],
      "members": [
        {
          "name": "Administrator",
          "type": "User"
        },
        {
          "name": "Team Zürich",
          "type": "Group"
        }
      ],
      "lastModifiedDate": 0
    },
    {
      "name": "Team Zürich",
      "description": "",
      "projectName": "MyProject",
      "homeMashup": "Home",
      "tags": [
        {
          "vocabulary": "SCIMExternalId",
          "vocabularyTerm": "g-1"
        }
      ],
      "members": [
        {
          "name": "Zoë",
          "type": "User"
        },
        {
          "name": "jdoe@example.com",
          "type": "User"
        }
      ],
      "lastModifiedDate": 1700000000124
    }
  ],
  "projects": [
    {
      "name": "MyProject",
      "description": "Example project"
    }
  ],
  "mashups": [
    {
      "name": "Home",
      "description": "Example home mashup"
    },
    {
      "name": "MobileHome",
      "description": "Example mobile home mashup"
    }
  ],
  "applicationKeys": [
    {
      "name": "gateway",
      "keyId": "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
      "user": "Administrator"
    }
  ],
  "addedExtensionProperties": [
    "scimExternalId"
  ],
  "vocabularies": [
    {
      "name": "Applications",
      "dynamic": false,
      "terms": [
        "SCIM"
      ]
    },
    {
      "name": "SCIMExternalId",
      "dynamic": true,
      "terms": [
        "ext-1",
        "g-1"
      ]
    }
  ]
}"#;

    #[test]
    fn a_saved_state_is_written_back_byte_for_byte() {
        let s = State::from_json(SAVED_STATE.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(s.to_json().unwrap()).unwrap(),
            SAVED_STATE
        );

        let jdoe = s.user("JDOE@example.com").unwrap();
        assert_eq!(jdoe.extensions.get("lastName"), Some("Doe \"Q\""));
        assert_eq!(jdoe.extensions.get("title"), None);
        assert_eq!(&*jdoe.description, "He said \"hi\" \\ \t\u{1} ünïcødé");
        assert_eq!(jdoe.tags.len(), 2);
        assert!(s.user("administrator").unwrap().password.is_some());
        assert_eq!(
            s.members("team zürich").unwrap(),
            vec![
                ("Zoë", "", Kind::User),
                (
                    "jdoe@example.com",
                    "He said \"hi\" \\ \t\u{1} ünïcødé",
                    Kind::User
                )
            ]
        );

        // Listed out of order (as a hand-edited or generated file may be), it loads the same.
        let mut value: serde_json::Value = serde_json::from_str(SAVED_STATE).unwrap();
        for list in ["users", "groups"] {
            value[list].as_array_mut().unwrap().reverse();
        }
        let reordered = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(reordered, s);
        assert_eq!(
            String::from_utf8(reordered.to_json().unwrap()).unwrap(),
            SAVED_STATE
        );
    }

    #[test]
    fn a_name_given_twice_is_reported_as_before() {
        let value: serde_json::Value = serde_json::from_str(SAVED_STATE).unwrap();
        let load = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = value.clone();
            edit(&mut v);
            State::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err()
        };
        let twice = |list: &str| {
            let list = list.to_string();
            move |v: &mut serde_json::Value| {
                let copy = v[&list][0].clone();
                v[&list].as_array_mut().unwrap().push(copy);
            }
        };
        assert_eq!(load(&twice("users")), "two users share a name");
        assert_eq!(load(&twice("groups")), "two groups share a name");
        // The first problem in the order the entries are listed is the one reported.
        let damaged_then_twice = |v: &mut serde_json::Value| {
            v["users"][1]["extensions"]["shoeSize"] = "9".into();
            twice("users")(v);
        };
        assert!(load(&damaged_then_twice).contains("shoeSize"));
        let twice_then_damaged = |v: &mut serde_json::Value| {
            twice("users")(v);
            let mut bad = v["users"][2].clone();
            bad["name"] = "a/b".into();
            v["users"].as_array_mut().unwrap().push(bad);
        };
        assert_eq!(load(&twice_then_damaged), "two users share a name");
        let groups_twice_then_damaged = |v: &mut serde_json::Value| {
            twice("groups")(v);
            let mut bad = v["groups"][1].clone();
            bad["name"] = "a/b".into();
            v["groups"].as_array_mut().unwrap().push(bad);
        };
        assert_eq!(load(&groups_twice_then_damaged), "two groups share a name");
        let name_case = |v: &mut serde_json::Value| {
            let mut copy = v["users"][1].clone();
            copy["name"] = "JDoe@Example.com".into();
            v["users"].as_array_mut().unwrap().push(copy);
        };
        assert_eq!(load(&name_case), "two users share a name");
    }

    fn model_names(s: &State, kind: EntityKind) -> Vec<&str> {
        s.model(kind).map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn projects_and_mashups_are_seeded_and_kept() {
        let s = fresh();
        assert_eq!(model_names(&s, EntityKind::Project), ["MyProject"]);
        assert_eq!(model_names(&s, EntityKind::Mashup), ["Home", "MobileHome"]);

        let mut value: serde_json::Value = serde_json::from_slice(&s.to_json().unwrap()).unwrap();
        value["projects"] = serde_json::json!([
            {"name": "Plant", "description": ""},
            {"name": "MyProject", "description": "kept"}
        ]);
        value["mashups"] = serde_json::json!([]);
        let kept = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(
            model_names(&kept, EntityKind::Project),
            ["MyProject", "Plant"]
        );
        assert!(model_names(&kept, EntityKind::Mashup).is_empty());
        assert_eq!(State::from_json(&kept.to_json().unwrap()).unwrap(), kept);

        // A state saved before these were kept gets what a new platform has.
        let object = value.as_object_mut().unwrap();
        object.remove("projects");
        object.remove("mashups");
        let older = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(older, s);

        value["mashups"] = serde_json::json!([
            {"name": "Home", "description": ""},
            {"name": "HOME", "description": ""}
        ]);
        let err = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(err, "two mashups share a name");
        value["mashups"] = serde_json::json!([{"name": "a/b", "description": ""}]);
        let err = State::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.starts_with("mashup name \"a/b\""), "{err}");
    }
}
