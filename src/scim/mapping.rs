//! What the attribute mapping stores, seen from the SCIM side: which attributes of a request it
//! drops (named in a warning, so nothing a client sends disappears without a trace), which it
//! never stores (a `scimgate check` note), and which setting names a property.

use crate::builtin::known_slots;
use crate::config::ProvisioningConfig;
use crate::provisioning::{Change, UserChange};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// User attributes SCIM defines that no slot can hold: the codecs read past them.
const NEVER_STORED: [&str; 5] = ["x509Certificates", "ims", "photos", "entitlements", "roles"];
/// The enterprise extension's one complex attribute, which no slot holds either.
const ENTERPRISE_NEVER_STORED: [&str; 1] = ["manager"];

/// The SCIM names of what a user request carries but the mapping cannot store, each once, in
/// a stable order: unmapped slots by their mapping name (`nickName`, `emails.other`,
/// `enterprise.department`, the names `[provisioning.user_attributes]` takes), then attributes
/// no mapping can hold. `body` is the request body in either version (for a 2.0 PATCH, the
/// patched resource); empty values carry nothing and are not named.
pub fn unstored(
    body: &Value,
    change: &UserChange,
    mapped: &BTreeMap<String, String>,
    external_id_mapped: bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !external_id_mapped && matches!(change.external_id, Change::Set(_)) {
        out.push("externalId".into());
    }
    for (slot, c) in &change.attributes {
        let carries = matches!(c, Change::Set(v) if !v.trim().is_empty());
        if carries && !mapped.contains_key(slot) {
            out.push(slot.clone());
        }
    }
    let Some(body) = body.as_object() else {
        return out;
    };
    for name in NEVER_STORED {
        if get(body, name).is_some_and(carries_data) {
            out.push(name.to_string());
        }
    }
    // Only the work address has slots; an address of another type is read past.
    if let Some(Value::Array(items)) = get(body, "addresses") {
        for (i, item) in items.iter().enumerate() {
            let Some(item) = item.as_object() else {
                continue;
            };
            // As the codec reads it: untyped, the primary or first element is the work address.
            let primary = get(item, "primary").is_some_and(|p| p == &Value::Bool(true));
            let kind = match get(item, "type").and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None if primary || i == 0 => "work".to_string(),
                None => "other".to_string(),
            };
            if !kind.eq_ignore_ascii_case("work") && carries_data_map(item) {
                let name = format!("addresses.{kind}");
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    let enterprise = body
        .iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case(super::urn::ENTERPRISE)
                || k.eq_ignore_ascii_case(super::v1::ENTERPRISE)
        })
        .and_then(|(_, v)| v.as_object());
    if let Some(ext) = enterprise {
        for name in ENTERPRISE_NEVER_STORED {
            if get(ext, name).is_some_and(carries_data) {
                out.push(format!("enterprise.{name}"));
            }
        }
    }
    out
}

/// The user attributes the mapping does not store, for `scimgate check`: every slot without a
/// property, then what no mapping can hold.
pub fn unmapped(config: &ProvisioningConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !config.stores_user_external_id() {
        out.push("externalId".into());
    }
    out.extend(
        known_slots()
            .into_iter()
            .filter(|s| !config.user_attributes.contains_key(*s))
            .map(str::to_string),
    );
    out.extend(NEVER_STORED.iter().map(|s| s.to_string()));
    out.push("addresses of a type other than work".into());
    out.extend(
        ENTERPRISE_NEVER_STORED
            .iter()
            .map(|s| format!("enterprise.{s}")),
    );
    out
}

/// The setting that names each extension property the gateway writes: `(setting, property)`.
pub fn property_settings(config: &ProvisioningConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = config
        .user_attributes
        .iter()
        .map(|(slot, property)| {
            (
                format!("provisioning.user_attributes.{slot:?}"),
                property.clone(),
            )
        })
        .collect();
    if let Some(p) = &config.external_id_property {
        out.push(("provisioning.external_id_property".into(), p.clone()));
    }
    out
}

fn get<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn carries_data(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(items) => items.iter().any(carries_data),
        Value::Object(o) => carries_data_map(o),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// An element carries data when something beyond its `type`/`primary` markers is set.
fn carries_data_map(o: &Map<String, Value>) -> bool {
    o.iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("type") && !k.eq_ignore_ascii_case("primary"))
        .any(|(_, v)| carries_data(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::default_user_attributes;
    use serde_json::json;

    #[test]
    fn names_what_the_mapping_drops_once() {
        let body = json!({
            "userName": "u", "nickName": "Babs", "roles": [], "ims": [{"value": "x", "type": "aim"}],
            "emails": [{"value": "w@x", "type": "work"}, {"value": "o@x", "type": "other"}],
            "addresses": [{"type": "work", "locality": "Boston"}, {"type": "home", "locality": "Quincy"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m"}, "department": "D"},
        });
        let change = crate::scim::v2::parse_user(&body, crate::scim::v1::Mode::Create).unwrap();
        let names = unstored(&body, &change, &default_user_attributes(), true);
        assert_eq!(
            names,
            [
                "emails.other",
                "enterprise.department",
                "nickName",
                "ims",
                "addresses.home",
                "enterprise.manager"
            ]
        );
        let plain =
            json!({"userName": "u", "emails": [{"value": "w@x", "type": "work"}], "roles": []});
        let change = crate::scim::v2::parse_user(&plain, crate::scim::v1::Mode::Create).unwrap();
        assert!(unstored(&plain, &change, &default_user_attributes(), true).is_empty());
    }
}
