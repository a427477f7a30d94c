//! The ThingWorx implementation of [`Platform`]: services invoked with
//! `POST /Thingworx/<Collection>/<Entity>/Services/<Name>` and JSON bodies over the gateway's
//! pooled upstream client.

mod answers;
mod transport;

use answers::{
    bool_result, entity_object, last_modified, name_value_rows, parse_tags, summaries, table,
};
use transport::{sensitive, unexpected};

use super::infotable::{text, InfoTable};
use super::names;
use super::{
    ActiveUser, EntityKind, EntitySummary, Extensions, Group, Member, MemberKind, NewGroup,
    NewUser, Platform, PlatformError, User, VocabularyState,
};
use crate::config::{
    ExtensionAccess, NameLookup, PlatformConfig, PlatformCredentials, Secret, UpstreamConfig,
};
use crate::proxy::UpstreamClient;
use crate::tag::Tag;
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Everything but RFC 3986 unreserved characters is escaped, so `@`, spaces, `%` and non-ASCII
/// names survive the trip into a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Lists are requested whole; the platform's default page is far smaller than real directories.
const LIST_MAX_ITEMS: u64 = 100_000;
/// A platform answer larger than this is refused rather than held in memory.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How much of a platform error text is kept.
const MAX_ERROR_TEXT: usize = 512;
/// Stored spellings remembered; past this the memory starts again (reads refill it).
const MAX_SPELLINGS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
#[error("platform.{0} cannot be sent in an HTTP header (it holds control or non-ASCII characters)")]
pub struct BadCredentials(&'static str);

/// Whether a call may be sent again after the connection to the platform failed. Creates and
/// deletes are not: the platform may have acted before the connection broke.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Once,
}

pub struct ThingWorx {
    client: UpstreamClient,
    /// `appKey` or `Authorization`, marked sensitive so it never shows in debug output.
    credential: (header::HeaderName, HeaderValue),
    limiter: Arc<Semaphore>,
    retries: u32,
    timeout: Duration,
    names: NameLookup,
    /// What `NameLookup::Auto` found, once it has asked.
    case_sensitive: tokio::sync::OnceCell<bool>,
    /// Folded name → the spelling the platform stores, for every user and group read or
    /// created: every call after a lookup names the entity as the platform spells it (8.x
    /// finds names only as spelled; the ids SCIM uses carry the folded name).
    spellings: Mutex<HashMap<(MemberKind, String), String>>,
    extensions: ExtensionAccess,
    /// What `ExtensionAccess::Auto` found, once it has probed.
    extension_reads: tokio::sync::OnceCell<ExtensionAccess>,
}

impl ThingWorx {
    pub fn new(
        client: UpstreamClient,
        upstream: &UpstreamConfig,
        platform: &PlatformConfig,
    ) -> Result<Self, BadCredentials> {
        let credential = match &platform.credentials {
            PlatformCredentials::AppKey(key) => (
                header::HeaderName::from_static("appkey"),
                sensitive(key.expose()).ok_or(BadCredentials("app_key"))?,
            ),
            PlatformCredentials::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                (
                    header::AUTHORIZATION,
                    sensitive(&format!("Basic {encoded}")).ok_or(BadCredentials("password"))?,
                )
            }
        };
        Ok(Self {
            client,
            credential,
            limiter: Arc::new(Semaphore::new(platform.max_concurrency)),
            retries: platform.retries,
            timeout: upstream.request_timeout,
            names: platform.names,
            case_sensitive: tokio::sync::OnceCell::new(),
            spellings: Mutex::new(HashMap::new()),
            extensions: platform.extensions,
            extension_reads: tokio::sync::OnceCell::new(),
        })
    }

    /// The platform's spelling of a user or group name, when it has been seen.
    fn spelled(&self, kind: MemberKind, name: &str) -> String {
        self.spellings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(kind, names::fold(name)))
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    fn remember(&self, kind: MemberKind, stored: &str) {
        if stored.is_empty() {
            return;
        }
        let mut spellings = self.spellings.lock().unwrap_or_else(|e| e.into_inner());
        if spellings.len() >= MAX_SPELLINGS {
            spellings.clear();
        }
        spellings.insert((kind, names::fold(stored)), stored.to_string());
    }

    fn forget(&self, kind: MemberKind, name: &str) {
        self.spellings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(kind, names::fold(name)));
    }

    /// Whether the platform finds names only as spelled (ThingWorx 8.x), per `platform.names`
    /// or, on `auto`, by asking once: a `GET` of the gateway's own user in another case.
    pub async fn names_case_sensitive(&self) -> Result<bool, PlatformError> {
        match self.names {
            NameLookup::CaseInsensitive => return Ok(false),
            NameLookup::CaseSensitive => return Ok(true),
            NameLookup::Auto => {}
        }
        self.case_sensitive
            .get_or_try_init(|| async {
                let me = self.current_user().await?;
                let upper = me.to_uppercase();
                let other = if upper != me { upper } else { me.to_lowercase() };
                if other == me {
                    // A name without case cannot tell; 9.x/10.x is the likelier platform.
                    return Ok(false);
                }
                let path = Self::entity_path("Users", &other);
                let sensitive = match self.send(Method::GET, &path, None, Repeat::Safe).await {
                    Ok(_) => false,
                    Err(PlatformError::NotFound(_)) => true,
                    Err(e) => return Err(e),
                };
                tracing::info!(
                    case_sensitive = sensitive,
                    "platform name lookup: {} (platform.names = \"auto\")",
                    if sensitive {
                        "names are found only as spelled (ThingWorx 8.x); names from SCIM ids are matched against the platform's list"
                    } else {
                        "names are found ignoring case (ThingWorx 9.x/10.x)"
                    }
                );
                Ok(sensitive)
            })
            .await
            .copied()
    }

    /// How user extension values are read, per `platform.extensions` or, on `auto`, by probing
    /// once on the gateway's own user: the `UserExtensions` configuration table
    /// (`GetConfigurationTable`, verified live on 9.5–10.2) when it answers, else
    /// `GetPropertyValues`. Logged once.
    pub async fn extension_reads(&self) -> Result<ExtensionAccess, PlatformError> {
        if self.extensions != ExtensionAccess::Auto {
            return Ok(self.extensions);
        }
        self.extension_reads
            .get_or_try_init(|| async {
                let me = self.current_user().await?;
                let found = match self.configuration_table(&me).await {
                    Ok(_) => ExtensionAccess::ConfigurationTable,
                    Err(e @ PlatformError::Unauthorized { .. }) => return Err(e),
                    Err(e @ (PlatformError::Unavailable(_) | PlatformError::Timeout(_))) => {
                        return Err(e)
                    }
                    Err(_) => ExtensionAccess::PropertyValues,
                };
                tracing::info!(
                    "user extension values are read with {} (platform.extensions = \"auto\")",
                    match found {
                        ExtensionAccess::ConfigurationTable =>
                            "GetConfigurationTable {\"tableName\":\"UserExtensions\"}",
                        _ => "GetPropertyValues (the UserExtensions configuration table did not answer)",
                    }
                );
                Ok(found)
            })
            .await
            .copied()
    }

    /// A user's `UserExtensions` configuration table: rows `name`/`value`.
    async fn configuration_table(&self, user: &str) -> Result<Extensions, PlatformError> {
        let bytes = self
            .user_service(
                user,
                "GetConfigurationTable",
                json!({ "tableName": "UserExtensions" }),
            )
            .await?;
        let Some(rows) = name_value_rows(&bytes)? else {
            return Err(unexpected(
                "the UserExtensions configuration table has no name column",
                user,
            ));
        };
        Ok(rows.into_iter().filter(|(k, _)| !k.is_empty()).collect())
    }

    /// A user or group entity by name, in any case: on a platform that finds names only as
    /// spelled, a miss is looked up in the list of that kind to find the stored spelling.
    async fn read_entity(
        &self,
        kind: MemberKind,
        name: &str,
    ) -> Result<Map<String, Value>, PlatformError> {
        let collection = match kind {
            MemberKind::User => "Users",
            MemberKind::Group => "Groups",
        };
        let asked = self.spelled(kind, name);
        let get = |spelling: String| async move {
            let path = Self::entity_path(collection, &spelling);
            let bytes = self.send(Method::GET, &path, None, Repeat::Safe).await?;
            entity_object(&bytes, &spelling)
        };
        let object = match get(asked.clone()).await {
            Err(PlatformError::NotFound(message)) => {
                if !self.names_case_sensitive().await? {
                    return Err(PlatformError::NotFound(message));
                }
                let listed = match kind {
                    MemberKind::User => self.list_users().await?,
                    MemberKind::Group => self.list_groups().await?,
                };
                let Some(stored) = listed
                    .into_iter()
                    .map(|e| e.name)
                    .find(|n| *n != asked && names::same(n, name))
                else {
                    return Err(PlatformError::NotFound(message));
                };
                get(stored).await?
            }
            other => other?,
        };
        self.remember(kind, &text(&object, "name"));
        Ok(object)
    }

    fn entity_path(collection: &str, entity: &str) -> String {
        format!(
            "/Thingworx/{collection}/{}",
            utf8_percent_encode(entity, SEGMENT)
        )
    }

    fn service_path(collection: &str, entity: &str, service: &str) -> String {
        format!(
            "{}/Services/{service}",
            Self::entity_path(collection, entity)
        )
    }

    async fn entity_services(
        &self,
        service: &str,
        body: Value,
        repeat: Repeat,
    ) -> Result<Bytes, PlatformError> {
        let path = Self::service_path("Resources", "EntityServices", service);
        self.send(Method::POST, &path, Some(body), repeat).await
    }

    async fn user_service(
        &self,
        user: &str,
        service: &str,
        body: Value,
    ) -> Result<Bytes, PlatformError> {
        let path = Self::service_path("Users", &self.spelled(MemberKind::User, user), service);
        self.send(Method::POST, &path, Some(body), Repeat::Safe)
            .await
    }

    async fn group_service(
        &self,
        group: &str,
        service: &str,
        body: Value,
    ) -> Result<Bytes, PlatformError> {
        let path = Self::service_path("Groups", &self.spelled(MemberKind::Group, group), service);
        self.send(Method::POST, &path, Some(body), Repeat::Safe)
            .await
    }

    async fn session_service(&self, service: &str, body: Value) -> Result<Bytes, PlatformError> {
        let path = Self::service_path("Resources", "CurrentSessionInfo", service);
        self.send(Method::POST, &path, Some(body), Repeat::Safe)
            .await
    }
}

fn random_password() -> Result<String, PlatformError> {
    crate::random::password().map_err(|e| unexpected("cannot generate a password", e))
}

fn refuse_invalid_name(name: &str) -> Result<(), PlatformError> {
    match names::invalid_reason(name) {
        Some(reason) => Err(PlatformError::Rejected(format!("{name:?}: {reason}"))),
        None => Ok(()),
    }
}

#[async_trait]
impl Platform for ThingWorx {
    async fn current_user(&self) -> Result<String, PlatformError> {
        let bytes = self.session_service("GetCurrentUser", json!({})).await?;
        match table(&bytes)?.result() {
            Some(Value::String(s)) => Ok(s.clone()),
            other => Err(unexpected("expected a user name", format!("{other:?}"))),
        }
    }

    async fn list_users(&self) -> Result<Vec<EntitySummary>, PlatformError> {
        let body = json!({"type": "User", "maxItems": LIST_MAX_ITEMS, "nameMask": "*"});
        summaries(
            &self
                .entity_services("GetEntityList", body, Repeat::Safe)
                .await?,
        )
    }

    async fn get_user(&self, name: &str) -> Result<User, PlatformError> {
        let o = self.read_entity(MemberKind::User, name).await?;
        Ok(User {
            name: text(&o, "name"),
            description: text(&o, "description"),
            project: text(&o, "projectName"),
            home_mashup: text(&o, "homeMashup"),
            mobile_mashup: text(&o, "mobileMashup"),
            tags: parse_tags(o.get("tags")),
            last_modified: last_modified(&o),
        })
    }

    async fn create_user(&self, user: &NewUser) -> Result<(), PlatformError> {
        refuse_invalid_name(&user.name)?;
        let password = match &user.password {
            Some(p) => p.expose().to_string(),
            None => random_password()?,
        };
        let mut fields = vec![
            ("userName", "USERNAME", json!(user.name)),
            ("password", "PASSWORD", json!(password)),
            ("description", "STRING", json!(user.description)),
            ("tags", "TAGS", json!(Tag::join(&user.tags))),
        ];
        if let Some(m) = &user.home_mashup {
            fields.push(("homeMashupName", "MASHUPNAME", json!(m)));
        }
        if let Some(m) = &user.mobile_mashup {
            fields.push(("mobileMashupName", "MASHUPNAME", json!(m)));
        }
        if !user.groups.is_empty() {
            let groups = InfoTable {
                rows: user
                    .groups
                    .iter()
                    .map(|g| {
                        let mut row = Map::new();
                        row.insert("name".into(), json!(g));
                        row
                    })
                    .collect(),
                ..InfoTable::single_row(&[("name", "GROUPNAME", Value::Null)])
            };
            let groups = serde_json::to_value(groups).map_err(|e| unexpected("groups", e))?;
            fields.push(("groups", "INFOTABLE", groups));
        }
        let options = InfoTable::single_row(&fields);
        self.entity_services(
            "CreateUserWithOptions",
            json!({ "userOptions": options }),
            Repeat::Once,
        )
        .await?;
        self.remember(MemberKind::User, &user.name);
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> Result<(), PlatformError> {
        let stored = self.spelled(MemberKind::User, name);
        self.entity_services("DeleteUser", json!({ "name": stored }), Repeat::Once)
            .await?;
        self.forget(MemberKind::User, name);
        Ok(())
    }

    async fn set_user_enabled(&self, name: &str, enabled: bool) -> Result<(), PlatformError> {
        let service = if enabled { "EnableUser" } else { "DisableUser" };
        self.user_service(name, service, json!({})).await?;
        Ok(())
    }

    async fn is_user_enabled(&self, name: &str) -> Result<bool, PlatformError> {
        bool_result(&self.user_service(name, "IsEnabled", json!({})).await?)
    }

    async fn set_user_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError> {
        self.user_service(
            name,
            "SetDescription",
            json!({ "description": description }),
        )
        .await?;
        Ok(())
    }

    async fn set_user_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError> {
        self.user_service(name, "SetTags", json!({ "tags": Tag::join(tags) }))
            .await?;
        Ok(())
    }

    async fn set_user_project(&self, name: &str, project: &str) -> Result<(), PlatformError> {
        self.user_service(name, "SetProjectName", json!({ "projectName": project }))
            .await?;
        Ok(())
    }

    async fn set_user_home_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError> {
        self.user_service(name, "SetHomeMashup", json!({ "name": mashup }))
            .await?;
        Ok(())
    }

    async fn set_user_mobile_mashup(&self, name: &str, mashup: &str) -> Result<(), PlatformError> {
        self.user_service(name, "SetMobileMashup", json!({ "name": mashup }))
            .await?;
        Ok(())
    }

    async fn user_extensions(&self, name: &str) -> Result<Extensions, PlatformError> {
        if self.extension_reads().await? == ExtensionAccess::ConfigurationTable {
            return self.configuration_table(name).await;
        }
        let bytes = self
            .user_service(name, "GetPropertyValues", json!({}))
            .await?;
        let table = table(&bytes)?;
        let Some(row) = table.rows.first() else {
            return Ok(Extensions::new());
        };
        Ok(row.keys().map(|k| (k.clone(), text(row, k))).collect())
    }

    async fn set_user_extensions(
        &self,
        name: &str,
        values: &Extensions,
    ) -> Result<(), PlatformError> {
        if values.is_empty() {
            return Ok(());
        }
        let fields: Vec<(&str, &str, Value)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), "STRING", json!(v)))
            .collect();
        let table = InfoTable::single_row(&fields);
        let written = self
            .user_service(name, "SetPropertyValues", json!({ "values": table }))
            .await;
        match written {
            Ok(_) => Ok(()),
            // The platform's own answer is no help here: ThingWorx reports a property its shape
            // lacks as a bare 500 ("Unable to Invoke Service SetPropertyValues on <user>"), or on
            // some versions as a not-found. The shape's definitions tell whether that was it.
            Err(
                e @ (PlatformError::Unexpected { .. }
                | PlatformError::NotFound(_)
                | PlatformError::Rejected(_)),
            ) => match self.user_extension_properties().await {
                Ok(Some(defined)) => {
                    let missing: Vec<String> = values
                        .keys()
                        .filter(|k| !defined.iter().any(|d| d == *k))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        Err(e)
                    } else {
                        Err(PlatformError::MissingProperties {
                            properties: missing,
                        })
                    }
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn user_groups(&self, name: &str) -> Result<Vec<EntitySummary>, PlatformError> {
        summaries(&self.user_service(name, "GetGroups", json!({})).await?)
    }

    async fn assign_password(&self, name: &str, password: &Secret) -> Result<(), PlatformError> {
        let body = json!({
            "newPassword": password.expose(),
            "newPasswordConfirm": password.expose(),
        });
        self.user_service(name, "AssignNewPassword", body).await?;
        Ok(())
    }

    async fn list_groups(&self) -> Result<Vec<EntitySummary>, PlatformError> {
        let body = json!({"type": "Group", "maxItems": LIST_MAX_ITEMS, "nameMask": "*"});
        summaries(
            &self
                .entity_services("GetEntityList", body, Repeat::Safe)
                .await?,
        )
    }

    async fn get_group(&self, name: &str) -> Result<Group, PlatformError> {
        let o = self.read_entity(MemberKind::Group, name).await?;
        Ok(Group {
            name: text(&o, "name"),
            description: text(&o, "description"),
            project: text(&o, "projectName"),
            home_mashup: text(&o, "homeMashup"),
            tags: parse_tags(o.get("tags")),
            last_modified: last_modified(&o),
        })
    }

    async fn create_group(&self, group: &NewGroup) -> Result<(), PlatformError> {
        refuse_invalid_name(&group.name)?;
        let mut body = json!({
            "name": group.name,
            "description": group.description,
            "tags": Tag::join(&group.tags),
        });
        if let Some(project) = &group.project {
            body["projectName"] = json!(project);
        }
        self.entity_services("CreateGroup", body, Repeat::Once)
            .await?;
        self.remember(MemberKind::Group, &group.name);
        // ThingWorx before 9.1 has no projectName parameter on CreateGroup and ignores it: the
        // group is read back and given its project with SetProjectName when it lacks it. The
        // group exists by now, so a failure here is logged rather than failing the create.
        if let Some(project) = group.project.as_deref().filter(|p| !p.is_empty()) {
            let settled = match self.get_group(&group.name).await {
                Ok(g) if g.project == project => Ok(()),
                Ok(_) => self.set_group_project(&group.name, project).await,
                Err(e) => Err(e),
            };
            if let Err(e) = settled {
                tracing::warn!(group = %group.name, %project, error = %e,
                    "the new group's project could not be checked or set");
            }
        }
        Ok(())
    }

    async fn delete_group(&self, name: &str) -> Result<(), PlatformError> {
        let stored = self.spelled(MemberKind::Group, name);
        self.entity_services("DeleteGroup", json!({ "name": stored }), Repeat::Once)
            .await?;
        self.forget(MemberKind::Group, name);
        Ok(())
    }

    async fn group_members(&self, name: &str) -> Result<Vec<Member>, PlatformError> {
        let bytes = self
            .group_service(name, "GetGroupMembers", json!({}))
            .await?;
        Ok(table(&bytes)?
            .rows
            .iter()
            .filter_map(|r| {
                let kind = match text(r, "type").as_str() {
                    "User" => MemberKind::User,
                    "Group" => MemberKind::Group,
                    _ => return None,
                };
                Some(Member {
                    name: text(r, "name"),
                    kind,
                })
            })
            .collect())
    }

    async fn add_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError> {
        let body = json!({
            "member": self.spelled(member.kind, &member.name),
            "type": member.kind.as_str(),
        });
        self.group_service(group, "AddMember", body).await?;
        Ok(())
    }

    async fn remove_group_member(&self, group: &str, member: &Member) -> Result<(), PlatformError> {
        let body = json!({
            "member": self.spelled(member.kind, &member.name),
            "type": member.kind.as_str(),
        });
        self.group_service(group, "DeleteMember", body).await?;
        Ok(())
    }

    async fn set_group_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), PlatformError> {
        self.group_service(
            name,
            "SetDescription",
            json!({ "description": description }),
        )
        .await?;
        Ok(())
    }

    async fn set_group_tags(&self, name: &str, tags: &[Tag]) -> Result<(), PlatformError> {
        self.group_service(name, "SetTags", json!({ "tags": Tag::join(tags) }))
            .await?;
        Ok(())
    }

    async fn set_group_project(&self, name: &str, project: &str) -> Result<(), PlatformError> {
        self.group_service(name, "SetProjectName", json!({ "projectName": project }))
            .await?;
        Ok(())
    }

    async fn active_users(&self) -> Result<Vec<ActiveUser>, PlatformError> {
        let bytes = self
            .session_service("GetActiveUsers", json!({ "maxItems": LIST_MAX_ITEMS }))
            .await?;
        Ok(table(&bytes)?
            .rows
            .iter()
            .map(|r| ActiveUser {
                name: text(r, "name"),
                last_connection: r.get("lastConnection").and_then(Value::as_i64),
            })
            .filter(|u| !u.name.is_empty())
            .collect())
    }

    async fn terminate_sessions(&self, user: &str) -> Result<(), PlatformError> {
        let stored = self.spelled(MemberKind::User, user);
        self.session_service("TerminateUserSessions", json!({ "userName": stored }))
            .await?;
        Ok(())
    }

    async fn user_extension_properties(&self) -> Result<Option<Vec<String>>, PlatformError> {
        let path = Self::service_path("ThingShapes", "UserExtensions", "GetPropertyDefinitions");
        let bytes = self
            .send(Method::POST, &path, Some(json!({})), Repeat::Safe)
            .await?;
        Ok(Some(
            table(&bytes)?
                .rows
                .iter()
                .map(|r| text(r, "name"))
                .filter(|n| !n.is_empty())
                .collect(),
        ))
    }

    async fn vocabulary(&self, name: &str) -> Result<Option<VocabularyState>, PlatformError> {
        let path = Self::entity_path("ModelTags", name);
        let bytes = match self.send(Method::GET, &path, None, Repeat::Safe).await {
            Ok(bytes) => bytes,
            Err(PlatformError::NotFound(_)) => return Ok(Some(VocabularyState::Missing)),
            Err(e) => return Err(e),
        };
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| unexpected("the vocabulary is not JSON", e))?;
        Ok(Some(match value.get("isDynamic") {
            Some(Value::Bool(true)) => VocabularyState::Dynamic,
            Some(Value::Bool(false)) => VocabularyState::Static,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => VocabularyState::Dynamic,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => VocabularyState::Static,
            _ => VocabularyState::Unknown,
        }))
    }

    async fn find_by_tag(
        &self,
        kind: MemberKind,
        tag: &Tag,
    ) -> Result<Vec<EntitySummary>, PlatformError> {
        let body = json!({
            "type": kind.as_str(),
            "maxItems": LIST_MAX_ITEMS,
            "nameMask": "*",
            "tags": tag.to_string(),
        });
        let found = summaries(
            &self
                .entity_services("GetEntityList", body, Repeat::Safe)
                .await?,
        )?;
        Ok(found)
    }

    async fn entity_exists(&self, kind: EntityKind, name: &str) -> Result<bool, PlatformError> {
        // One EntityServices call works for every entity type, and an absent entity is an
        // empty list rather than an error whose status differs between versions. Entity names
        // cannot contain '*', so the mask is the name itself; the answer is still compared by
        // name, in case a version treats the mask more loosely.
        let body = json!({
            "type": kind.as_str(),
            "maxItems": LIST_MAX_ITEMS,
            "nameMask": name,
            "tags": "",
        });
        let found = summaries(
            &self
                .entity_services("GetEntityList", body, Repeat::Safe)
                .await?,
        )?;
        Ok(found.iter().any(|e| names::same(&e.name, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::transport::classify;
    use super::*;
    use http::StatusCode;

    #[test]
    fn names_are_escaped_into_one_segment() {
        assert_eq!(
            ThingWorx::service_path("Users", "jane doe@corp.com", "IsEnabled"),
            "/Thingworx/Users/jane%20doe%40corp.com/Services/IsEnabled"
        );
        assert_eq!(
            ThingWorx::entity_path("Users", "Jörg/100%"),
            "/Thingworx/Users/J%C3%B6rg%2F100%25"
        );
    }

    #[test]
    fn statuses_become_typed_errors_whatever_the_wording() {
        let b = |s: &str| Bytes::from(s.to_string());
        // The wording of older fakes and some versions no longer decides anything.
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, b("User [x] already exists")),
            Err(PlatformError::Unauthorized { status: 403, .. })
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, b("Not authorized")),
            Err(PlatformError::Unauthorized { status: 403, .. })
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b("")),
            Err(PlatformError::NotFound(_))
        ));
        for text in [
            "Thing [x] does not exist",
            "User [x] already exists",
            "Unable to Invoke Service CreateUserWithOptions on EntityServices",
        ] {
            assert!(
                matches!(
                    classify(StatusCode::INTERNAL_SERVER_ERROR, b(text)),
                    Err(PlatformError::Unexpected {
                        status: Some(500),
                        ..
                    })
                ),
                "{text}"
            );
        }
        assert!(matches!(
            classify(StatusCode::CONFLICT, b("")),
            Err(PlatformError::AlreadyExists(_))
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, b("")),
            Err(PlatformError::Unavailable(_))
        ));
        match classify(StatusCode::IM_A_TEAPOT, b("odd")) {
            Err(PlatformError::Unexpected { status, message }) => {
                assert_eq!(status, Some(418));
                assert_eq!(message, "odd");
            }
            other => panic!("{other:?}"),
        }
        assert!(classify(StatusCode::OK, b("")).is_ok());
    }

    #[test]
    fn tags_parse_in_both_shapes() {
        let from_text = parse_tags(Some(&json!("A:B;C:D")));
        let from_objects = parse_tags(Some(&json!([
            {"vocabulary": "A", "vocabularyTerm": "B"},
            {"vocabulary": "C", "vocabularyTerm": "D"}
        ])));
        assert_eq!(from_text, from_objects);
        assert_eq!(from_text.len(), 2);
    }

    #[test]
    fn entity_reads_accept_objects_and_tables_and_check_the_name() {
        let obj = Bytes::from(r#"{"name":"JDoe","description":"d"}"#);
        assert_eq!(
            text(&entity_object(&obj, "jdoe").unwrap(), "description"),
            "d"
        );
        let tbl = Bytes::from(r#"{"rows":[{"name":"jdoe"}]}"#);
        assert!(entity_object(&tbl, "JDOE").is_ok());
        assert!(entity_object(&obj, "someone-else").is_err());
    }

    #[test]
    fn last_modified_dates_read_as_numbers_or_text() {
        let read = |v: Value| {
            let mut o = Map::new();
            o.insert("lastModifiedDate".into(), v);
            last_modified(&o)
        };
        let expected = Some("2024-03-05T10:11:12.345Z".to_string());
        assert_eq!(read(json!(1_709_633_472_345_i64)), expected);
        assert_eq!(read(json!(1_709_633_472_345.0)), expected);
        assert_eq!(read(json!("1709633472345")), expected);
        assert_eq!(read(json!("2024-03-05T11:11:12.345+01:00")), expected);
        assert_eq!(read(json!("yesterday")), None);
        assert_eq!(read(json!(null)), None);
        assert_eq!(last_modified(&Map::new()), None);
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert!(a.len() >= 40);
        assert_ne!(a, b);
    }

    /// Summaries read only `name` and `description`, as the full rows were read: text as is,
    /// a missing or null field empty, a row without a name left out, other fields ignored.
    #[test]
    fn summaries_read_names_and_descriptions_only() {
        let bytes = Bytes::from_static(
            br#"{"dataShape":{"fieldDefinitions":{}},"rows":[
                {"name":"a","description":"first","tags":[{"vocabulary":"V","vocabularyTerm":"t"}],"isSystemObject":false},
                {"name":"b","description":null},
                {"name":"c","description":7},
                {"description":"no name"},
                {"name":"","description":"empty name"}]}"#,
        );
        let read: Vec<(String, String)> = summaries(&bytes)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.description))
            .collect();
        let expected =
            [("a", "first"), ("b", ""), ("c", "7")].map(|(n, d)| (n.to_string(), d.to_string()));
        assert_eq!(read, expected);
        assert!(summaries(&Bytes::from_static(b"  \n")).unwrap().is_empty());
        assert!(summaries(&Bytes::from_static(b"<html>")).is_err());
    }
}
