//! Query handling: the parameters of a listing or search (filter, sort, paging, attributes),
//! the lookups an equality filter names, sorting, and projecting a resource onto the
//! requested attributes.

use super::error::{ScimError, Version};
use super::filter::{self, AttrPath, Dialect, Filter};
use super::{urn, v1};
use crate::builtin::around_simple_user_attributes;
use crate::platform::names;
use serde_json::Value;

/// Attributes a user filter may name: what the gateway stores (plus `groups`, read back).
pub(super) const USER_ATTRIBUTES: &[&str] = &USER_ATTRIBUTE_LIST;
const USER_ATTRIBUTE_LIST: [&str; 17] = around_simple_user_attributes(
    ["id", "externalId", "userName", "name"],
    ["active", "emails", "phoneNumbers", "addresses", "groups"],
);
pub(super) const GROUP_ATTRIBUTES: &[&str] = &["id", "displayName", "members", "externalId"];
const ENTERPRISE_ATTRIBUTES: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

pub(super) fn case_exact(path: &AttrPath) -> bool {
    path.urn.is_none()
        && path.sub_attr.is_none()
        && (path.attr.eq_ignore_ascii_case("id") || path.attr.eq_ignore_ascii_case("externalId"))
}

#[derive(Clone)]
pub(super) struct Query {
    pub(super) filter: Option<String>,
    pub(super) sort_by: Option<AttrPath>,
    pub(super) sort_bad: Option<String>,
    pub(super) descending: bool,
    pub(super) start_index: usize,
    pub(super) count: Option<usize>,
    pub(super) attributes: Vec<String>,
    pub(super) excluded: Vec<String>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filter: None,
            sort_by: None,
            sort_bad: None,
            descending: false,
            start_index: 1,
            count: None,
            attributes: Vec::new(),
            excluded: Vec::new(),
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

impl Query {
    /// A SCIM 2.0 SearchRequest body: the query parameters as JSON. A member of the wrong JSON
    /// type is refused, never ignored: an ignored `filter` would answer a full listing to a
    /// client that asked for a few resources. `null` counts as absent.
    pub(super) fn from_search(body: &Value) -> Result<Self, ScimError> {
        let Some(o) = body.as_object() else {
            return Err(ScimError::bad_request(
                "invalidSyntax",
                "a SearchRequest is a JSON object",
            ));
        };
        let get = |k: &str| {
            o.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let wrong = |name: &str, expected: &str| {
            ScimError::bad_request("invalidValue", format!("{name} must be {expected}"))
        };
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(wrong(name, "a string")),
            }
        };
        let strings = |name: &str| -> Result<Vec<String>, ScimError> {
            match get(name) {
                None => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(split_list(s)),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| wrong(name, "a list of attribute names"))
                    })
                    .collect(),
                Some(_) => Err(wrong(name, "a list of attribute names")),
            }
        };
        let integer = |name: &str| -> Result<Option<i64>, ScimError> {
            match get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                            .map(|f| f as i64)
                    })
                    .map(Some)
                    .ok_or_else(|| wrong(name, "an integer")),
                Some(_) => Err(wrong(name, "an integer")),
            }
        };
        let filter = match get("filter") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ScimError::bad_request(
                    "invalidFilter",
                    format!(
                        "filter must be a string, not {}",
                        crate::config::import::json_type(other)
                    ),
                ))
            }
        };
        let mut q = Query {
            filter,
            attributes: strings("attributes")?,
            excluded: strings("excludedAttributes")?,
            descending: text("sortOrder")?.is_some_and(|s| s.eq_ignore_ascii_case("descending")),
            start_index: integer("startIndex")?.unwrap_or(1).max(1) as usize,
            count: integer("count")?.map(|c| c.max(0) as usize),
            ..Query::default()
        };
        if let Some(s) = text("sortBy")? {
            match parse_attr_path(&s) {
                Some(p) => q.sort_by = Some(p),
                None => q.sort_bad = Some(s),
            }
        }
        Ok(q)
    }

    pub(super) fn parse(raw: &str) -> Self {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode_query_value(v);
            // Unknown parameters (Entra adds its own flags) are ignored, as SCIM asks.
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = Some(v),
                "sortby" => match parse_attr_path(&v) {
                    Some(p) => q.sort_by = Some(p),
                    None => q.sort_bad = Some(v),
                },
                "sortorder" => q.descending = v.eq_ignore_ascii_case("descending"),
                "startindex" => {
                    q.start_index = v.trim().parse::<i64>().unwrap_or(1).max(1) as usize
                }
                "count" => q.count = Some(v.trim().parse::<i64>().unwrap_or(0).max(0) as usize),
                "attributes" => q.attributes = split_list(&v),
                "excludedattributes" => q.excluded = split_list(&v),
                _ => {}
            }
        }
        q
    }

    /// Parses the filter and refuses attributes the gateway cannot evaluate: a silently empty
    /// or full listing would mislead the identity provider.
    pub(super) fn filter(
        &self,
        dialect: Dialect,
        supported: &[&str],
    ) -> Result<Option<Filter>, ScimError> {
        if let Some(bad) = &self.sort_bad {
            return Err(ScimError::bad_request(
                "invalidValue",
                format!("sortBy {bad:?} is not an attribute name"),
            ));
        }
        if let Some(s) = &self.sort_by {
            if !supported.iter().any(|a| a.eq_ignore_ascii_case(&s.attr)) {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    format!(
                        "cannot sort by {}: not an attribute scimgate serves",
                        s.attr
                    ),
                ));
            }
        }
        let Some(text) = self.filter.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Ok(None);
        };
        let parsed = filter::parse(text, dialect).map_err(|e| {
            ScimError::bad_request("invalidFilter", format!("invalid filter {text:?}: {e}"))
        })?;
        for path in filter::attribute_paths(&parsed) {
            // A URN-qualified name is fine when the URN is the resource's own core schema, or the
            // enterprise extension for its attributes.
            let core_urn = path.urn.as_deref().is_none_or(|u| {
                u.eq_ignore_ascii_case(urn::USER) || u.eq_ignore_ascii_case(urn::GROUP)
            });
            let enterprise = path
                .urn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(urn::ENTERPRISE))
                && ENTERPRISE_ATTRIBUTES
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&path.attr));
            // `meta.lastModified` is rendered when the platform gives it, so it filters like
            // any attribute; `meta.created` never is.
            let last_modified = core_urn
                && path.attr.eq_ignore_ascii_case("meta")
                && path
                    .sub_attr
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("lastModified"));
            let known = enterprise
                || last_modified
                || (core_urn && supported.iter().any(|a| a.eq_ignore_ascii_case(&path.attr)));
            if !known {
                return Err(ScimError::bad_request(
                    "invalidFilter",
                    format!(
                        "cannot filter on {}: scimgate filters on {}",
                        path.attr,
                        supported.join(", ")
                    ),
                ));
            }
        }
        Ok(Some(parsed))
    }
}

fn parse_attr_path(text: &str) -> Option<AttrPath> {
    let text = text.trim();
    let (attr, sub) = match text.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (text, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
    };
    (valid(attr) && sub.is_none_or(valid)).then(|| AttrPath {
        urn: None,
        attr: attr.to_string(),
        sub_attr: sub.map(str::to_string),
    })
}

fn decode_query_value(v: &str) -> String {
    let spaced = v.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The value a sort key reads from a rendered resource.
fn sort_key(resource: &Value, path: &AttrPath) -> Option<String> {
    let obj = resource.as_object()?;
    let (_, v) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&path.attr))?;
    let v = match (&path.sub_attr, v) {
        (Some(sub), Value::Object(o)) => o.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub))?.1,
        (Some(sub), Value::Array(items)) => {
            items.iter().filter_map(|i| i.as_object()).find_map(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(sub))
                    .map(|(_, v)| v)
            })?
        }
        (None, Value::Array(items)) => items.first()?.get("value")?,
        (_, v) => v,
    };
    Some(match v {
        Value::String(s) => names::fold(s),
        other => other.to_string(),
    })
}

pub(super) fn sort<T>(items: &mut [T], query: &Query, view: impl Fn(&T) -> &Value, default: &str) {
    let path = query.sort_by.clone().unwrap_or(AttrPath {
        urn: None,
        attr: default.to_string(),
        sub_attr: None,
    });
    // Resources without the attribute go last whatever the order. Each key is made once (a
    // listing sorts every name the platform holds, and a key is an allocation), and the sort
    // is stable.
    if query.descending {
        items.sort_by_cached_key(|item| {
            let key = sort_key(view(item), &path);
            (key.is_none(), std::cmp::Reverse(key))
        });
    } else {
        items.sort_by_cached_key(|item| {
            let key = sort_key(view(item), &path);
            (key.is_none(), key)
        });
    }
}

/// The equality terms of a filter that is one `attr eq "value"` or an `or` of them.
fn equality_terms(f: &Filter) -> Option<Vec<(&AttrPath, &str)>> {
    match f {
        Filter::Or(a, b) => {
            let mut terms = equality_terms(a)?;
            terms.extend(equality_terms(b)?);
            Some(terms)
        }
        other => filter::as_simple_equality(other).map(|t| vec![t]),
    }
}

/// The core attribute a path names (no sub-attribute; no URN, or the core schema's).
fn core_attribute<'a>(path: &'a AttrPath, core2: &str) -> Option<&'a str> {
    let core = path
        .urn
        .as_deref()
        .is_none_or(|u| u.eq_ignore_ascii_case(core2) || u.eq_ignore_ascii_case(v1::CORE));
    (core && path.sub_attr.is_none()).then_some(path.attr.as_str())
}

/// What a user lookup names.
#[derive(Debug, PartialEq)]
pub(super) enum UserKey {
    /// A platform name: the userName asked for, or the name an id encodes.
    Name(String),
    ExternalId(String),
}

/// The users a filter of the form `userName eq`, `id eq` or `externalId eq`, or an `or` of
/// them, asks for; `None` for any other filter. An id that decodes to no name adds nothing.
pub(super) fn user_lookup_keys(f: &Filter) -> Option<Vec<UserKey>> {
    let mut keys = Vec::new();
    for (path, value) in equality_terms(f)? {
        let attr = core_attribute(path, urn::USER)?;
        if attr.eq_ignore_ascii_case("userName") {
            keys.push(UserKey::Name(value.to_string()));
        } else if attr.eq_ignore_ascii_case("id") {
            keys.extend(crate::provisioning::name_for(value).map(UserKey::Name));
        } else if attr.eq_ignore_ascii_case("externalId") {
            keys.push(UserKey::ExternalId(value.to_string()));
        } else {
            return None;
        }
    }
    Some(keys)
}

/// What a group lookup names.
#[derive(Debug, PartialEq)]
pub(super) enum GroupKey {
    /// The identity provider's name, mapped to the platform's.
    DisplayName(String),
    /// The platform name, from an id.
    Name(String),
    ExternalId(String),
}

/// The groups a filter of the form `displayName eq`, `id eq` or `externalId eq`, or an `or` of
/// them, asks for; `None` for any other filter.
pub(super) fn group_lookup_keys(f: &Filter) -> Option<Vec<GroupKey>> {
    let mut keys = Vec::new();
    for (path, value) in equality_terms(f)? {
        let attr = core_attribute(path, urn::GROUP)?;
        if attr.eq_ignore_ascii_case("displayName") {
            keys.push(GroupKey::DisplayName(value.to_string()));
        } else if attr.eq_ignore_ascii_case("id") {
            keys.extend(crate::provisioning::group_name_for(value).map(GroupKey::Name));
        } else if attr.eq_ignore_ascii_case("externalId") {
            keys.push(GroupKey::ExternalId(value.to_string()));
        } else {
            return None;
        }
    }
    Some(keys)
}

/// Names without repeats, compared as the platform compares them, in first-seen order.
pub(super) fn distinct(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|n| names::same(n, &name)) {
            out.push(name);
        }
    }
    out
}

/// The resource as the response carries it: projected by `attributes`/`excludedAttributes`,
/// and in 2.0 without the attributes whose `returned` is `request` unless they were asked for.
pub(super) fn respond(version: Version, resource: Value, query: &Query) -> Value {
    let mut out = project(resource, &query.attributes, &query.excluded);
    if version == Version::V2 {
        let asked = |name: &str| {
            query.attributes.iter().any(|a| {
                let short = a.rsplit_once(':').map_or(a.as_str(), |(_, s)| s);
                short.eq_ignore_ascii_case(name)
            })
        };
        // Member names are derived, not stored with the membership, so `/Schemas` marks
        // `members.display` as returned on request: a client that round-trips `members` gets
        // back exactly what it sent.
        if !asked("members.display") {
            if let Some(Value::Array(members)) = out.get_mut("members") {
                for m in members.iter_mut().filter_map(Value::as_object_mut) {
                    m.remove("display");
                }
            }
        }
    }
    out
}

/// Keeps only the requested attributes, or drops the excluded ones (`id`, `schemas` and
/// `meta` always return).
fn project(resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let resource = if excluded.is_empty() {
        resource
    } else {
        exclude(resource, excluded)
    };
    if attributes.is_empty() {
        return resource;
    }
    let Value::Object(obj) = resource else {
        return resource;
    };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let always = ["id", "schemas", "meta"].contains(&k.as_str());
        let whole = attributes.iter().any(|a| a.eq_ignore_ascii_case(&k));
        if always || whole {
            out.insert(k, v);
            continue;
        }
        let subs: Vec<&str> = attributes
            .iter()
            .filter_map(|a| a.split_once('.'))
            .filter(|(attr, _)| attr.eq_ignore_ascii_case(&k))
            .map(|(_, sub)| sub)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let keep = |o: &serde_json::Map<String, Value>| -> serde_json::Map<String, Value> {
            o.iter()
                .filter(|(sk, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(sk)))
                .map(|(sk, sv)| (sk.clone(), sv.clone()))
                .collect()
        };
        match v {
            Value::Object(o) => {
                out.insert(k, Value::Object(keep(&o)));
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items
                    .iter()
                    .filter_map(|i| i.as_object().map(|o| Value::Object(keep(o))))
                    .collect();
                out.insert(k, Value::Array(kept));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn exclude(resource: Value, excluded: &[String]) -> Value {
    let Value::Object(mut obj) = resource else {
        return resource;
    };
    for name in excluded {
        if ["id", "schemas", "meta"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name))
        {
            continue;
        }
        match name.split_once('.') {
            None => obj.retain(|k, _| !k.eq_ignore_ascii_case(name)),
            Some((attr, sub)) => {
                if let Some((_, v)) = obj.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(attr)) {
                    match v {
                        Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
                        Value::Array(items) => items
                            .iter_mut()
                            .filter_map(Value::as_object_mut)
                            .for_each(|o| o.retain(|k, _| !k.eq_ignore_ascii_case(sub))),
                        _ => {}
                    }
                }
            }
        }
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries_parse_leniently() {
        let q = Query::parse("filter=userName+eq+%22a%40b%22&startIndex=0&count=-5&sortOrder=descending&attributes=userName,name.givenName&aadOptscim062020");
        assert_eq!(q.filter.as_deref(), Some("userName eq \"a@b\""));
        assert_eq!(q.start_index, 1);
        assert_eq!(q.count, Some(0));
        assert!(q.descending);
        assert_eq!(q.attributes, vec!["userName", "name.givenName"]);
    }

    #[test]
    fn search_bodies_of_the_wrong_type_are_refused() {
        for filter in [json!(5), json!(true), json!({}), json!(["userName pr"])] {
            let e = Query::from_search(&json!({ "filter": filter }))
                .err()
                .unwrap();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{filter}");
        }
        for (k, v) in [
            ("attributes", json!(5)),
            ("attributes", json!([1])),
            ("excludedAttributes", json!(true)),
            ("sortBy", json!(3)),
            ("sortOrder", json!(false)),
            ("startIndex", json!("1")),
            ("count", json!(1.5)),
        ] {
            let e = Query::from_search(&json!({ k: v })).err().unwrap();
            assert_eq!(e.scim_type, Some("invalidValue"), "{k}: {v}");
        }
        let Ok(q) = Query::from_search(&json!({"filter": null, "count": 2.0, "attributes": null}))
        else {
            panic!("null members are absent");
        };
        assert!(q.filter.is_none() && q.attributes.is_empty());
        assert_eq!(q.count, Some(2));
    }

    #[test]
    fn projection_keeps_id_and_requested_parts() {
        let v = json!({"id": "1", "userName": "u", "title": "t", "name": {"givenName": "g", "familyName": "f"},
                       "emails": [{"value": "e", "type": "work"}], "schemas": ["x"]});
        let p = project(
            v,
            &[
                "userName".into(),
                "name.givenName".into(),
                "emails.value".into(),
            ],
            &[],
        );
        assert_eq!(
            p,
            json!({"id": "1", "userName": "u", "name": {"givenName": "g"},
                             "emails": [{"value": "e"}], "schemas": ["x"]})
        );
    }

    #[test]
    fn lookups_are_recognised_only_for_equalities_joined_by_or() {
        let parse = |text: &str| filter::parse(text, Dialect::V2).unwrap();
        let id = crate::provisioning::id_for("bob");
        assert_eq!(
            user_lookup_keys(&parse(&format!(
                "userName eq \"Ann\" or (id eq \"{id}\" or id eq \"not base64!\") or externalId eq \"e9\""
            ))),
            Some(vec![
                UserKey::Name("Ann".to_string()),
                UserKey::Name("bob".to_string()),
                UserKey::ExternalId("e9".to_string())
            ])
        );
        for other in [
            "userName eq \"a\" and id eq \"b\"",
            "userName sw \"a\"",
            "userName eq \"a\" or title eq \"b\"",
            "emails.value eq \"a\"",
            "externalId sw \"x\"",
        ] {
            assert_eq!(user_lookup_keys(&parse(other)), None, "{other}");
        }
        assert_eq!(
            group_lookup_keys(&parse(
                "externalId eq \"e1\" or urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq \"Ops\""
            )),
            Some(vec![
                GroupKey::ExternalId("e1".into()),
                GroupKey::DisplayName("Ops".into())
            ])
        );
        assert_eq!(group_lookup_keys(&parse("members.value eq \"x\"")), None);
        assert_eq!(
            group_lookup_keys(&parse("not (displayName eq \"x\")")),
            None
        );
    }

    #[test]
    fn unsupported_filters_are_refused_not_ignored() {
        let q = Query::parse("filter=meta.created+gt+%222011-05-13T04:42:34Z%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).is_err());
        let q = Query::parse("filter=meta.lastModified+gt+%222011-05-13T04:42:34Z%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).unwrap().is_some());
        let q = Query::parse("filter=userName+eq");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).is_err());
        let q = Query::parse("filter=UserName+Eq+%22x%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).unwrap().is_some());
    }

    #[test]
    fn sorting_puts_missing_values_last() {
        let mut items = vec![
            json!({"userName": "b"}),
            json!({}),
            json!({"userName": "A"}),
        ];
        let q = Query::parse("sortBy=userName");
        sort(&mut items, &q, |v| v, "userName");
        assert_eq!(items[0]["userName"], "A");
        assert_eq!(items[2], json!({}));
    }

    #[test]
    fn sorting_descending_keeps_missing_values_last_and_equal_keys_in_order() {
        let mut items = vec![
            json!({"userName": "b", "n": 1}),
            json!({"n": 2}),
            json!({"userName": "C", "n": 3}),
            json!({"userName": "B", "n": 4}),
            json!({"n": 5}),
            json!({"userName": "a", "n": 6}),
        ];
        let q = Query::parse("sortBy=userName&sortOrder=descending");
        sort(&mut items, &q, |v| v, "userName");
        let order: Vec<i64> = items.iter().filter_map(|v| v["n"].as_i64()).collect();
        assert_eq!(order, [3, 1, 4, 6, 2, 5]);
        let q = Query::parse("sortBy=userName");
        sort(&mut items, &q, |v| v, "userName");
        let order: Vec<i64> = items.iter().filter_map(|v| v["n"].as_i64()).collect();
        assert_eq!(order, [6, 1, 4, 3, 2, 5]);
    }
}
