//! The SCIM 2.0 wire codec (RFC 7643/7644): resources in the 2.0 schemas with `meta.version`
//! ETags, and PatchOp — including Entra ID's dialect — turned into the same version-independent
//! changes the 1.1 codec produces. Resource bodies share the 1.1 attribute model; only the
//! envelope, the enterprise URN and PATCH differ.

use super::error::ScimError;
use super::filter::{self, Dialect, Filter};
use super::urn::{ENTERPRISE, GROUP, LIST, USER};
use super::v1;
use crate::platform::MemberKind;
use crate::provisioning::{
    Change, GroupChange, GroupRecord, MemberRef, MembersChange, UserChange, UserRecord,
};
use serde_json::{json, Map, Value};

/// A weak ETag over the resource without its `meta`.
pub fn etag(resource: &Value) -> String {
    // The resource without its `meta`, serialized straight into the digest: the same bytes as
    // printing a copy without `meta`, without building the copy or the text.
    struct WithoutMeta<'a>(&'a Value);
    impl serde::Serialize for WithoutMeta<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Object(o) => {
                    serializer.collect_map(o.iter().filter(|(k, _)| k.as_str() != "meta"))
                }
                other => other.serialize(serializer),
            }
        }
    }
    struct Digest(aws_lc_rs::digest::Context);
    impl std::io::Write for Digest {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut digest = Digest(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256));
    // Neither a JSON value nor this writer can fail.
    let _ = serde_json::to_writer(&mut digest, &WithoutMeta(resource));
    let digest = digest.0.finish();
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("W/\"{hex}\"")
}

/// Sets `meta`; `created` is left out because the platform keeps no creation date.
fn finish(mut v: Value, resource_type: &str, location: &str, last_modified: Option<&str>) -> Value {
    let version = etag(&v);
    v["meta"] = json!({"resourceType": resource_type, "location": location, "version": version});
    if let Some(t) = last_modified {
        v["meta"]["lastModified"] = json!(t);
    }
    v
}

pub fn render_user(user: &UserRecord, location: &str) -> Value {
    let mut v = v1::render_user(user, location);
    let mut schemas = vec![json!(USER)];
    if let Some(o) = v.as_object_mut() {
        if let Some(ent) = o.remove(v1::ENTERPRISE) {
            schemas.push(json!(ENTERPRISE));
            o.insert(ENTERPRISE.into(), ent);
        }
        o.insert("schemas".into(), Value::Array(schemas));
        o.remove("meta");
        // One value per type is stored, not a primary flag, so 2.0 neither advertises nor
        // returns `primary`: a client round-tripping its values gets back what it sent.
        for attr in ["emails", "phoneNumbers", "addresses"] {
            if let Some(Value::Array(items)) = o.get_mut(attr) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    item.remove("primary");
                }
            }
        }
    }
    finish(v, "User", location, user.last_modified.as_deref())
}

pub fn render_group(group: &GroupRecord, location: &str) -> Value {
    let mut v = v1::render_group(group, location);
    let base = location
        .rsplit_once("/Groups/")
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("schemas".into(), json!([GROUP]));
        o.remove("meta");
        if let Some(Value::Array(members)) = o.get_mut("members") {
            for m in members.iter_mut().filter_map(Value::as_object_mut) {
                let endpoint = match m.get("type").and_then(Value::as_str) {
                    Some("Group") => "Groups",
                    _ => "Users",
                };
                if let Some(id) = m.get("value").and_then(Value::as_str).map(str::to_string) {
                    m.insert("$ref".into(), json!(format!("{base}/{endpoint}/{id}")));
                }
            }
        }
    }
    finish(v, "Group", location, group.last_modified.as_deref())
}

/// The 1.1 codec reads the enterprise extension under its 1.0 URN.
fn as_v1(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        let key = o
            .keys()
            .find(|k| k.eq_ignore_ascii_case(ENTERPRISE))
            .cloned();
        if let Some(k) = key {
            if let Some(ent) = o.remove(&k) {
                o.insert(v1::ENTERPRISE.into(), ent);
            }
        }
    }
    b
}

pub fn parse_user(body: &Value, mode: v1::Mode) -> Result<UserChange, ScimError> {
    v1::parse_user(&as_v1(body), mode)
}

pub fn parse_group(body: &Value, mode: v1::Mode) -> Result<GroupChange, ScimError> {
    v1::parse_group(body, mode)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Replace,
    Remove,
}

struct Operation {
    kind: OpKind,
    path: Option<String>,
    value: Option<Value>,
}

fn get<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn operations(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let body = body.as_object().ok_or_else(|| {
        ScimError::bad_request("invalidSyntax", "the body must be a PatchOp object")
    })?;
    let ops = match get(body, "Operations") {
        Some(Value::Array(ops)) => ops,
        _ => {
            return Err(ScimError::bad_request(
                "invalidSyntax",
                "a PatchOp needs an Operations list",
            ))
        }
    };
    ops.iter()
        .map(|op| {
            let op = op.as_object().ok_or_else(|| {
                ScimError::bad_request("invalidSyntax", "every operation is an object")
            })?;
            let kind = match get(op, "op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
            {
                Some(k) if k == "add" => OpKind::Add,
                Some(k) if k == "replace" => OpKind::Replace,
                Some(k) if k == "remove" => OpKind::Remove,
                other => {
                    return Err(ScimError::bad_request(
                        "invalidSyntax",
                        format!("op {other:?} is not add, replace or remove"),
                    ))
                }
            };
            let path = match get(op, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.trim().to_string()),
                Some(_) => {
                    return Err(ScimError::bad_request(
                        "invalidPath",
                        "path must be a string",
                    ))
                }
            };
            let value = get(op, "value").cloned();
            if kind == OpKind::Remove && path.is_none() {
                return Err(ScimError::bad_request("noTarget", "remove needs a path"));
            }
            if kind != OpKind::Remove && value.is_none() {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    "add and replace need a value",
                ));
            }
            Ok(Operation { kind, path, value })
        })
        .collect()
}

/// A parsed PATCH path: which object (top level or the enterprise extension), the attribute,
/// an optional value filter and an optional sub-attribute.
struct Target {
    enterprise: bool,
    attr: String,
    filter: Option<Filter>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Result<Target, ScimError> {
    let invalid = || ScimError::bad_request("invalidPath", format!("{path:?} is not a valid path"));
    let lower = path.to_ascii_lowercase();
    let (enterprise, rest) = if lower.starts_with(&ENTERPRISE.to_ascii_lowercase()) {
        (true, path[ENTERPRISE.len()..].trim_start_matches(':'))
    } else if lower.starts_with(&USER.to_ascii_lowercase()) {
        (false, path[USER.len()..].trim_start_matches(':'))
    } else if lower.starts_with(&GROUP.to_ascii_lowercase()) {
        (false, path[GROUP.len()..].trim_start_matches(':'))
    } else {
        (false, path)
    };
    if rest.is_empty() {
        return Err(invalid());
    }
    let (attr, filter, sub) = match rest.find('[') {
        Some(open) => {
            let close = rest.rfind(']').filter(|c| *c > open).ok_or_else(invalid)?;
            let inner = &rest[open + 1..close];
            let filter = filter::parse(inner, Dialect::V2)
                .map_err(|e| ScimError::bad_request("invalidPath", format!("{path:?}: {e}")))?;
            let after = &rest[close + 1..];
            let sub = match after.strip_prefix('.') {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                None if after.is_empty() => None,
                _ => return Err(invalid()),
            };
            (rest[..open].to_string(), Some(filter), sub)
        }
        None => match rest.split_once('.') {
            Some((a, s)) => (a.to_string(), None, Some(s.to_string())),
            None => (rest.to_string(), None, None),
        },
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
    };
    if !valid(&attr) || sub.as_deref().is_some_and(|s| !valid(s)) {
        return Err(invalid());
    }
    Ok(Target {
        enterprise,
        attr,
        filter,
        sub,
    })
}

fn key_in(o: &Map<String, Value>, name: &str) -> String {
    o.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// The equalities of a simple filter (`type eq "work"`), used to create the element an Entra
/// `add` on `emails[type eq "work"].value` expects when none exists.
fn equalities(f: &Filter, out: &mut Map<String, Value>) -> bool {
    match f {
        Filter::Compare(p, filter::CompareOp::Eq, v) if p.sub_attr.is_none() => {
            out.insert(p.attr.clone(), v.clone());
            true
        }
        Filter::And(a, b) => equalities(a, out) && equalities(b, out),
        _ => false,
    }
}

fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn merge(into: &mut Value, from: &Value) {
    match (into.as_object_mut(), from.as_object()) {
        (Some(target), Some(source)) => {
            for (k, v) in source {
                let key = key_in(target, k);
                target.insert(key, v.clone());
            }
        }
        _ => *into = from.clone(),
    }
}

fn case_exact(_: &filter::AttrPath) -> bool {
    false
}

/// Applies one operation to a resource document.
fn apply(
    doc: &mut Map<String, Value>,
    kind: OpKind,
    path: &str,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    // The whole extension: its attributes one by one.
    if path.trim_end_matches(':').eq_ignore_ascii_case(ENTERPRISE) {
        return match (kind, value) {
            (OpKind::Remove, _) => {
                let key = key_in(doc, ENTERPRISE);
                doc.remove(&key);
                Ok(())
            }
            (_, Some(Value::Object(values))) => {
                for (k, v) in values {
                    apply(doc, kind, &format!("{ENTERPRISE}:{k}"), Some(v))?;
                }
                Ok(())
            }
            _ => Err(ScimError::bad_request(
                "invalidValue",
                "the enterprise extension takes an object",
            )),
        };
    }
    let t = parse_path(path)?;
    let container: &mut Map<String, Value> = if t.enterprise {
        let key = key_in(doc, ENTERPRISE);
        let entry = doc.entry(key).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        match entry.as_object_mut() {
            Some(o) => o,
            None => return Err(ScimError::bad_request("invalidPath", "bad extension")),
        }
    } else {
        doc
    };
    let key = key_in(container, &t.attr);
    match (&t.filter, &t.sub) {
        (None, None) => match kind {
            OpKind::Remove => {
                match (value, container.get_mut(&key)) {
                    // Remove listed values only (Entra's members/emails form).
                    (Some(Value::Array(values)), Some(Value::Array(items))) => {
                        items.retain(|i| !values.iter().any(|v| same_element(i, v)));
                    }
                    _ => {
                        container.remove(&key);
                    }
                }
            }
            OpKind::Add => {
                let value = value.cloned().unwrap_or(Value::Null);
                match (container.get_mut(&key), &value) {
                    (Some(Value::Array(items)), Value::Array(new)) => {
                        for n in new {
                            if !items.iter().any(|i| same_element(i, n)) {
                                items.push(n.clone());
                            }
                        }
                    }
                    (Some(Value::Array(items)), single @ Value::Object(_)) => {
                        if !items.iter().any(|i| same_element(i, single)) {
                            items.push(single.clone());
                        }
                    }
                    (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                        merge(existing, &value)
                    }
                    _ => {
                        container.insert(key, value);
                    }
                }
            }
            OpKind::Replace => {
                let value = value.cloned().unwrap_or(Value::Null);
                match (container.get_mut(&key), &value) {
                    (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                        merge(existing, &value)
                    }
                    _ => {
                        container.insert(key, value);
                    }
                }
            }
        },
        (None, Some(sub)) => {
            let entry = container.entry(key).or_insert_with(|| json!({}));
            let apply_sub = |o: &mut Map<String, Value>| {
                let sk = key_in(o, sub);
                match kind {
                    OpKind::Remove => {
                        o.remove(&sk);
                    }
                    _ => {
                        o.insert(sk, value.cloned().unwrap_or(Value::Null));
                    }
                }
            };
            match entry {
                Value::Object(o) => apply_sub(o),
                Value::Array(items) => items
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(apply_sub),
                other => {
                    let mut o = Map::new();
                    apply_sub(&mut o);
                    *other = Value::Object(o);
                }
            }
        }
        (Some(f), sub) => {
            let entry = container.entry(key).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
            let Some(items) = entry.as_array_mut() else {
                return Err(ScimError::bad_request("invalidPath", "not multi-valued"));
            };
            let matching: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| filter::matches(f, i, &case_exact))
                .map(|(n, _)| n)
                .collect();
            match kind {
                OpKind::Remove => {
                    if let Some(sub) = sub {
                        for n in &matching {
                            if let Some(o) = items[*n].as_object_mut() {
                                let sk = key_in(o, sub);
                                o.remove(&sk);
                            }
                        }
                    } else {
                        let mut n = 0;
                        items.retain(|_| {
                            let keep = !matching.contains(&n);
                            n += 1;
                            keep
                        });
                    }
                }
                OpKind::Add | OpKind::Replace => {
                    let value = value.cloned().unwrap_or(Value::Null);
                    if matching.is_empty() {
                        // Entra adds `emails[type eq "work"].value` expecting the element made.
                        let mut element = Map::new();
                        if !equalities(f, &mut element) {
                            return Err(ScimError::bad_request(
                                "noTarget",
                                format!("no value matches {path:?}"),
                            ));
                        }
                        let mut element = Value::Object(element);
                        match sub {
                            Some(sub) => element[sub.as_str()] = value,
                            None => merge(&mut element, &value),
                        }
                        items.push(element);
                    } else {
                        for n in matching {
                            match sub {
                                Some(sub) => {
                                    if let Some(o) = items[n].as_object_mut() {
                                        let sk = key_in(o, sub);
                                        o.insert(sk, value.clone());
                                    }
                                }
                                None => merge(&mut items[n], &value),
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies a PatchOp to the user as currently rendered and returns the change that leads from
/// the current resource to the result. The whole request is checked before anything is applied.
pub fn patch_user(current: &Value, body: &Value) -> Result<UserChange, ScimError> {
    patched_user(current, body).map(|(change, _)| change)
}

/// `patch_user`, also returning the patched resource the change was read from.
pub fn patched_user(current: &Value, body: &Value) -> Result<(UserChange, Value), ScimError> {
    let ops = operations(body)?;
    let mut doc = current.as_object().cloned().unwrap_or_default();
    for op in ops.iter().filter(|op| op.kind == OpKind::Remove) {
        if let Some(path) = op
            .path
            .as_ref()
            .filter(|p| !p.trim_end_matches(':').eq_ignore_ascii_case(ENTERPRISE))
        {
            let attr = parse_path(path)?.attr;
            // `active` has no unassigned state on the platform: every user is enabled or not.
            if ["userName", "id", "active"]
                .iter()
                .any(|a| attr.eq_ignore_ascii_case(a))
            {
                return Err(ScimError::bad_request(
                    "mutability",
                    format!("{attr} is required and cannot be removed"),
                ));
            }
        }
    }
    for op in &ops {
        match &op.path {
            Some(path) => apply(&mut doc, op.kind, path, op.value.as_ref())?,
            None => {
                let Some(Value::Object(values)) = &op.value else {
                    return Err(ScimError::bad_request(
                        "invalidValue",
                        "an operation without a path needs an object value",
                    ));
                };
                for (k, v) in values {
                    if k.eq_ignore_ascii_case(ENTERPRISE) {
                        if let Value::Object(ext) = v {
                            for (ek, ev) in ext {
                                apply(&mut doc, op.kind, &format!("{ENTERPRISE}:{ek}"), Some(ev))?;
                            }
                            continue;
                        }
                    }
                    apply(&mut doc, op.kind, k, Some(v))?;
                }
            }
        }
    }
    let doc = Value::Object(doc);
    let change = parse_user(&doc, v1::Mode::Full)?;
    Ok((change, doc))
}

fn member_refs(value: Option<&Value>) -> Result<Vec<MemberRef>, ScimError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(single @ Value::Object(_)) => vec![single.clone()],
        Some(_) => {
            return Err(ScimError::bad_request(
                "invalidValue",
                "members must be a list",
            ))
        }
    };
    items
        .iter()
        .map(|item| {
            let o = item
                .as_object()
                .ok_or_else(|| ScimError::bad_request("invalidValue", "members hold objects"))?;
            let id = get(o, "value").and_then(Value::as_str).ok_or_else(|| {
                ScimError::bad_request("invalidValue", "every member needs a value (its id)")
            })?;
            let kind = match get(o, "type").and_then(Value::as_str) {
                Some(t) if t.eq_ignore_ascii_case("user") => Some(MemberKind::User),
                Some(t) if t.eq_ignore_ascii_case("group") => Some(MemberKind::Group),
                _ => None,
            };
            Ok(MemberRef {
                id: id.to_string(),
                display: get(o, "display")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                kind,
            })
        })
        .collect()
}

/// One operation on `members`: accumulated so a request is applied as a whole.
fn members_op(
    kind: OpKind,
    value: Option<&Value>,
    add: &mut Vec<MemberRef>,
    remove: &mut Vec<MemberRef>,
    replace: &mut Option<Vec<MemberRef>>,
) -> Result<(), ScimError> {
    let refs = member_refs(value)?;
    match kind {
        OpKind::Add => add.extend(refs),
        OpKind::Remove if value.is_none() || matches!(value, Some(Value::Null)) => {
            *replace = Some(Vec::new());
            add.clear();
        }
        OpKind::Remove => remove.extend(refs),
        OpKind::Replace => {
            *replace = Some(refs);
            add.clear();
            remove.clear();
        }
    }
    Ok(())
}

/// Group PATCH straight to a membership change: members are edited one by one, and the Entra
/// `Remove members` with a value list removes only the listed members.
pub fn patch_group(body: &Value) -> Result<GroupChange, ScimError> {
    let ops = operations(body)?;
    let mut change = GroupChange::default();
    let mut add: Vec<MemberRef> = Vec::new();
    let mut remove: Vec<MemberRef> = Vec::new();
    let mut replace: Option<Vec<MemberRef>> = None;
    for op in &ops {
        match &op.path {
            None => {
                let Some(Value::Object(values)) = &op.value else {
                    return Err(ScimError::bad_request(
                        "invalidValue",
                        "an operation without a path needs an object value",
                    ));
                };
                for (k, v) in values {
                    if k.eq_ignore_ascii_case("displayName") {
                        change.display_name = v.as_str().map(str::to_string);
                    } else if k.eq_ignore_ascii_case("externalId") {
                        change.external_id = match v.as_str() {
                            Some(x) if !x.is_empty() => Change::Set(x.to_string()),
                            _ => Change::Clear,
                        };
                    } else if k.eq_ignore_ascii_case("members") {
                        members_op(op.kind, Some(v), &mut add, &mut remove, &mut replace)?;
                    }
                }
            }
            Some(path) => {
                let t = parse_path(path)?;
                if t.attr.eq_ignore_ascii_case("displayName") {
                    if op.kind == OpKind::Remove {
                        return Err(ScimError::bad_request(
                            "mutability",
                            "displayName is required and cannot be removed",
                        ));
                    }
                    change.display_name = op
                        .value
                        .as_ref()
                        .and_then(Value::as_str)
                        .map(str::to_string);
                } else if t.attr.eq_ignore_ascii_case("members") {
                    match (&t.filter, op.kind) {
                        (None, kind) => members_op(
                            kind,
                            op.value.as_ref(),
                            &mut add,
                            &mut remove,
                            &mut replace,
                        )?,
                        (Some(f), OpKind::Remove) => {
                            let mut eq = Map::new();
                            match (
                                equalities(f, &mut eq),
                                eq.get("value").and_then(Value::as_str),
                            ) {
                                (true, Some(id)) => remove.push(MemberRef {
                                    id: id.to_string(),
                                    display: None,
                                    kind: None,
                                }),
                                _ => {
                                    return Err(ScimError::bad_request(
                                        "invalidFilter",
                                        "members can be selected by value eq only",
                                    ))
                                }
                            }
                        }
                        (Some(_), _) => {
                            return Err(ScimError::bad_request(
                                "invalidPath",
                                "members[...] paths support remove only",
                            ))
                        }
                    }
                } else if t.attr.eq_ignore_ascii_case("externalId") {
                    change.external_id = match (op.kind, op.value.as_ref().and_then(Value::as_str))
                    {
                        (OpKind::Remove, _) => Change::Clear,
                        (_, Some(x)) if !x.is_empty() => Change::Set(x.to_string()),
                        _ => Change::Clear,
                    };
                } else {
                    return Err(ScimError::bad_request(
                        "invalidPath",
                        format!("{path:?}: groups have displayName and members"),
                    ));
                }
            }
        }
    }
    change.members = match replace {
        Some(mut members) => {
            members.extend(add);
            members.retain(|m| !remove.iter().any(|r| r.id == m.id));
            MembersChange::Replace(members)
        }
        None if add.is_empty() && remove.is_empty() => MembersChange::Keep,
        None => MembersChange::Edit { add, remove },
    };
    Ok(change)
}

pub fn list(total: usize, start: usize, items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::urn::PATCH_OP;

    fn current() -> Value {
        json!({"schemas": [USER], "id": "x", "userName": "jdoe", "active": true,
               "name": {"givenName": "Jane", "familyName": "Doe"},
               "emails": [{"value": "jane@corp.com", "type": "work", "primary": true}],
               "title": "Engineer"})
    }

    fn patch(ops: Value) -> UserChange {
        patch_user(
            &current(),
            &json!({"schemas": [PATCH_OP], "Operations": ops}),
        )
        .unwrap()
    }

    #[test]
    fn entra_dialect() {
        let c = patch(json!([{"op": "Replace", "path": "active", "value": "False"}]));
        assert_eq!(c.active, Some(false));
        let c = patch(json!([{"op": "Add", "path": "title", "value": "Boss"}]));
        assert_eq!(c.attributes["title"], Change::Set("Boss".into()));
        assert_eq!(c.attributes["name.givenName"], Change::Set("Jane".into()));
        let c = patch(json!([{"op": "replace", "value": {"name.givenName": "Kkom",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"}}]));
        assert_eq!(c.attributes["name.givenName"], Change::Set("Kkom".into()));
        assert_eq!(
            c.attributes["enterprise.employeeNumber"],
            Change::Set("Aklq".into())
        );
        let c = patch(
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@b.c"}]),
        );
        assert_eq!(c.attributes["emails.work"], Change::Set("a@b.c".into()));
    }

    #[test]
    fn add_if_missing_and_remove() {
        let bare = json!({"userName": "x"});
        let c = patch_user(
            &bare,
            &json!({"Operations": [
            {"op": "add", "path": "emails[type eq \"work\"].value", "value": "n@x"}]}),
        )
        .unwrap();
        assert_eq!(c.attributes["emails.work"], Change::Set("n@x".into()));
        let c = patch(json!([{"op": "remove", "path": "title"}]));
        assert_eq!(c.attributes["title"], Change::Clear);
        let c = patch(json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]));
        assert_eq!(c.attributes["emails.work"], Change::Clear);
        assert!(patch_user(&current(), &json!({"Operations": [{"op": "remove"}]})).is_err());
        assert!(patch_user(&current(), &json!({"Operations": [
            {"op": "replace", "path": "emails[type eq \"work\" or type eq \"home\"].value", "value": "q"}]})).is_ok());
    }

    #[test]
    fn required_attributes_cannot_be_removed_but_the_extension_can() {
        let e = patch_user(
            &current(),
            &json!({"Operations": [{"op": "remove", "path": "userName"}]}),
        );
        assert_eq!(e.unwrap_err().scim_type, Some("mutability"));
        assert!(patch_user(
            &current(),
            &json!({"Operations": [{"op": "remove", "path": ENTERPRISE}]})
        )
        .is_ok());
    }

    #[test]
    fn group_member_forms() {
        let g = |ops: Value| patch_group(&json!({"Operations": ops})).unwrap();
        let c = g(
            json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": "a"}, {"value": "b"}]}]),
        );
        assert!(
            matches!(c.members, MembersChange::Edit { ref add, ref remove } if add.len() == 2 && remove.is_empty())
        );
        let c = g(json!([{"op": "Remove", "path": "members", "value": [{"value": "a"}]}]));
        assert!(
            matches!(c.members, MembersChange::Edit { ref add, ref remove } if add.is_empty() && remove.len() == 1)
        );
        let c = g(json!([{"op": "remove", "path": "members[value eq \"a\"]"}]));
        assert!(matches!(c.members, MembersChange::Edit { ref remove, .. } if remove[0].id == "a"));
        let c = g(json!([{"op": "replace", "path": "members", "value": []}]));
        assert!(matches!(c.members, MembersChange::Replace(ref m) if m.is_empty()));
        let c = g(json!([{"op": "remove", "path": "members"}]));
        assert!(matches!(c.members, MembersChange::Replace(ref m) if m.is_empty()));
        let c = g(json!([{"op": "replace", "value": {"displayName": "New"}}]));
        assert_eq!(c.display_name.as_deref(), Some("New"));
    }

    #[test]
    fn etags_ignore_meta_and_change_with_content() {
        let a = json!({"id": "1", "meta": {"location": "x"}});
        let b = json!({"id": "1", "meta": {"location": "y"}});
        let c = json!({"id": "2"});
        assert_eq!(etag(&a), etag(&b));
        assert_ne!(etag(&a), etag(&c));
        assert!(etag(&a).starts_with("W/\""));
        // The same tag as hashing the printed resource without `meta`, so tags handed out
        // before stay valid.
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            json!({"id": "1"}).to_string().as_bytes(),
        );
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(etag(&a), format!("W/\"{hex}\""));
    }
}
