//! SCIM 2.0 discovery: ServiceProviderConfig, ResourceTypes and Schemas. The User schema lists
//! only attributes the gateway stores and reads back under the current attribute mapping, so
//! conformance tools and identity providers never write what cannot be read.

use super::urn::{ENTERPRISE, GROUP, RESOURCE_TYPE, SCHEMA, SPC, USER};
use crate::auth::Scheme;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What `meta` holds, said where clients read the resource's schema (the common attributes have
/// no schema of their own to say it in).
const META: &str = "meta.created is never returned: the platform keeps no creation date. meta.lastModified is the platform's last-modified date of the entity, returned when the platform gives one.";

/// One `authenticationSchemes` entry per configured method; the first is the primary one.
pub fn authentication_schemes(schemes: &[Scheme]) -> Vec<Value> {
    schemes
        .iter()
        .enumerate()
        .map(|(i, scheme)| {
            let (kind, name, description, spec) = describe(*scheme);
            json!({
                "type": kind,
                "name": name,
                "description": description,
                "specUri": spec,
                "primary": i == 0,
            })
        })
        .collect()
}

/// `(type, name, description, specification)` of a scheme; SCIM 2.0 has no type of its own for
/// a static token, which is an RFC 6750 bearer token to the client.
pub fn describe(scheme: Scheme) -> (&'static str, &'static str, &'static str, &'static str) {
    match scheme {
        Scheme::OAuthBearer => (
            "oauthbearertoken",
            "OAuth Bearer Token",
            "An OAuth 2.0 access token from the configured authorization server, sent as Authorization: Bearer (RFC 6750)",
            "https://www.rfc-editor.org/rfc/rfc6750",
        ),
        Scheme::StaticBearer => (
            "oauthbearertoken",
            "Static Bearer Token",
            "A static bearer token shared with the gateway's operator (scim.bearer_token), sent as Authorization: Bearer",
            "https://www.rfc-editor.org/rfc/rfc6750",
        ),
        Scheme::HttpBasic => (
            "httpbasic",
            "HTTP Basic",
            "A user name and password configured on the gateway, sent as Authorization: Basic (RFC 7617)",
            "https://www.rfc-editor.org/rfc/rfc7617",
        ),
    }
}

/// `max_payload` is `limits.max_body_bytes` and `maxOperations` the Bulk handler's own bound,
/// so what clients are told is what is enforced.
pub fn service_provider_config(
    base: &str,
    max_results: usize,
    max_payload: u64,
    schemes: &[Scheme],
) -> Value {
    json!({
        "schemas": [SPC],
        "documentationUri": "https://github.com/scimgate/scimgate#readme",
        "patch": {"supported": true},
        "bulk": {
            "supported": true,
            "maxOperations": super::BULK_MAX_OPERATIONS,
            "maxPayloadSize": max_payload,
        },
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": authentication_schemes(schemes),
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

/// The enterprise extension is offered on User only when the attribute mapping stores at least
/// one of its attributes: an extension that reads back empty would promise what is dropped.
pub fn resource_types(base: &str, mapped: &BTreeMap<String, String>) -> Vec<Value> {
    let mut user = json!({
        "schemas": [RESOURCE_TYPE], "id": "User", "name": "User", "endpoint": "/Users",
        "description": "Platform user", "schema": USER,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
    });
    if !enterprise_schema(mapped).is_empty() {
        user["schemaExtensions"] = json!([{"schema": ENTERPRISE, "required": false}]);
    }
    vec![
        user,
        json!({
            "schemas": [RESOURCE_TYPE], "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "Platform group", "schema": GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

fn attr(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": false, "description": description,
        "required": false, "caseExact": false, "mutability": "readWrite",
        "returned": "default", "uniqueness": "none",
    })
}

fn complex(name: &str, multi: bool, description: &str, subs: Vec<Value>) -> Value {
    let mut a = attr(name, "complex", description);
    a["multiValued"] = json!(multi);
    a["subAttributes"] = Value::Array(subs);
    a
}

fn with(mut a: Value, key: &str, value: Value) -> Value {
    a[key] = value;
    a
}

/// The User schema for the slots that are mapped to extension properties.
///
/// `userName` is immutable because the platform has no rename (a different name would be a
/// different user), and `active` is required because every platform user is either enabled or
/// disabled: there is no unassigned state to remove it to.
fn user_schema(mapped: &BTreeMap<String, String>, external_id: bool) -> Vec<Value> {
    let has = |slot: &str| mapped.contains_key(slot);
    let mut attrs = vec![with(
        with(
            with(
                attr("userName", "string", "The platform user name"),
                "required",
                json!(true),
            ),
            "uniqueness",
            json!("server"),
        ),
        "mutability",
        json!("immutable"),
    )];
    if external_id {
        attrs.push(with(
            attr("externalId", "string", "The identity provider's identifier"),
            "caseExact",
            json!(true),
        ));
    }
    let name_parts: Vec<Value> = [
        "givenName",
        "middleName",
        "familyName",
        "formatted",
        "honorificPrefix",
        "honorificSuffix",
    ]
    .iter()
    .filter(|p| has(&format!("name.{p}")))
    .map(|p| attr(p, "string", p))
    .collect();
    if !name_parts.is_empty() {
        attrs.push(complex("name", false, "The user's name", name_parts));
    }
    for simple in crate::builtin::SIMPLE_USER_ATTRIBUTES {
        if has(simple) {
            attrs.push(attr(simple, "string", simple));
        }
    }
    attrs.push(with(
        attr("active", "boolean", "Whether the user may sign in"),
        "required",
        json!(true),
    ));
    let email_types: Vec<&str> = ["work", "home", "other"]
        .into_iter()
        .filter(|t| has(&format!("emails.{t}")))
        .collect();
    if !email_types.is_empty() {
        attrs.push(complex(
            "emails",
            true,
            "E-mail addresses",
            vec![
                attr("value", "string", "The address"),
                with(
                    attr("type", "string", "work, home or other"),
                    "canonicalValues",
                    json!(email_types),
                ),
            ],
        ));
    }
    let phone_types: Vec<&str> = ["work", "home", "mobile", "fax", "pager", "other"]
        .into_iter()
        .filter(|t| has(&format!("phoneNumbers.{t}")))
        .collect();
    if !phone_types.is_empty() {
        attrs.push(complex(
            "phoneNumbers",
            true,
            "Phone numbers",
            vec![
                attr("value", "string", "The number"),
                with(
                    attr("type", "string", "The kind of number"),
                    "canonicalValues",
                    json!(phone_types),
                ),
            ],
        ));
    }
    let address_parts: Vec<Value> = [
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "formatted",
    ]
    .iter()
    .filter(|p| has(&format!("addresses.work.{p}")))
    .map(|p| attr(p, "string", p))
    .collect();
    if !address_parts.is_empty() {
        let mut subs = address_parts;
        subs.push(with(
            attr("type", "string", "Only work is stored"),
            "canonicalValues",
            json!(["work"]),
        ));
        attrs.push(complex("addresses", true, "The work address", subs));
    }
    let mut groups = complex(
        "groups",
        true,
        "Groups the user belongs to (change membership through /Groups)",
        vec![
            with(
                attr("value", "string", "Group id"),
                "mutability",
                json!("readOnly"),
            ),
            with(
                attr("display", "string", "Group name"),
                "mutability",
                json!("readOnly"),
            ),
            with(
                attr("type", "string", "direct"),
                "mutability",
                json!("readOnly"),
            ),
        ],
    );
    groups["mutability"] = json!("readOnly");
    attrs.push(groups);
    attrs
}

fn enterprise_schema(mapped: &BTreeMap<String, String>) -> Vec<Value> {
    [
        "employeeNumber",
        "costCenter",
        "organization",
        "division",
        "department",
    ]
    .iter()
    .filter(|p| mapped.contains_key(&format!("enterprise.{p}")))
    .map(|p| attr(p, "string", p))
    .collect()
}

/// `displayName` is immutable for the same reason as `userName`: groups cannot be renamed.
fn group_schema() -> Vec<Value> {
    vec![
        with(
            with(
                attr(
                    "displayName",
                    "string",
                    "The group's name at the identity provider",
                ),
                "required",
                json!(true),
            ),
            "mutability",
            json!("immutable"),
        ),
        complex(
            "members",
            true,
            "Users and groups in the group",
            vec![
                with(
                    attr("value", "string", "Member id"),
                    "mutability",
                    json!("immutable"),
                ),
                with(
                    with(
                        attr("$ref", "reference", "URI of the member"),
                        "referenceTypes",
                        json!(["User", "Group"]),
                    ),
                    "mutability",
                    json!("immutable"),
                ),
                with(
                    with(
                        attr("display", "string", "Member name"),
                        "mutability",
                        json!("readOnly"),
                    ),
                    "returned",
                    json!("request"),
                ),
                with(
                    with(
                        attr("type", "string", "User or Group"),
                        "canonicalValues",
                        json!(["User", "Group"]),
                    ),
                    "mutability",
                    json!("immutable"),
                ),
            ],
        ),
    ]
}

fn schema_resource(
    base: &str,
    id: &str,
    name: &str,
    description: &str,
    attributes: Vec<Value>,
) -> Value {
    json!({
        "schemas": [SCHEMA], "id": id, "name": name, "description": description,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// Every schema the server serves, including the three discovery schemas conformance tools
/// expect to find.
pub fn schemas(base: &str, mapped: &BTreeMap<String, String>, external_id: bool) -> Vec<Value> {
    let meta_attrs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| with(attr(n, "string", n), "mutability", json!("readOnly")))
            .collect()
    };
    vec![
        schema_resource(
            base,
            USER,
            "User",
            &format!("Platform user. {META}"),
            user_schema(mapped, external_id),
        ),
        schema_resource(
            base,
            ENTERPRISE,
            "EnterpriseUser",
            "Enterprise user extension",
            enterprise_schema(mapped),
        ),
        schema_resource(
            base,
            GROUP,
            "Group",
            &format!("Platform group. {META}"),
            group_schema(),
        ),
        schema_resource(
            base,
            RESOURCE_TYPE,
            "ResourceType",
            "Resource type",
            meta_attrs(&["id", "name", "description", "endpoint", "schema"]),
        ),
        schema_resource(
            base,
            SPC,
            "ServiceProviderConfig",
            "Service provider configuration",
            meta_attrs(&["documentationUri"]),
        ),
        schema_resource(
            base,
            SCHEMA,
            "Schema",
            "Schema definition",
            meta_attrs(&["id", "name", "description"]),
        ),
    ]
}
