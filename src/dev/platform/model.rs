//! The development platform's entities as they are stored and journalled, the built-in and
//! seeded ones, and one change to them ([`Delta`]).

use super::error::Fault;
use super::secret::PasswordHash;
use crate::platform::names::same;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
    /// One per tagged entity for a vocabulary such as `SCIMExternalId`.
    #[serde(deserialize_with = "exact")]
    pub terms: Vec<Box<str>>,
}

/// A list read from a state or journal line, with no spare capacity: a large one (the terms
/// of a vocabulary, the members of a group) would otherwise keep up to as much again unused.
fn exact<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut list = Vec::<T>::deserialize(d)?;
    list.shrink_to_fit();
    Ok(list)
}

/// Membership in either (direct or nested) grants the management services.
pub(super) const ADMIN_GROUPS: [&str; 2] = ["Administrators", "SecurityAdministrators"];

pub(super) const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tag {
    pub vocabulary: Box<str>,
    #[serde(rename = "vocabularyTerm")]
    pub term: Box<str>,
}

/// The TAGS text form `Vocab:Term;Vocab2:Term2`; empty text is no tags.
pub(crate) fn parse_tags(text: &str) -> Result<Vec<Tag>, Fault> {
    let mut tags: Vec<Tag> = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.split_once(':').and_then(|(v, t)| {
            let (v, t) = (v.trim(), t.trim());
            (!v.is_empty() && !t.is_empty()).then(|| Tag {
                vocabulary: v.into(),
                term: t.into(),
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

/// A platform may hold tens of thousands of these, all in memory: text that is set, not grown,
/// is a `Box<str>` (an empty one allocates nothing) and the lists are exact-sized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub name: String,
    pub description: Box<str>,
    pub enabled: bool,
    pub password: Option<PasswordHash>,
    pub project_name: Box<str>,
    pub home_mashup: Box<str>,
    pub mobile_mashup: Box<str>,
    pub language: Box<str>,
    pub tags: Box<[Tag]>,
    pub extensions: Extensions,
    /// `lastModifiedDate` in epoch milliseconds; 0 for a user saved before it was kept.
    #[serde(default)]
    pub last_modified_date: i64,
}

impl User {
    pub(super) fn new(name: &str, description: &str) -> Self {
        User {
            name: name.to_string(),
            description: description.into(),
            enabled: true,
            password: None,
            project_name: Box::default(),
            home_mashup: Box::default(),
            mobile_mashup: Box::default(),
            language: Box::default(),
            tags: Box::default(),
            extensions: Extensions::default(),
            last_modified_date: 0,
        }
    }
}

/// A user's `UserExtensions` values by property name, stored and iterated in name order as a
/// `BTreeMap<String, String>` would be, and (de)serialised as the same JSON object. Packed, as
/// every user has one: all names and values in one string and where each ends in one list, two
/// small allocations where a map costs a tree node and a string per name and per value.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// `name value name value ...`, names ascending and unique.
    text: Box<str>,
    /// Where each name and each value ends in `text`, in that order.
    ends: Box<[u32]>,
}

/// The values of one user do not fit the 4 GiB the packed form can address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong;

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("extension values too long")
    }
}

fn end_of(text: &str) -> Result<u32, TooLong> {
    u32::try_from(text.len()).map_err(|_| TooLong)
}

impl Extensions {
    /// From names in ascending order, each once.
    fn from_sorted<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<Extensions, TooLong> {
        let (count, bytes) = pairs
            .clone()
            .fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(2 * count);
        for (name, value) in pairs {
            text.push_str(name);
            ends.push(end_of(&text)?);
            text.push_str(value);
            ends.push(end_of(&text)?);
        }
        Ok(Extensions {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        })
    }

    /// Name and value pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let (pairs, _) = self.ends.as_chunks::<2>();
        let mut start = 0;
        pairs.iter().map(move |&[name_end, value_end]| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let name = self.text.get(start..name_end).unwrap_or_default();
            let value = self.text.get(name_end..value_end).unwrap_or_default();
            start = value_end;
            (name, value)
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(name, _)| name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets one value (a user has a few, so rebuilding the whole is cheap).
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), TooLong> {
        let mut map: BTreeMap<&str, &str> = self.iter().collect();
        map.insert(name, value);
        *self = Extensions::from_sorted(map.iter().map(|(k, v)| (*k, *v)))?;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) {
        if self.contains_key(name) {
            let kept = self.iter().filter(|(n, _)| *n != name);
            // Fewer bytes than already fit: never too long.
            if let Ok(smaller) = Extensions::from_sorted(kept) {
                *self = smaller;
            }
        }
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Extensions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Extensions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ExtensionsVisitor)
    }
}

/// Reads the object straight into the packed form; expects and reports what a
/// `BTreeMap<String, String>` does.
struct ExtensionsVisitor;

impl<'de> Visitor<'de> for ExtensionsVisitor {
    type Value = Extensions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Extensions, A::Error> {
        let mut text = String::new();
        let mut ends: Vec<u32> = Vec::new();
        let mut ascending = true;
        let mut previous_name = None;
        while let Some(()) = map.next_key_seed(AppendStr(&mut text))? {
            let start = ends.last().map_or(0, |&end| end as usize);
            ends.push(end_of(&text).map_err(de::Error::custom)?);
            let name = start..text.len();
            if let Some(previous) = previous_name.replace(name.clone()) {
                ascending &= text.get(previous) < text.get(name);
            }
            map.next_value_seed(AppendStr(&mut text))?;
            ends.push(end_of(&text).map_err(de::Error::custom)?);
        }
        let read = Extensions {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        };
        if ascending {
            return Ok(read);
        }
        // Written by something other than this program: a name repeated keeps its last value,
        // as a map does.
        let map: BTreeMap<&str, &str> = read.iter().collect();
        Extensions::from_sorted(map.iter().map(|(k, v)| (*k, *v))).map_err(de::Error::custom)
    }
}

/// Appends a JSON string to `text` without allocating one of its own; expects and reports
/// what a `String` does.
struct AppendStr<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for AppendStr<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for AppendStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(de::Error::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub name: Box<str>,
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
    pub tags: Box<[Tag]>,
    #[serde(deserialize_with = "exact")]
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
            tags: Box::default(),
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

    /// A journal line in the shape every earlier version wrote.
    const JOURNAL_LINE: &str = r#"{"users":{"gone":null,"jdoe@example.com":{"name":"jdoe@example.com","description":"x","enabled":true,"password":{"algorithm":"pbkdf2-hmac-sha256","iterations":100000,"salt":"AAECAwQFBgcICQoLDA0ODw==","hash":"ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM="},"projectName":"","homeMashup":"Home","mobileMashup":"","language":"","tags":[{"vocabulary":"SCIMExternalId","vocabularyTerm":"ext-1"}],"extensions":{"firstName":"Jane","lastName":"Doe"},"lastModifiedDate":7}},"groups":{"team":{"name":"Team","description":"","projectName":"","homeMashup":"","tags":[],"members":[{"name":"jdoe@example.com","type":"User"}],"lastModifiedDate":7}},"vocabularies":{"scimexternalid":{"name":"SCIMExternalId","dynamic":true,"terms":["ext-1"]}},"addedExtensionProperties":["scimExternalId"]}"#;

    #[test]
    fn a_journal_line_is_written_back_byte_for_byte() {
        let delta: Delta = serde_json::from_str(JOURNAL_LINE).unwrap();
        assert_eq!(serde_json::to_string(&delta).unwrap(), JOURNAL_LINE);
    }

    #[test]
    fn extensions_keep_name_order_and_read_as_a_map_does() {
        let read: Extensions = serde_json::from_str(r#"{"b":"2","a":"1","c":"","a":"3"}"#).unwrap();
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            [("a", "3"), ("b", "2"), ("c", "")]
        );
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"a":"3","b":"2","c":""}"#
        );
        let mut e = read.clone();
        e.insert("ab", "x").unwrap();
        e.insert("b", "").unwrap();
        e.remove("c");
        e.remove("zz");
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            [("a", "3"), ("ab", "x"), ("b", "")]
        );
        assert_eq!(e.get("ab"), Some("x"));
        assert!(!e.contains_key("c"));
        assert_eq!(format!("{e:?}"), r#"{"a": "3", "ab": "x", "b": ""}"#);
        assert_eq!(serde_json::to_string(&Extensions::default()).unwrap(), "{}");

        for (bad, expected) in [
            ("[]", "invalid type: sequence, expected a map"),
            (r#"{"a":1}"#, "invalid type: integer `1`, expected a string"),
        ] {
            let err = serde_json::from_str::<Extensions>(bad)
                .unwrap_err()
                .to_string();
            let old = serde_json::from_str::<BTreeMap<String, String>>(bad)
                .unwrap_err()
                .to_string();
            assert_eq!(err, old);
            assert!(err.starts_with(expected), "{err}");
        }
    }

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
