//! The SCIM 1.1 wire codec: resources rendered in `urn:scim:schemas:core:1.0`, request bodies
//! (POST, PUT, partial-resource PATCH) turned into version-independent changes.

use super::error::ScimError;
use crate::config::Secret;
use crate::platform::MemberKind;
use crate::provisioning::{
    Change, GroupChange, GroupRecord, MemberRef, MembersChange, UserChange, UserRecord,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub const CORE: &str = "urn:scim:schemas:core:1.0";
pub const ENTERPRISE: &str = "urn:scim:schemas:extension:enterprise:1.0";

const NAME_PARTS: [&str; 6] = [
    "givenName",
    "middleName",
    "familyName",
    "formatted",
    "honorificPrefix",
    "honorificSuffix",
];
const SIMPLE: [&str; 8] = crate::builtin::SIMPLE_USER_ATTRIBUTES;
const EMAIL_TYPES: [&str; 3] = ["work", "home", "other"];
const PHONE_TYPES: [&str; 6] = ["work", "home", "mobile", "fax", "pager", "other"];
const ADDRESS_PARTS: [&str; 6] = [
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
    "formatted",
];
const ENTERPRISE_PARTS: [&str; 5] = [
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

/// Whether a request body is a full resource or a 1.1 partial-resource PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    /// PUT: attributes present replace, attributes absent stay as they are.
    Replace,
    Patch,
    /// The body is the whole resource: attributes absent are cleared (a 2.0 PATCH result).
    Full,
}

/// `meta` of a resource. `created` is never there: the platform keeps no creation date, and a
/// made-up one would mislead a client that reasons about it.
fn meta(location: &str, last_modified: Option<&str>) -> Value {
    let mut meta = json!({"location": location});
    if let Some(t) = last_modified {
        meta["lastModified"] = json!(t);
    }
    meta
}

pub fn render_user(user: &UserRecord, location: &str) -> Value {
    let a = &user.attributes;
    let mut out = Map::new();
    let mut schemas = vec![json!(CORE)];
    out.insert("id".into(), json!(user.id));
    if let Some(x) = &user.external_id {
        out.insert("externalId".into(), json!(x));
    }
    out.insert("userName".into(), json!(user.user_name));
    let mut name = Map::new();
    for part in NAME_PARTS {
        if let Some(v) = a.get(&format!("name.{part}")) {
            name.insert(part.into(), json!(v));
        }
    }
    if !name.is_empty() {
        out.insert("name".into(), Value::Object(name));
    }
    for attr in SIMPLE {
        if let Some(v) = a.get(attr) {
            out.insert(attr.into(), json!(v));
        }
    }
    out.insert("active".into(), json!(user.active));

    let mut emails = Vec::new();
    for t in EMAIL_TYPES {
        if let Some(v) = a.get(&format!("emails.{t}")) {
            // Several home (or other) addresses share one property, comma-separated.
            for value in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let mut e = json!({"value": value, "type": t});
                if t == "work" {
                    e["primary"] = json!(true);
                }
                emails.push(e);
            }
        }
    }
    if !emails.is_empty() {
        out.insert("emails".into(), Value::Array(emails));
    }
    let phones: Vec<Value> = PHONE_TYPES
        .iter()
        .filter_map(|t| {
            a.get(&format!("phoneNumbers.{t}"))
                .map(|v| json!({"value": v, "type": t}))
        })
        .collect();
    if !phones.is_empty() {
        out.insert("phoneNumbers".into(), Value::Array(phones));
    }
    let mut address = Map::new();
    for part in ADDRESS_PARTS {
        if let Some(v) = a.get(&format!("addresses.work.{part}")) {
            address.insert(part.into(), json!(v));
        }
    }
    if !address.is_empty() {
        address.insert("type".into(), json!("work"));
        out.insert("addresses".into(), json!([Value::Object(address)]));
    }
    if !user.groups.is_empty() {
        let groups: Vec<Value> = user
            .groups
            .iter()
            .map(|g| json!({"value": g.id, "display": g.display, "type": "direct"}))
            .collect();
        out.insert("groups".into(), Value::Array(groups));
    }
    let mut enterprise = Map::new();
    for part in ENTERPRISE_PARTS {
        if let Some(v) = a.get(&format!("enterprise.{part}")) {
            enterprise.insert(part.into(), json!(v));
        }
    }
    if !enterprise.is_empty() {
        schemas.push(json!(ENTERPRISE));
        out.insert(ENTERPRISE.into(), Value::Object(enterprise));
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("meta".into(), meta(location, user.last_modified.as_deref()));
    Value::Object(out)
}

pub fn render_group(group: &GroupRecord, location: &str) -> Value {
    let members: Vec<Value> = group
        .members
        .iter()
        .map(|m| {
            let mut v = json!({"value": m.id});
            if let Some(d) = &m.display {
                v["display"] = json!(d);
            }
            if let Some(k) = m.kind {
                v["type"] = json!(k.as_str());
            }
            v
        })
        .collect();
    let mut v = json!({
        "schemas": [CORE],
        "id": group.id,
        "displayName": group.display_name,
        "members": members,
        "meta": meta(location, group.last_modified.as_deref()),
    });
    if let Some(x) = &group.external_id {
        v["externalId"] = json!(x);
    }
    v
}

/// Looks a key up ignoring case: attribute names are case-insensitive in SCIM.
fn get<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn string(value: &Value, attr: &str) -> Result<Change<String>, ScimError> {
    match value {
        Value::Null => Ok(Change::Clear),
        Value::String(s) if s.is_empty() => Ok(Change::Clear),
        Value::String(s) => Ok(Change::Set(s.clone())),
        Value::Number(n) => Ok(Change::Set(n.to_string())),
        Value::Bool(b) => Ok(Change::Set(b.to_string())),
        _ => Err(ScimError::bad_request(
            "invalidValue",
            format!("{attr} must be a string"),
        )),
    }
}

/// Clients send booleans as JSON booleans or as "True"/"false" strings.
pub fn boolean(value: &Value, attr: &str) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::bad_request(
            "invalidValue",
            format!("{attr} must be true or false"),
        )),
    }
}

/// Names listed in `meta.attributes`: attributes a 1.1 PATCH removes.
fn removals(body: &Map<String, Value>) -> Result<Vec<String>, ScimError> {
    let Some(meta) = get(body, "meta").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    match get(meta, "attributes") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ScimError::bad_request("invalidSyntax", "meta.attributes holds attribute names")
                })
            })
            .collect(),
        Some(_) => Err(ScimError::bad_request(
            "invalidSyntax",
            "meta.attributes must be a list of attribute names",
        )),
    }
}

fn object(body: &Value) -> Result<&Map<String, Value>, ScimError> {
    body.as_object()
        .ok_or_else(|| ScimError::bad_request("invalidSyntax", "the body must be a JSON object"))
}

/// Slot of a multi-valued element: by its `type`, else the primary (or first untyped) one is
/// the work slot; anything else is "other".
fn typed_slot(prefix: &str, element: &Map<String, Value>, allowed: &[&str], first: bool) -> String {
    let t = get(element, "type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let primary = get(element, "primary")
        .map(|p| boolean(p, "primary").unwrap_or(false))
        .unwrap_or(false);
    let t = match t {
        Some(t) if allowed.contains(&t.as_str()) => t,
        Some(_) => "other".to_string(),
        None if primary || first => "work".to_string(),
        None => "other".to_string(),
    };
    format!("{prefix}.{t}")
}

pub fn parse_user(body: &Value, mode: Mode) -> Result<UserChange, ScimError> {
    let body = object(body)?;
    let mut change = UserChange::default();
    if mode == Mode::Patch {
        for attr in removals(body)? {
            clear_user_attribute(&mut change, &attr);
        }
    }
    if mode == Mode::Full {
        for attr in ["externalId", "name", "emails", "phoneNumbers", "addresses"]
            .into_iter()
            .chain(SIMPLE)
        {
            clear_user_attribute(&mut change, attr);
        }
        for part in ENTERPRISE_PARTS {
            change
                .attributes
                .insert(format!("enterprise.{part}"), Change::Clear);
        }
    }
    if let Some(v) = get(body, "userName") {
        match v {
            Value::String(s) => change.user_name = Some(s.clone()),
            _ => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "userName must be a string",
                ))
            }
        }
    }
    if let Some(v) = get(body, "externalId") {
        change.external_id = string(v, "externalId")?;
    }
    if let Some(v) = get(body, "active") {
        change.active = Some(boolean(v, "active")?);
    }
    if let Some(v) = get(body, "password") {
        match v {
            Value::String(s) if !s.is_empty() => change.password = Some(Secret::new(s.clone())),
            Value::Null => {}
            _ => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "password must be a string",
                ))
            }
        }
    }
    if let Some(v) = get(body, "name") {
        match v {
            Value::Object(name) => {
                for part in NAME_PARTS {
                    if let Some(p) = get(name, part) {
                        change
                            .attributes
                            .insert(format!("name.{part}"), string(p, part)?);
                    }
                }
            }
            Value::Null => clear_user_attribute(&mut change, "name"),
            _ => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "name must be an object",
                ))
            }
        }
    }
    for attr in SIMPLE {
        if let Some(v) = get(body, attr) {
            change.attributes.insert(attr.into(), string(v, attr)?);
        }
    }
    multi_valued(body, "emails", &EMAIL_TYPES, mode, &mut change)?;
    multi_valued(body, "phoneNumbers", &PHONE_TYPES, mode, &mut change)?;
    if let Some(v) = get(body, "addresses") {
        let items = v.as_array().cloned().unwrap_or_default();
        if mode != Mode::Patch {
            clear_user_attribute(&mut change, "addresses");
        }
        for (i, item) in items.iter().enumerate() {
            let Some(item) = item.as_object() else {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "addresses hold objects",
                ));
            };
            if typed_slot("addresses", item, &["work"], i == 0) != "addresses.work" {
                continue;
            }
            let delete = is_delete(item);
            for part in ADDRESS_PARTS {
                if let Some(p) = get(item, part) {
                    let c = match (delete, string(p, part)?) {
                        (true, Change::Set(v)) => Change::ClearIf(v),
                        (_, c) => c,
                    };
                    change
                        .attributes
                        .insert(format!("addresses.work.{part}"), c);
                }
            }
        }
    }
    let enterprise = body
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(ENTERPRISE))
        .map(|(_, v)| v);
    if let Some(Value::Object(ent)) = enterprise {
        for part in ENTERPRISE_PARTS {
            if let Some(p) = get(ent, part) {
                change
                    .attributes
                    .insert(format!("enterprise.{part}"), string(p, part)?);
            }
        }
    }
    Ok(change)
}

fn is_delete(item: &Map<String, Value>) -> bool {
    get(item, "operation")
        .and_then(Value::as_str)
        .is_some_and(|o| o.eq_ignore_ascii_case("delete"))
}

/// Emails and phone numbers: one slot per `type`. A full resource replaces the whole attribute;
/// a PATCH adds, replaces per type, and removes elements marked `"operation":"delete"`.
fn multi_valued(
    body: &Map<String, Value>,
    attr: &str,
    types: &[&str],
    mode: Mode,
    change: &mut UserChange,
) -> Result<(), ScimError> {
    let Some(v) = get(body, attr) else {
        return Ok(());
    };
    let items = match v {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        _ => {
            return Err(ScimError::bad_request(
                "invalidValue",
                format!("{attr} must be a list"),
            ))
        }
    };
    if mode != Mode::Patch {
        clear_user_attribute(change, attr);
    }
    // Home and other emails each keep every address, comma-separated in one property (the
    // platform's `altEmailAddresses` is such a list); other types keep the first value.
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut typed_first = true;
    for item in &items {
        let Some(item) = item.as_object() else {
            return Err(ScimError::bad_request(
                "invalidValue",
                format!("{attr} hold objects"),
            ));
        };
        let Some(value) = get(item, "value").and_then(Value::as_str).map(str::trim) else {
            continue;
        };
        let slot = typed_slot(attr, item, types, typed_first);
        typed_first = false;
        if is_delete(item) {
            change
                .attributes
                .insert(slot, Change::ClearIf(value.to_string()));
            continue;
        }
        if attr == "emails" && (slot.ends_with(".other") || slot.ends_with(".home")) {
            let list = lists.entry(slot).or_default();
            if !list.iter().any(|o| o.eq_ignore_ascii_case(value)) {
                list.push(value.to_string());
            }
            continue;
        }
        // Ping fills two slots with one address, both primary: the first value per type wins.
        if matches!(change.attributes.get(&slot), Some(Change::Set(_))) {
            continue;
        }
        change
            .attributes
            .insert(slot, Change::Set(value.to_string()));
    }
    for (slot, list) in lists {
        change.attributes.insert(slot, Change::Set(list.join(",")));
    }
    Ok(())
}

fn clear_user_attribute(change: &mut UserChange, attr: &str) {
    let lower = attr.to_ascii_lowercase();
    match lower.as_str() {
        "externalid" => change.external_id = Change::Clear,
        "name" => {
            for part in NAME_PARTS {
                change
                    .attributes
                    .insert(format!("name.{part}"), Change::Clear);
            }
        }
        "emails" => {
            for t in EMAIL_TYPES {
                change
                    .attributes
                    .insert(format!("emails.{t}"), Change::Clear);
            }
        }
        "phonenumbers" => {
            for t in PHONE_TYPES {
                change
                    .attributes
                    .insert(format!("phoneNumbers.{t}"), Change::Clear);
            }
        }
        "addresses" => {
            for part in ADDRESS_PARTS {
                change
                    .attributes
                    .insert(format!("addresses.work.{part}"), Change::Clear);
            }
        }
        _ => {
            if let Some(part) = lower.strip_prefix("name.") {
                if let Some(p) = NAME_PARTS.iter().find(|p| p.eq_ignore_ascii_case(part)) {
                    change.attributes.insert(format!("name.{p}"), Change::Clear);
                }
            } else if let Some(a) = SIMPLE.iter().find(|s| s.eq_ignore_ascii_case(attr)) {
                change.attributes.insert(a.to_string(), Change::Clear);
            }
        }
    }
}

pub fn parse_group(body: &Value, mode: Mode) -> Result<GroupChange, ScimError> {
    let body = object(body)?;
    let mut change = GroupChange::default();
    if let Some(v) = get(body, "displayName") {
        match v {
            Value::String(s) => change.display_name = Some(s.clone()),
            _ => {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "displayName must be a string",
                ))
            }
        }
    }
    if let Some(v) = get(body, "externalId") {
        change.external_id = string(v, "externalId")?;
    } else if mode == Mode::Patch
        && removals(body)?
            .iter()
            .any(|a| a.eq_ignore_ascii_case("externalId"))
    {
        change.external_id = Change::Clear;
    }
    let removes_all = mode == Mode::Patch
        && removals(body)?
            .iter()
            .any(|a| a.eq_ignore_ascii_case("members"));
    let members = match get(body, "members") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(items.clone()),
        Some(_) => {
            return Err(ScimError::bad_request(
                "invalidValue",
                "members must be a list",
            ))
        }
    };
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for item in members.iter().flatten() {
        let Some(item) = item.as_object() else {
            return Err(ScimError::bad_request(
                "invalidValue",
                "members hold objects",
            ));
        };
        let Some(value) = get(item, "value").and_then(Value::as_str) else {
            return Err(ScimError::bad_request(
                "invalidValue",
                "every member needs a value (the member's id)",
            ));
        };
        let kind = match get(item, "type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("user") => Some(MemberKind::User),
            Some(t) if t.eq_ignore_ascii_case("group") => Some(MemberKind::Group),
            _ => None,
        };
        let member = MemberRef {
            id: value.to_string(),
            display: get(item, "display")
                .and_then(Value::as_str)
                .map(str::to_string),
            kind,
        };
        if mode == Mode::Patch && is_delete(item) {
            remove.push(member);
        } else {
            add.push(member);
        }
    }
    change.members = match (mode, members.is_some(), removes_all) {
        // "Remove all, then these": a 1.1 PATCH that replaces the member list.
        (Mode::Patch, _, true) => MembersChange::Replace(add),
        (Mode::Patch, true, false) => MembersChange::Edit { add, remove },
        (Mode::Patch, false, false) => MembersChange::Keep,
        (_, true, _) => MembersChange::Replace(add),
        (_, false, _) => MembersChange::Keep,
    };
    Ok(change)
}

pub fn service_provider_config(
    documentation: &str,
    max_results: usize,
    schemes: &[crate::auth::Scheme],
) -> Value {
    // 1.1 names its URLs `...Url`; its examples carry `type` and `primary` as 2.0 does.
    let schemes: Vec<Value> = schemes
        .iter()
        .enumerate()
        .map(|(i, scheme)| {
            let (kind, name, description, spec) = super::discovery::describe(*scheme);
            json!({
                "type": kind,
                "name": name,
                "description": description,
                "specUrl": spec,
                "documentationUrl": documentation,
                "primary": i == 0,
            })
        })
        .collect();
    json!({
        "schemas": [CORE],
        "documentationUrl": documentation,
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": false},
        "xmlDataFormat": {"supported": false},
        "authenticationSchemes": schemes,
    })
}

fn attribute(name: &str, kind: &str, description: &str, read_only: bool, required: bool) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": false, "description": description,
        "schema": CORE, "readOnly": read_only, "required": required, "caseExact": false,
    })
}

fn sub_attributes(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| {
                json!({"name": n, "type": "string", "description": n, "readOnly": false,
                       "required": false, "caseExact": false})
            })
            .collect(),
    )
}

/// The 1.1 schemas, listing only what the gateway stores and reads back.
pub fn schemas() -> Vec<Value> {
    let mut name = attribute("name", "complex", "The user's name", false, false);
    name["subAttributes"] = sub_attributes(&NAME_PARTS);
    let multi = |n: &str, child: &str, subs: &[&str]| {
        let mut a = attribute(n, "complex", n, false, false);
        a["multiValued"] = json!(true);
        a["multiValuedAttributeChildName"] = json!(child);
        a["subAttributes"] = sub_attributes(subs);
        a
    };
    let mut user_attrs = vec![
        attribute(
            "id",
            "string",
            "Identifier derived from the platform name",
            true,
            false,
        ),
        attribute(
            "externalId",
            "string",
            "The identity provider's identifier",
            false,
            false,
        ),
        attribute("userName", "string", "The platform user name", false, true),
        name,
    ];
    user_attrs.extend(
        SIMPLE
            .iter()
            .map(|s| attribute(s, "string", s, false, false)),
    );
    user_attrs.push(attribute(
        "active",
        "boolean",
        "Whether the user may sign in",
        false,
        false,
    ));
    user_attrs.push(attribute("password", "string", "Write-only", false, false));
    user_attrs.push(multi("emails", "email", &["value", "type", "primary"]));
    user_attrs.push(multi("phoneNumbers", "phoneNumber", &["value", "type"]));
    let mut addresses = multi("addresses", "address", &ADDRESS_PARTS);
    if let Some(subs) = addresses["subAttributes"].as_array_mut() {
        subs.push(json!({"name": "type", "type": "string", "readOnly": false,
                         "required": false, "caseExact": false}));
    }
    user_attrs.push(addresses);
    let mut groups = multi("groups", "group", &["value", "display", "type"]);
    groups["readOnly"] = json!(true);
    user_attrs.push(groups);

    let mut members = multi("members", "member", &["value", "display", "type"]);
    members["description"] = json!("Users and groups in the group");
    vec![
        json!({"id": CORE, "name": "User", "description": "Platform user", "schema": CORE,
               "endpoint": "Users", "attributes": user_attrs}),
        json!({"id": CORE, "name": "Group", "description": "Platform group", "schema": CORE,
               "endpoint": "Groups", "attributes": [
                   attribute("id", "string", "Identifier derived from the platform name", true, false),
                   attribute("displayName", "string", "The group's name at the identity provider", false, true),
                   members]}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioning::GroupRef;

    fn user() -> UserRecord {
        let mut attributes = BTreeMap::new();
        attributes.insert("name.givenName".into(), "Barbara".into());
        attributes.insert("emails.work".into(), "bjensen@example.com".into());
        attributes.insert("emails.other".into(), "b@home.example,b2@x.example".into());
        attributes.insert("addresses.work.locality".into(), "Boston".into());
        UserRecord {
            id: "YmplbnNlbg".into(),
            user_name: "bjensen".into(),
            external_id: Some("00u1".into()),
            active: true,
            attributes,
            groups: vec![GroupRef {
                id: "g1".into(),
                display: "Engineering".into(),
            }],
            last_modified: Some("2024-03-05T10:11:12.345Z".into()),
        }
    }

    #[test]
    fn renders_the_core_shape() {
        let v = render_user(&user(), "https://gw/Users/YmplbnNlbg");
        assert_eq!(v["schemas"], json!([CORE]));
        assert_eq!(v["name"]["givenName"], "Barbara");
        assert_eq!(
            v["emails"][0],
            json!({"value": "bjensen@example.com", "type": "work", "primary": true})
        );
        assert_eq!(v["emails"].as_array().unwrap().len(), 3);
        assert_eq!(v["addresses"][0]["locality"], "Boston");
        assert_eq!(v["groups"][0]["display"], "Engineering");
        assert_eq!(v["meta"]["location"], "https://gw/Users/YmplbnNlbg");
        assert_eq!(v["meta"]["lastModified"], "2024-03-05T10:11:12.345Z");
        assert!(v["meta"].get("created").is_none());
        assert!(v.get("password").is_none());
    }

    #[test]
    fn rendered_users_parse_back_to_the_same_values() {
        let v = render_user(&user(), "x");
        let c = parse_user(&v, Mode::Replace).unwrap();
        assert_eq!(
            c.attributes["name.givenName"],
            Change::Set("Barbara".into())
        );
        assert_eq!(
            c.attributes["emails.work"],
            Change::Set("bjensen@example.com".into())
        );
        assert_eq!(
            c.attributes["emails.other"],
            Change::Set("b@home.example,b2@x.example".into())
        );
        assert_eq!(
            c.attributes["addresses.work.locality"],
            Change::Set("Boston".into())
        );
        assert!(!c.attributes.contains_key("phoneNumbers.work"));
    }

    #[test]
    fn put_without_an_attribute_keeps_it() {
        let c = parse_user(
            &json!({"userName": "bjensen", "title": "Boss"}),
            Mode::Replace,
        )
        .unwrap();
        assert!(!c.attributes.contains_key("emails.work"));
        assert!(!c.attributes.contains_key("name.givenName"));
        assert_eq!(c.attributes["title"], Change::Set("Boss".into()));
        assert_eq!(c.external_id, Change::Keep);
    }

    #[test]
    fn patch_removals_and_deletes() {
        let c = parse_user(
            &json!({"schemas": [CORE], "meta": {"attributes": ["title", "name.middleName"]},
                    "emails": [{"value": "old@x", "type": "work", "operation": "delete"}],
                    "active": "False"}),
            Mode::Patch,
        )
        .unwrap();
        assert_eq!(c.attributes["title"], Change::Clear);
        assert_eq!(c.attributes["name.middleName"], Change::Clear);
        assert_eq!(c.attributes["emails.work"], Change::ClearIf("old@x".into()));
        assert_eq!(c.active, Some(false));
        assert!(!c.attributes.contains_key("emails.home"));
    }

    #[test]
    fn home_emails_keep_every_address() {
        let c = parse_user(
            &json!({"emails": [{"value": "w@x", "type": "work"}, {"value": "h1@x", "type": "home"},
                               {"value": "h2@x", "type": "Home"}, {"value": "o@x", "type": "other"}]}),
            Mode::Create,
        )
        .unwrap();
        assert_eq!(c.attributes["emails.home"], Change::Set("h1@x,h2@x".into()));
        assert_eq!(c.attributes["emails.other"], Change::Set("o@x".into()));
        assert_eq!(c.attributes["emails.work"], Change::Set("w@x".into()));
    }

    #[test]
    fn duplicate_primary_emails_keep_the_first() {
        let c = parse_user(
            &json!({"emails": [{"value": "a@x", "primary": true}, {"value": "a@x", "primary": true}]}),
            Mode::Create,
        )
        .unwrap();
        assert_eq!(c.attributes["emails.work"], Change::Set("a@x".into()));
        assert_eq!(c.attributes.get("emails.other"), Some(&Change::Clear));
    }

    #[test]
    fn group_patches() {
        let add = parse_group(
            &json!({"members": [{"value": "u1", "display": "a"}]}),
            Mode::Patch,
        )
        .unwrap();
        assert!(
            matches!(add.members, MembersChange::Edit { ref add, ref remove } if add.len() == 1 && remove.is_empty())
        );
        let del = parse_group(
            &json!({"members": [{"value": "u2", "operation": "delete"}]}),
            Mode::Patch,
        )
        .unwrap();
        assert!(
            matches!(del.members, MembersChange::Edit { ref add, ref remove } if add.is_empty() && remove.len() == 1)
        );
        let clear =
            parse_group(&json!({"meta": {"attributes": ["members"]}}), Mode::Patch).unwrap();
        assert!(matches!(clear.members, MembersChange::Replace(ref m) if m.is_empty()));
        let rename = parse_group(&json!({"id": "x", "displayName": "New"}), Mode::Patch).unwrap();
        assert_eq!(rename.display_name.as_deref(), Some("New"));
        assert!(matches!(rename.members, MembersChange::Keep));
    }

    #[test]
    fn wrong_types_are_refused() {
        assert!(parse_user(&json!({"userName": 5}), Mode::Create).is_err());
        assert!(parse_user(&json!({"active": "maybe"}), Mode::Create).is_err());
        assert!(parse_user(&json!([1]), Mode::Create).is_err());
        assert!(parse_group(&json!({"members": [{"display": "no value"}]}), Mode::Create).is_err());
    }
}
