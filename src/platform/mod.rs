//! The platform's native REST services, as the provisioning layer needs them: a trait of
//! operations on users, groups and sessions, and its ThingWorx implementation.

pub mod infotable;
pub mod names;
mod thingworx;

pub use thingworx::{BadCredentials, ThingWorx};

use crate::config::Secret;
use crate::tag::Tag;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

/// How a platform call failed, in the terms the SCIM layer answers with (404, 409, 502, 503,
/// 504). The platform's own text is kept for the operator; it never holds the app key.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("not found on the platform: {0}")]
    NotFound(String),
    #[error("already exists on the platform: {0}")]
    AlreadyExists(String),
    /// The platform refused the gateway's own credentials: a missing, wrong or under-privileged
    /// app key is a gateway misconfiguration, never the identity provider's fault.
    #[error("the platform refused the gateway's credentials (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("the platform refused the request as invalid: {0}")]
    Rejected(String),
    /// A write named user extension properties the platform's `UserExtensions` shape does not
    /// have: the gateway's attribute mapping is wrong for this platform, not the request.
    #[error("the platform's UserExtensions thing shape has no property {}", .properties.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", "))]
    MissingProperties { properties: Vec<String> },
    /// Nothing reached the platform (no connection), or a proxy in front of it answered.
    #[error("the platform is unavailable: {0}")]
    Unavailable(String),
    /// The request was sent but no answer came back: the platform may or may not have carried
    /// it out, so whoever made a change must find out by reading before it reports anything.
    #[error("the platform gave no answer (the call may have been carried out): {0}")]
    NoAnswer(String),
    #[error("the platform did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from the platform{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Unexpected {
        status: Option<u16>,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySummary {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub description: String,
    pub project: String,
    pub home_mashup: String,
    pub mobile_mashup: String,
    pub tags: Vec<Tag>,
    /// The platform's `lastModifiedDate`, RFC 3339 UTC, when it gives one.
    pub last_modified: Option<String>,
}

/// A user to create. Without a password the client generates a long random one: provisioned
/// users sign in through SSO, but the platform insists on a password.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub password: Option<Secret>,
    pub description: String,
    pub tags: Vec<Tag>,
    pub home_mashup: Option<String>,
    pub mobile_mashup: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub name: String,
    pub description: String,
    pub project: String,
    pub home_mashup: String,
    pub tags: Vec<Tag>,
    /// The platform's `lastModifiedDate`, RFC 3339 UTC, when it gives one.
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    pub name: String,
    pub description: String,
    pub project: Option<String>,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "User",
            MemberKind::Group => "Group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub kind: MemberKind,
}

impl Member {
    pub fn user(name: impl Into<String>) -> Self {
        Member {
            name: name.into(),
            kind: MemberKind::User,
        }
    }

    pub fn group(name: impl Into<String>) -> Self {
        Member {
            name: name.into(),
            kind: MemberKind::Group,
        }
    }

    /// Same principal, compared the way the platform compares names.
    pub fn is(&self, other: &Member) -> bool {
        self.kind == other.kind && names::same(&self.name, &other.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveUser {
    pub name: String,
    /// Milliseconds since the Unix epoch, when the platform says.
    pub last_connection: Option<i64>,
}

/// Model entities provisioning names (in user and group defaults) but never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    Project,
    Mashup,
}

impl EntityKind {
    /// The entity type as `GetEntityList` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Project => "Project",
            EntityKind::Mashup => "Mashup",
        }
    }
}

/// What the platform says about a model tag vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabularyState {
    Missing,
    /// New terms are refused: only the terms it already has can be used.
    Static,
    /// New terms are added as they are used.
    Dynamic,
    /// It exists; the platform did not say whether it is dynamic.
    Unknown,
}

/// User extension properties (`firstName`, `emailAddress`, ...), by property name.
pub type Extensions = BTreeMap<String, String>;

impl PlatformError {
    /// The call may have been carried out although it reported failure: the request was sent
    /// and its answer lost or late.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PlatformError::NoAnswer(_) | PlatformError::Timeout(_))
    }

    /// A read that failed this way may well work when asked again.
    pub fn worth_repeating(&self) -> bool {
        self.outcome_unknown()
            || matches!(self, PlatformError::Unexpected { status: Some(s), .. } if *s >= 500)
    }
}

/// The platform operations provisioning is built from. Names are compared case-insensitively,
/// as the platform does.
#[async_trait]
pub trait Platform: Send + Sync {
    /// The user the gateway's credentials act as; a cheap check that they work.
    async fn current_user(&self) -> Result<String, PlatformError>;

    async fn list_users(&self) -> Result<Vec<EntitySummary>, PlatformError>;
    async fn get_user(&self, name: &str) -> Result<User, PlatformError>;
    async fn create_user(&self, user: &NewUser) -> Result<(), PlatformError>;
    async fn delete_user(&self, name: &str) -> Result<(), PlatformError>;
    async fn set_user_enabled(&self, name: &str, enabled: bool) -> Result<(), PlatformError>;
    async fn is_user_enabled(&self, name: &str) -> Result<bool, PlatformError>;
    async fn set_user_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError>;
    async fn set_user_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError>;
    async fn set_user_project(&self, name: &str, project: &str) -> Result<(), PlatformError>;
    async fn set_user_home_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError>;
    async fn set_user_mobile_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError>;
    async fn user_extensions(&self, name: &str) -> Result<Extensions, PlatformError>;
    async fn set_user_extensions(
        &self,
        name: &str,
        values: &Extensions,
    ) -> Result<(), PlatformError>;
    async fn user_groups(&self, name: &str) -> Result<Vec<EntitySummary>, PlatformError>;
    async fn assign_password(&self, name: &str, password: &Secret) -> Result<(), PlatformError>;

    async fn list_groups(&self) -> Result<Vec<EntitySummary>, PlatformError>;
    async fn get_group(&self, name: &str) -> Result<Group, PlatformError>;
    async fn create_group(&self, group: &NewGroup) -> Result<(), PlatformError>;
    async fn delete_group(&self, name: &str) -> Result<(), PlatformError>;
    async fn group_members(&self, name: &str) -> Result<Vec<Member>, PlatformError>;
    async fn add_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError>;
    async fn remove_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError>;
    async fn set_group_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError>;
    async fn set_group_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError>;
    async fn set_group_project(&self, name: &str, project: &str) -> Result<(), PlatformError>;

    async fn active_users(&self) -> Result<Vec<ActiveUser>, PlatformError>;
    async fn terminate_sessions(&self, user: &str) -> Result<(), PlatformError>;

    /// The users or groups carrying `tag` (`GetEntityList` with `tags = "Vocabulary:Term"`): one
    /// call however many entities the platform holds, which is how an `externalId eq` filter is
    /// answered when the externalId is kept as a tag.
    async fn find_by_tag(
        &self,
        kind: MemberKind,
        tag: &Tag,
    ) -> Result<Vec<EntitySummary>, PlatformError>;

    /// Whether a project or mashup of this name exists, so `scimgate check` can catch defaults
    /// that name something the platform lacks before users are provisioned with them.
    async fn entity_exists(&self, kind: EntityKind, name: &str) -> Result<bool, PlatformError>;

    /// The properties of the `UserExtensions` thing shape, when the platform can tell; `None`
    /// from a platform that cannot.
    async fn user_extension_properties(&self) -> Result<Option<Vec<String>>, PlatformError> {
        Ok(None)
    }

    /// Whether a model tag vocabulary exists and is dynamic, when the platform can tell.
    async fn vocabulary(&self, _name: &str) -> Result<Option<VocabularyState>, PlatformError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_the_text_form() {
        let tags = vec![
            Tag::parse("Applications:SCIM").unwrap(),
            Tag::parse(" Colors : Green ").unwrap(),
        ];
        assert_eq!(Tag::join(&tags), "Applications:SCIM;Colors:Green");
        assert!(Tag::parse("no-colon").is_none());
        assert!(Tag::parse(":x").is_none());
    }

    #[test]
    fn members_compare_case_insensitively_within_a_kind() {
        assert!(Member::user("JDoe@Corp.com").is(&Member::user("jdoe@corp.com")));
        assert!(!Member::user("Admins").is(&Member::group("Admins")));
    }
}
