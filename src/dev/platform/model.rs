//! The development platform's entities as they are stored and journalled, the built-in and
//! seeded ones, and one change to them ([`Delta`]).

use super::error::Fault;
use super::secret::PasswordHash;
use crate::platform::names::same;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The stock property set of the `UserExtensions` thing shape, in the platform's order
/// (platform-contract.md [A] ThingShapes l.703, [M]). An administrator may add more
/// (`AddPropertyDefinition`); a stock platform has no `scimExternalId`.
pub(crate) const USER_EXTENSION_PROPERTIES: [&str; 15] = [
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
];

/// The property an earlier development platform had on the shape by default; a state saved then
/// keeps it as an added property.
pub(super) const FORMER_DEFAULT_PROPERTY: &str = "scimExternalId";

pub(crate) const ADMINISTRATOR: &str = "Administrator";
/// The "all users" group: every user is implicitly a member.
pub(crate) const ALL_USERS: &str = "Users";
pub(super) const BUILTIN_USERS: [(&str, &str); 3] = [
    (ADMINISTRATOR, "Platform administrator"),
    ("SuperUser", "Built-in super user"),
    ("System", "Built-in system user"),
];
pub(super) const BUILTIN_GROUPS: [(&str, &str); 8] = [
    ("Administrators", "Platform administrators"),
    ("ComposerUsers", "Users allowed to use Composer"),
    ("Designers", "Mashup designers"),
    ("Developers", "Application developers"),
    ("SecurityAdministrators", "Security administrators"),
    ("SolutionCentralDevelopers", "Solution Central developers"),
    (
        "SolutionCentralSiteAdministrators",
        "Solution Central site administrators",
    ),
    (ALL_USERS, "All users"),
];
/// Projects and mashups a new platform has: the names config/scimgate.example.toml gives the
/// user and group defaults, so a configuration started from it passes `scimgate check` against
/// `scimgate dev`.
const SEEDED_PROJECTS: [(&str, &str); 1] = [("MyProject", "Example project")];
const SEEDED_MASHUPS: [(&str, &str); 2] = [
    ("Home", "Example home mashup"),
    ("MobileHome", "Example mobile home mashup"),
];
/// Model tag vocabularies a new platform has: `Applications` (static, with the term the example
/// configuration's defaults use) and `SCIMExternalId`, the dynamic vocabulary an administrator
/// creates so the gateway can keep SCIM `externalId` as a tag term.
pub(super) fn seeded_vocabularies() -> Vec<Vocabulary> {
    vec![
        Vocabulary {
            name: "Applications".into(),
            dynamic: false,
            terms: vec!["SCIM".into()],
        },
        Vocabulary {
            name: "SCIMExternalId".into(),
            dynamic: true,
            terms: Vec::new(),
        },
    ]
}

/// A model tag vocabulary. A tag names an existing vocabulary; a new term is added on use only
/// to a dynamic one (platform-contract.md [K]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Vocabulary {
    pub name: String,
    pub dynamic: bool,
    pub terms: Vec<String>,
}

/// Membership in either (direct or nested) grants the management services.
pub(super) const ADMIN_GROUPS: [&str; 2] = ["Administrators", "SecurityAdministrators"];

pub(super) const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tag {
    pub vocabulary: String,
    #[serde(rename = "vocabularyTerm")]
    pub term: String,
}

/// The TAGS text form `Vocab:Term;Vocab2:Term2`; empty text is no tags.
pub(crate) fn parse_tags(text: &str) -> Result<Vec<Tag>, Fault> {
    let mut tags: Vec<Tag> = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once(':').and_then(|(v, t)| {
            let (v, t) = (v.trim(), t.trim());
            (!v.is_empty() && !t.is_empty()).then(|| Tag {
                vocabulary: v.to_string(),
                term: t.to_string(),
            })
        });
        let Some(tag) = parsed else {
            return Err(Fault::bad_request(format!(
                "Invalid tag [{entry}]: tags are written Vocabulary:Term"
            )));
        };
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "User" => Some(Kind::User),
            "Group" => Some(Kind::Group),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub password: Option<PasswordHash>,
    pub project_name: String,
    pub home_mashup: String,
    pub mobile_mashup: String,
    pub language: String,
    pub tags: Vec<Tag>,
    pub extensions: BTreeMap<String, String>,
    /// `lastModifiedDate` in epoch milliseconds; 0 for a user saved before it was kept.
    #[serde(default)]
    pub last_modified_date: i64,
}

impl User {
    pub(super) fn new(name: &str, description: &str) -> Self {
        User {
            name: name.to_string(),
            description: description.to_string(),
            enabled: true,
            password: None,
            project_name: String::new(),
            home_mashup: String::new(),
            mobile_mashup: String::new(),
            language: String::new(),
            tags: Vec::new(),
            extensions: BTreeMap::new(),
            last_modified_date: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Group {
    pub name: String,
    pub description: String,
    pub project_name: String,
    pub home_mashup: String,
    pub tags: Vec<Tag>,
    pub members: Vec<Member>,
    /// `lastModifiedDate` in epoch milliseconds; 0 for a group saved before it was kept.
    #[serde(default)]
    pub last_modified_date: i64,
}

impl Group {
    pub(super) fn new(name: &str, description: &str) -> Self {
        Group {
            name: name.to_string(),
            description: description.to_string(),
            project_name: String::new(),
            home_mashup: String::new(),
            tags: Vec::new(),
            members: Vec::new(),
            last_modified_date: 0,
        }
    }

    pub(super) fn has(&self, kind: Kind, name: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.kind == kind && same(&m.name, name))
    }
}

/// A project or mashup: provisioning only refers to these by name (in defaults), so the
/// development platform keeps nothing but the name and a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ModelEntity {
    pub name: String,
    pub description: String,
}

fn seed(entities: &[(&str, &str)]) -> Vec<ModelEntity> {
    entities
        .iter()
        .map(|(name, description)| ModelEntity {
            name: name.to_string(),
            description: description.to_string(),
        })
        .collect()
}

/// A state saved before projects and mashups were kept gets the ones a new platform has.
pub(super) fn seeded_projects() -> Vec<ModelEntity> {
    seed(&SEEDED_PROJECTS)
}

pub(super) fn seeded_mashups() -> Vec<ModelEntity> {
    seed(&SEEDED_MASHUPS)
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppKey {
    pub name: String,
    pub key_id: String,
    pub user: String,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKey")
            .field("name", &self.name)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

pub(crate) struct NewUser {
    pub name: String,
    pub password: Option<PasswordHash>,
    pub description: String,
    pub project_name: String,
    pub home_mashup: String,
    pub mobile_mashup: String,
    pub language: String,
    pub tags: Vec<Tag>,
    pub groups: Vec<String>,
}

impl NewUser {
    pub fn named(name: &str) -> Self {
        NewUser {
            name: name.to_string(),
            password: None,
            description: String::new(),
            project_name: String::new(),
            home_mashup: String::new(),
            mobile_mashup: String::new(),
            language: String::new(),
            tags: Vec::new(),
            groups: Vec::new(),
        }
    }
}

pub(crate) struct NewGroup {
    pub name: String,
    pub description: String,
    pub project_name: String,
    pub tags: Vec<Tag>,
}

/// One change: the new value of each entity it touched, by folded name; `None` for removed.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Delta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, Option<User>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Option<Group>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, Option<ModelEntity>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mashups: BTreeMap<String, Option<ModelEntity>>,
    /// The whole list when it changed (it is short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_keys: Option<Vec<AppKey>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vocabularies: BTreeMap<String, Option<Vocabulary>>,
    /// The whole list when it changed (it is short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_extension_properties: Option<Vec<String>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.projects.is_empty()
            && self.mashups.is_empty()
            && self.application_keys.is_none()
            && self.vocabularies.is_empty()
            && self.added_extension_properties.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_strictly() {
        assert!(parse_tags("").unwrap().is_empty());
        let tags = parse_tags("A:B; C : D ;A:B;").unwrap();
        assert_eq!(
            tags,
            vec![
                Tag {
                    vocabulary: "A".into(),
                    term: "B".into()
                },
                Tag {
                    vocabulary: "C".into(),
                    term: "D".into()
                }
            ]
        );
        assert_eq!(
            parse_tags("A:B;nope").unwrap_err().status,
            http::StatusCode::BAD_REQUEST
        );
        assert!(parse_tags(":x").is_err());
    }
}
