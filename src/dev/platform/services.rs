//! The services themselves: parameters in, infotables out, in the shapes the platform uses.

use super::error::Fault;
use super::model::{self, parse_tags, Kind, NewGroup, NewUser, Tag};
use super::secret::PasswordHash;
use super::store::is_system_object;
use super::DevPlatform;
use crate::platform::names::fold;
use crate::platform::EntityKind;
use serde_json::{json, Map, Value};

const DEFAULT_MAX_ITEMS: usize = 500;

/// What a request answers with: a JSON document, or 200 with an empty body.
#[derive(Debug)]
pub(crate) enum Reply {
    Nothing,
    Json(Value),
}

/// Who is calling: the stored display name and the folded form sessions and checks use.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    EntityServices,
    CurrentSessionInfo,
    Entity(Kind, String),
    ThingShape(String),
}

/// `{"dataShape":{"fieldDefinitions":{..}},"rows":[..]}` with the fields in `fields` order.
fn table(fields: &[(&str, &str)], rows: Vec<Value>) -> Value {
    let definitions: Map<String, Value> = fields
        .iter()
        .enumerate()
        .map(|(ordinal, (name, base_type))| {
            (
                name.to_string(),
                json!({
                    "name": name,
                    "baseType": base_type,
                    "description": "",
                    "ordinal": ordinal,
                    "aspects": {},
                }),
            )
        })
        .collect();
    json!({"dataShape": {"fieldDefinitions": definitions}, "rows": rows})
}

/// What `GetEntityList` lists: users and groups, or the model entities provisioning names.
#[derive(Debug, Clone, Copy)]
enum Listed {
    Principal(Kind),
    Model(EntityKind),
}

/// A primitive result: one row, one field named `result`.
fn result(base_type: &str, value: Value) -> Reply {
    Reply::Json(table(
        &[("result", base_type)],
        vec![json!({ "result": value })],
    ))
}

fn tags_value(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"vocabulary": t.vocabulary, "vocabularyTerm": t.term}))
            .collect(),
    )
}

fn summaries<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> Reply {
    let rows = items
        .map(|(name, description)| json!({"name": name, "description": description}))
        .collect();
    Reply::Json(table(
        &[("name", "STRING"), ("description", "STRING")],
        rows,
    ))
}

/// Whether `name` matches a mask where `*` stands for any run of characters, ignoring case.
fn mask_matches(mask: &str, name: &str) -> bool {
    let (mask, name) = (fold(mask), fold(name));
    let parts: Vec<&str> = mask.split('*').collect();
    let (Some((first, rest)), Some(last)) = (parts.split_first(), parts.last()) else {
        return true;
    };
    if parts.len() == 1 {
        return mask == name;
    }
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    let middle = &rest[..rest.len().saturating_sub(1)];
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// A service's input document, with the platform's rules for absent and mistyped values.
struct Params<'a> {
    service: &'a str,
    values: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }

    fn missing(&self, name: &str) -> Fault {
        Fault::not_found(format!(
            "Missing required parameter [{name}] for service [{}]",
            self.service
        ))
    }

    fn optional(&self, name: &str) -> Result<Option<String>, Fault> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Fault::bad_request(format!(
                "Parameter [{name}] must be a string"
            ))),
        }
    }

    fn required(&self, name: &str) -> Result<String, Fault> {
        self.optional(name)?.ok_or_else(|| self.missing(name))
    }

    fn text(&self, name: &str) -> Result<String, Fault> {
        Ok(self.optional(name)?.unwrap_or_default())
    }

    fn tags(&self, name: &str) -> Result<Vec<Tag>, Fault> {
        parse_tags(&self.text(name)?)
    }

    fn max_items(&self) -> Result<usize, Fault> {
        let invalid = || Fault::bad_request("Parameter [maxItems] must be a non-negative number");
        match self.get("maxItems") {
            None => Ok(DEFAULT_MAX_ITEMS),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                None => match n.as_f64() {
                    Some(f) if f >= 0.0 => Ok(f as usize),
                    _ => Err(invalid()),
                },
            },
            Some(Value::String(s)) => s.trim().parse::<usize>().map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    /// An INFOTABLE parameter's rows; the data shape is optional.
    fn rows(&self, name: &str) -> Result<Vec<&'a Map<String, Value>>, Fault> {
        let value = self.get(name).ok_or_else(|| self.missing(name))?;
        infotable_rows(value, name)
    }
}

fn infotable_rows<'a>(value: &'a Value, name: &str) -> Result<Vec<&'a Map<String, Value>>, Fault> {
    let not_a_table = || Fault::bad_request(format!("Parameter [{name}] must be an infotable"));
    let rows = value
        .as_object()
        .and_then(|o| o.get("rows"))
        .and_then(Value::as_array)
        .ok_or_else(not_a_table)?;
    rows.iter()
        .map(|r| r.as_object().ok_or_else(not_a_table))
        .collect()
}

/// A text cell of an infotable row: a string, or absent/null.
fn cell(row: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Fault::bad_request(format!(
            "Field [{field}] must be a string"
        ))),
    }
}

fn unknown_service(service: &str, on: &str) -> Fault {
    Fault::no_such_service(format!("Service [{service}] does not exist on [{on}]"))
}

/// An empty password means none: such a user exists but cannot log in.
fn optional_hash(
    platform: &DevPlatform,
    password: Option<String>,
) -> Result<Option<PasswordHash>, Fault> {
    match password.filter(|p| !p.is_empty()) {
        Some(p) => platform.hash_password(&p).map(Some),
        None => Ok(None),
    }
}

impl DevPlatform {
    /// The platform's password policy: 14–128 characters on 9.x/10.x, 10 and up on 8.x.
    fn check_password(&self, password: &str) -> Result<(), Fault> {
        let (min, max) = (
            self.flavor.min_password_chars(),
            self.flavor.max_password_chars(),
        );
        let length = password.chars().count();
        if length < min || length > max {
            return Err(Fault::bad_request(format!(
                "A password must be {min} to {max} characters long"
            )));
        }
        Ok(())
    }

    /// A user may be created without a password (an SSO-provisioned user); one that is given
    /// must meet the policy.
    fn check_optional_password(&self, password: Option<&str>) -> Result<(), Fault> {
        match password.filter(|p| !p.is_empty()) {
            Some(p) => self.check_password(p),
            None => Ok(()),
        }
    }

    pub(crate) fn list(&self, kind: Kind, max_items: Option<usize>) -> Reply {
        let max = max_items.unwrap_or(usize::MAX);
        self.read(|s| match kind {
            Kind::User => summaries(
                s.users()
                    .take(max)
                    .map(|u| (u.name.as_str(), &*u.description)),
            ),
            Kind::Group => summaries(
                s.groups()
                    .take(max)
                    .map(|g| (g.name.as_str(), g.description.as_str())),
            ),
        })
    }

    pub(crate) fn entity(&self, kind: Kind, name: &str) -> Result<Reply, Fault> {
        self.read(|s| {
            Ok(Reply::Json(match kind {
                Kind::User => {
                    let u = s.user(name)?;
                    with_date(
                        json!({
                            "name": u.name,
                            "description": u.description,
                            "enabled": u.enabled,
                            "projectName": u.project_name,
                            "homeMashup": u.home_mashup,
                            "mobileMashup": u.mobile_mashup,
                            "tags": tags_value(&u.tags),
                        }),
                        u.last_modified_date,
                    )
                }
                Kind::Group => {
                    let g = s.group(name)?;
                    with_date(
                        json!({
                            "name": g.name,
                            "description": g.description,
                            "projectName": g.project_name,
                            "homeMashup": g.home_mashup,
                            "tags": tags_value(&g.tags),
                        }),
                        g.last_modified_date,
                    )
                }
            }))
        })
    }

    /// A model tag vocabulary: its name and whether new terms may be added on use.
    pub(crate) fn vocabulary(&self, name: &str) -> Result<Reply, Fault> {
        self.read(|s| match s.vocabulary(name) {
            Some(v) => Ok(Reply::Json(json!({
                "name": v.name,
                "description": "",
                "isDynamic": v.dynamic,
            }))),
            None => Err(Fault::not_found(format!(
                "Vocabulary [{name}] does not exist"
            ))),
        })
    }

    pub(crate) fn delete_entity(&self, kind: Kind, name: &str) -> Result<Reply, Fault> {
        match kind {
            Kind::User => {
                let key = self.commit(|s| s.delete_user(name))?;
                self.lock_sessions().end_user(&key);
            }
            Kind::Group => self.commit(|s| s.delete_group(name))?,
        }
        Ok(Reply::Nothing)
    }

    pub(crate) fn invoke(
        &self,
        caller: &Caller,
        target: &Target,
        service: &str,
        values: &Map<String, Value>,
    ) -> Result<Reply, Fault> {
        let params = Params { service, values };
        let (outcome, on) = match target {
            Target::EntityServices => (self.entity_services(service, &params), "EntityServices"),
            Target::CurrentSessionInfo => (
                self.session_info(caller, service, &params),
                "CurrentSessionInfo",
            ),
            Target::Entity(Kind::User, name) => {
                (self.user_service(name, service, &params), name.as_str())
            }
            Target::Entity(Kind::Group, name) => {
                (self.group_service(name, service, &params), name.as_str())
            }
            Target::ThingShape(name) => (
                self.thing_shape_service(name, service, &params),
                name.as_str(),
            ),
        };
        // The real platform keeps the cause for its ApplicationLog and tells the caller
        // nothing; so does this one (the cause goes to this process's log instead).
        outcome.map_err(|fault| {
            if fault.routing {
                return fault;
            }
            tracing::info!(service, entity = on, status = fault.status.as_u16(),
                cause = %fault.message, "development platform: service call failed");
            Fault::unable_to_invoke(service, on)
        })
    }

    fn entity_services(&self, service: &str, p: &Params) -> Result<Reply, Fault> {
        match service {
            "GetEntityList" => self.entity_list(p),
            "CreateUser" => {
                let mut new = NewUser::named(&p.required("name")?);
                new.description = p.text("description")?;
                new.project_name = p.text("projectName")?;
                new.tags = p.tags("tags")?;
                let password = p.optional("password")?;
                self.check_optional_password(password.as_deref())?;
                new.password = optional_hash(self, password)?;
                self.commit(|s| s.create_user(new))?;
                Ok(Reply::Nothing)
            }
            "CreateUserWithOptions" => {
                let rows = p.rows("userOptions")?;
                let row = rows.first().ok_or_else(|| {
                    Fault::bad_request("Parameter [userOptions] must hold one row")
                })?;
                let name = cell(row, "userName")?
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| p.missing("userOptions.userName"))?;
                let mut new = NewUser::named(&name);
                new.description = cell(row, "description")?.unwrap_or_default();
                new.tags = parse_tags(&cell(row, "tags")?.unwrap_or_default())?;
                new.home_mashup = cell(row, "homeMashupName")?.unwrap_or_default();
                new.mobile_mashup = cell(row, "mobileMashupName")?.unwrap_or_default();
                new.language = cell(row, "language")?.unwrap_or_default();
                if let Some(groups) = row.get("groups").filter(|v| !v.is_null()) {
                    for group in infotable_rows(groups, "userOptions.groups")? {
                        if let Some(g) = cell(group, "name")?.filter(|g| !g.is_empty()) {
                            new.groups.push(g);
                        }
                    }
                }
                let password = cell(row, "password")?;
                self.check_optional_password(password.as_deref())?;
                new.password = optional_hash(self, password)?;
                self.commit(|s| s.create_user(new))?;
                Ok(Reply::Nothing)
            }
            "DeleteUser" => self.delete_entity(Kind::User, &p.required("name")?),
            "CreateGroup" => {
                let new = NewGroup {
                    name: p.required("name")?,
                    description: p.text("description")?,
                    // 8.x's CreateGroup has no projectName parameter (it arrived in 9.1).
                    project_name: match self.flavor {
                        super::Flavor::V8 => String::new(),
                        super::Flavor::V9 => p.text("projectName")?,
                    },
                    tags: p.tags("tags")?,
                };
                self.commit(|s| s.create_group(new))?;
                Ok(Reply::Nothing)
            }
            "DeleteGroup" => self.delete_entity(Kind::Group, &p.required("name")?),
            _ => Err(unknown_service(service, "Resources/EntityServices")),
        }
    }

    fn entity_list(&self, p: &Params) -> Result<Reply, Fault> {
        let listed = match p.required("type")?.as_str() {
            "User" => Listed::Principal(Kind::User),
            "Group" => Listed::Principal(Kind::Group),
            "Project" => Listed::Model(EntityKind::Project),
            "Mashup" => Listed::Model(EntityKind::Mashup),
            other => {
                return Err(Fault::bad_request(format!(
                    "Entity type [{other}] is not available on the development platform (User, Group, Project or Mashup)"
                )))
            }
        };
        let max = p.max_items()?;
        let mask = p.text("nameMask")?;
        let wanted = p.tags("tags")?;
        let keep = |name: &str, tags: &[Tag]| {
            (mask.is_empty() || mask_matches(&mask, name))
                && wanted.iter().all(|t| tags.contains(t))
        };
        let row = |name: &str, description: &str, system: bool, home: &str, tags: &[Tag]| {
            json!({
                "name": name,
                "description": description,
                "isSystemObject": system,
                "homeMashup": home,
                "avatar": "",
                "tags": tags_value(tags),
            })
        };
        let rows: Vec<Value> = self.read(|s| match listed {
            Listed::Principal(Kind::User) => s
                .users()
                .filter(|u| keep(&u.name, &u.tags))
                .take(max)
                .map(|u| {
                    let system = is_system_object(Kind::User, &u.name);
                    row(&u.name, &u.description, system, &u.home_mashup, &u.tags)
                })
                .collect(),
            Listed::Principal(Kind::Group) => s
                .groups()
                .filter(|g| keep(&g.name, &g.tags))
                .take(max)
                .map(|g| {
                    let system = is_system_object(Kind::Group, &g.name);
                    row(&g.name, &g.description, system, &g.home_mashup, &g.tags)
                })
                .collect(),
            // Only the names matter to provisioning, so these carry no tags of their own.
            Listed::Model(kind) => s
                .model(kind)
                .filter(|e| keep(&e.name, &[]))
                .take(max)
                .map(|e| row(&e.name, &e.description, false, "", &[]))
                .collect(),
        });
        Ok(Reply::Json(table(
            &[
                ("name", "STRING"),
                ("description", "STRING"),
                ("isSystemObject", "BOOLEAN"),
                ("homeMashup", "MASHUPNAME"),
                ("avatar", "IMAGELINK"),
                ("tags", "TAGS"),
            ],
            rows,
        )))
    }

    fn session_info(&self, caller: &Caller, service: &str, p: &Params) -> Result<Reply, Fault> {
        match service {
            "GetCurrentUser" => {
                let name = self.read(|s| {
                    s.user_by_key(&caller.key)
                        .map(|u| u.name.clone())
                        .unwrap_or_else(|| caller.name.clone())
                });
                Ok(result("USERNAME", json!(name)))
            }
            "GetActiveUsers" => {
                let max = p.max_items()?;
                let active = self.lock_sessions().active();
                let rows = self.read(|s| {
                    s.users()
                        .filter_map(|u| active.get(&fold(&u.name)).map(|ms| (u, *ms)))
                        .take(max)
                        .map(|(u, ms)| {
                            json!({
                                "name": u.name,
                                "description": u.description,
                                "isConnected": true,
                                "lastConnection": ms,
                            })
                        })
                        .collect()
                });
                Ok(Reply::Json(table(
                    &[
                        ("name", "USERNAME"),
                        ("description", "STRING"),
                        ("isConnected", "BOOLEAN"),
                        ("lastConnection", "DATETIME"),
                    ],
                    rows,
                )))
            }
            "TerminateUserSessions" => {
                let name = p.required("userName")?;
                let key = self.read(|s| s.user(&name).map(|u| fold(&u.name)))?;
                self.lock_sessions().end_user(&key);
                Ok(Reply::Nothing)
            }
            _ => Err(unknown_service(service, "Resources/CurrentSessionInfo")),
        }
    }

    fn user_service(&self, name: &str, service: &str, p: &Params) -> Result<Reply, Fault> {
        self.read(|s| s.user(name).map(|_| ()))?;
        let set = |f: &dyn Fn(&mut model::User)| -> Result<Reply, Fault> {
            self.commit(|s| {
                f(s.user_mut(name)?);
                Ok(())
            })?;
            Ok(Reply::Nothing)
        };
        let get = |f: &dyn Fn(&model::User) -> Value| self.read(|s| s.user(name).map(f));
        match service {
            "EnableUser" => set(&|u| u.enabled = true),
            // ThingWorx: "When using the DisableUser service, current sessions are not
            // interrupted" (platform-contract.md [D]); ending them takes TerminateUserSessions.
            "DisableUser" => set(&|u| u.enabled = false),
            "IsEnabled" => Ok(result("BOOLEAN", get(&|u| json!(u.enabled))?)),
            "SetDescription" => {
                let v = p.text("description")?;
                set(&|u| u.description = v.as_str().into())
            }
            "SetTags" => {
                let tags = p.tags("tags")?;
                self.commit(|s| {
                    s.admit_tags(&tags)?;
                    s.user_mut(name)?.tags = tags.into();
                    Ok(())
                })?;
                Ok(Reply::Nothing)
            }
            "GetTags" => {
                let tags = self.read(|s| s.user(name).map(|u| u.tags.clone()))?;
                Ok(tag_rows(&tags))
            }
            "SetProjectName" => {
                let v = p.text("projectName")?;
                set(&|u| u.project_name = v.as_str().into())
            }
            "GetProjectName" => Ok(result("PROJECTNAME", get(&|u| json!(u.project_name))?)),
            "SetHomeMashup" => {
                let v = p.text("name")?;
                set(&|u| u.home_mashup = v.as_str().into())
            }
            "GetHomeMashup" => Ok(result("MASHUPNAME", get(&|u| json!(u.home_mashup))?)),
            "SetMobileMashup" => {
                let v = p.text("name")?;
                set(&|u| u.mobile_mashup = v.as_str().into())
            }
            "GetMobileMashup" => Ok(result("MASHUPNAME", get(&|u| json!(u.mobile_mashup))?)),
            "AssignNewPassword" => {
                let password = p.required("newPassword")?;
                let confirm = p.required("newPasswordConfirm")?;
                if password != confirm {
                    return Err(Fault::bad_request(
                        "The new password and its confirmation do not match",
                    ));
                }
                self.check_password(&password)?;
                let hashed = self.hash_password(&password)?;
                set(&|u| u.password = Some(hashed.clone()))
            }
            "GetGroups" => self.read(|s| {
                let groups = s.groups_containing(Kind::User, name);
                Ok(summaries(
                    groups
                        .iter()
                        .map(|g| (g.name.as_str(), g.description.as_str())),
                ))
            }),
            // Live-verified on 9.5–10.2 ([B]): "no platform service returns" a user's
            // extension values but the UserExtensions configuration table; GetPropertyValues
            // answers without them. The other reading of the evidence (they are properties,
            // [C][P][Q]) is modelled by `model_property_value_reads`.
            "GetPropertyValues" => {
                let values = if self.property_value_reads() {
                    self.read(|s| s.extensions(name))?
                } else {
                    Vec::new()
                };
                let fields: Vec<(&str, &str)> =
                    values.iter().map(|(k, _)| (k.as_str(), "STRING")).collect();
                let row: Map<String, Value> =
                    values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                Ok(Reply::Json(table(&fields, vec![Value::Object(row)])))
            }
            "GetConfigurationTable" => {
                let wanted = p.required("tableName")?;
                if wanted != "UserExtensions" || self.property_value_reads() {
                    return Err(Fault::bad_request(format!(
                        "No configuration table [{wanted}] is readable here"
                    )));
                }
                let rows = self
                    .read(|s| s.extensions(name))?
                    .into_iter()
                    .map(|(k, v)| json!({"name": k, "value": v}))
                    .collect();
                Ok(Reply::Json(table(
                    &[("name", "STRING"), ("value", "STRING")],
                    rows,
                )))
            }
            "SetPropertyValues" => {
                let rows = p.rows("values")?;
                let mut values = Vec::new();
                if let Some(row) = rows.first() {
                    for field in row.keys() {
                        values.push((field.clone(), cell(row, field)?.unwrap_or_default()));
                    }
                }
                self.commit(|s| s.set_extensions(name, values))?;
                Ok(Reply::Nothing)
            }
            _ => Err(unknown_service(service, &format!("Users/{name}"))),
        }
    }

    fn group_service(&self, name: &str, service: &str, p: &Params) -> Result<Reply, Fault> {
        self.read(|s| s.group(name).map(|_| ()))?;
        let set = |f: &dyn Fn(&mut model::Group)| -> Result<Reply, Fault> {
            self.commit(|s| {
                f(s.group_mut(name)?);
                Ok(())
            })?;
            Ok(Reply::Nothing)
        };
        let get = |f: &dyn Fn(&model::Group) -> Value| self.read(|s| s.group(name).map(f));
        let member = || -> Result<(String, Kind), Fault> {
            let member = p.required("member")?;
            let kind_text = p.required("type")?;
            let kind = Kind::parse(&kind_text).ok_or_else(|| {
                Fault::bad_request(format!(
                    "Invalid member type [{kind_text}]: expected User or Group"
                ))
            })?;
            Ok((member, kind))
        };
        match service {
            "GetGroupMembers" => self.read(|s| {
                let rows = s
                    .members(name)?
                    .into_iter()
                    .map(|(n, d, k)| json!({"name": n, "description": d, "type": k.as_str()}))
                    .collect();
                Ok(Reply::Json(table(
                    &[
                        ("name", "STRING"),
                        ("description", "STRING"),
                        ("type", "STRING"),
                    ],
                    rows,
                )))
            }),
            "AddMember" => {
                let (member, kind) = member()?;
                self.commit(|s| s.add_member(name, &member, kind))?;
                Ok(Reply::Nothing)
            }
            "DeleteMember" => {
                let (member, kind) = member()?;
                self.commit(|s| s.remove_member(name, &member, kind))?;
                Ok(Reply::Nothing)
            }
            "SetDescription" => {
                let v = p.text("description")?;
                set(&|g| g.description = v.clone())
            }
            "SetTags" => {
                let tags = p.tags("tags")?;
                self.commit(|s| {
                    s.admit_tags(&tags)?;
                    s.group_mut(name)?.tags = tags.into();
                    Ok(())
                })?;
                Ok(Reply::Nothing)
            }
            "GetTags" => {
                let tags = self.read(|s| s.group(name).map(|g| g.tags.clone()))?;
                Ok(tag_rows(&tags))
            }
            "SetProjectName" => {
                let v = p.text("projectName")?;
                set(&|g| g.project_name = v.clone())
            }
            "GetProjectName" => Ok(result("PROJECTNAME", get(&|g| json!(g.project_name))?)),
            "SetHomeMashup" => {
                let v = p.text("name")?;
                set(&|g| g.home_mashup = v.clone())
            }
            "GetHomeMashup" => Ok(result("MASHUPNAME", get(&|g| json!(g.home_mashup))?)),
            "GetGroups" => self.read(|s| {
                let groups = s.groups_containing(Kind::Group, name);
                Ok(summaries(
                    groups
                        .iter()
                        .map(|g| (g.name.as_str(), g.description.as_str())),
                ))
            }),
            _ => Err(unknown_service(service, &format!("Groups/{name}"))),
        }
    }
}

impl DevPlatform {
    /// The one thing shape provisioning asks about: `UserExtensions`, whose property definitions
    /// tell `scimgate check` which mapped properties exist, and to which an administrator adds
    /// properties (`AddPropertyDefinition {name, type}`, STRING only here).
    fn thing_shape_service(&self, name: &str, service: &str, p: &Params) -> Result<Reply, Fault> {
        if name != "UserExtensions" {
            return Err(Fault::not_found(format!(
                "Thing Shape [{name}] does not exist"
            )));
        }
        match service {
            "AddPropertyDefinition" => {
                let property = p.required("name")?;
                let base_type = p.text("type")?;
                if !(base_type.is_empty() || base_type == "STRING") {
                    return Err(Fault::bad_request("Only STRING properties are supported"));
                }
                self.commit(|s| s.add_extension_property(&property))?;
                Ok(Reply::Nothing)
            }
            "GetPropertyDefinitions" => {
                let rows = self
                    .read(|s| s.extension_properties())
                    .into_iter()
                    .map(|p| json!({"name": p, "description": "", "baseType": "STRING"}))
                    .collect();
                Ok(Reply::Json(table(
                    &[
                        ("name", "STRING"),
                        ("description", "STRING"),
                        ("baseType", "BASETYPENAME"),
                    ],
                    rows,
                )))
            }
            _ => Err(unknown_service(service, &format!("ThingShapes/{name}"))),
        }
    }
}

/// `lastModifiedDate` as JSON carries a DATETIME: epoch milliseconds. An entity saved before
/// the date was kept has none to give.
fn with_date(mut entity: Value, millis: i64) -> Value {
    if millis > 0 {
        entity["lastModifiedDate"] = json!(millis);
    }
    entity
}

fn tag_rows(tags: &[Tag]) -> Reply {
    let rows = tags
        .iter()
        .map(|t| json!({"vocabulary": t.vocabulary, "vocabularyTerm": t.term}))
        .collect();
    Reply::Json(table(
        &[("vocabulary", "STRING"), ("vocabularyTerm", "STRING")],
        rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_use_star_as_a_wildcard_and_ignore_case() {
        assert!(mask_matches("*", "anything"));
        assert!(mask_matches("j*", "JDoe"));
        assert!(!mask_matches("j*", "ajay"));
        assert!(mask_matches("*@corp.com", "jdoe@CORP.com"));
        assert!(mask_matches("a*b*c", "aXXbYYc"));
        assert!(!mask_matches("a*b*c", "aXXcYYb"));
        assert!(mask_matches("ab*b", "abb"));
        assert!(!mask_matches("ab*ba", "aba"));
        assert!(mask_matches("exact", "EXACT"));
        assert!(!mask_matches("exact", "exactly"));
    }

    #[test]
    fn tables_declare_their_fields_in_order() {
        let t = table(
            &[("b", "STRING"), ("a", "BOOLEAN")],
            vec![json!({"a": true, "b": "x"})],
        );
        assert_eq!(t["dataShape"]["fieldDefinitions"]["b"]["ordinal"], 0);
        assert_eq!(
            t["dataShape"]["fieldDefinitions"]["a"]["baseType"],
            "BOOLEAN"
        );
        assert_eq!(t["rows"][0]["a"], true);
    }
}
