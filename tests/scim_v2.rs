//! SCIM 2.0 provisioning end to end: the real gateway binary over TLS in front of the in-process
//! development platform, driven with the request sequences Microsoft Entra ID and Okta send, with
//! the platform's state checked after every step through its native API. Also: the same
//! operation through SCIM 1.1 and 2.0 leaves the same platform state, and the RFC 7643/7644
//! protocol surface (discovery, ETags, projection, filters, search, Bulk, errors).

mod common;

use common::dev_env::{DevEnv, DevEnvSpec, TOKEN};
use common::scim::{enc, group_id_of, id_of, Scim, ScimResp, Version};
use scimgate::platform::{Member, Platform};
use scimgate::tag::Tag;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// 32 characters, as a real deployment's token would be.
const BASE2: &str = "/Thingworx/SCIMProvider/SCIM/v2";

const CORE1: &str = "urn:scim:schemas:core:1.0";
const ENTERPRISE1: &str = "urn:scim:schemas:extension:enterprise:1.0";

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
const ENTRA_GROUP: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

const DEFAULTS: &str = r#"
[provisioning.user_defaults]
description = "Provisioned by SCIM"
project = "SCIMProject"
home_mashup = "SCIMHome"
mobile_mashup = "SCIMMobile"
tags = ["Applications:SCIM"]

[provisioning.group_defaults]
description = "Provisioned SCIM group"
project = "SCIMGroups"
tags = ["Applications:SCIM"]
"#;

/// The enterprise department and employee number stored in two of the platform's extension
/// properties (the development platform only has the `UserExtensions` set).
const MAPPING: &str = r#"
[provisioning.user_attributes]
"enterprise.department" = "city"
"addresses.work.locality" = ""
"enterprise.employeeNumber" = "state"
"addresses.work.region" = ""
"#;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

impl ScimResp {
    fn assert_scim_json(&self, what: &str) {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/scim+json"),
            "{what}: content-type {ct:?}, expected application/scim+json: {self}"
        );
    }

    /// Asserts a SCIM 2.0 error: the status, `application/scim+json`, the Error schema, `status`
    /// as a string, a `detail`, and `scimType` when one is given.
    fn assert_error(&self, status: u16, scim_type: Option<&str>, what: &str) {
        assert_eq!(self.status, status, "{what}: {self}");
        self.assert_error_shape(what);
        if let Some(t) = scim_type {
            assert_eq!(self.body["scimType"], json!(t), "{what}: scimType: {self}");
        }
    }

    fn assert_error_shape(&self, what: &str) {
        self.assert_scim_json(what);
        assert!(
            has_schema(&self.body, ERROR),
            "{what}: no 2.0 Error schema: {self}"
        );
        assert_eq!(
            self.body["status"],
            json!(self.status.to_string()),
            "{what}: status must be the code as a string: {self}"
        );
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: no detail: {self}"
        );
        assert!(
            !self.text.to_lowercase().contains("<html"),
            "{what}: {self}"
        );
    }

    /// Asserts a 200 ListResponse and returns its `Resources`.
    fn list(&self, what: &str) -> Vec<Value> {
        assert_eq!(self.status, 200, "{what}: {self}");
        self.assert_scim_json(what);
        assert!(
            has_schema(&self.body, LIST),
            "{what}: not a ListResponse: {self}"
        );
        for k in ["totalResults", "startIndex", "itemsPerPage"] {
            assert!(
                self.body[k].is_u64(),
                "{what}: {k} must be an integer: {self}"
            );
        }
        let resources = self.body["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{what}: no Resources array: {self}"));
        assert_eq!(
            self.body["itemsPerPage"],
            json!(resources.len()),
            "{what}: itemsPerPage vs Resources: {self}"
        );
        resources
    }

    fn total(&self) -> u64 {
        self.body["totalResults"]
            .as_u64()
            .unwrap_or_else(|| panic!("no totalResults: {self}"))
    }

    /// Asserts a User/Group resource: content type, schema, `id`, `meta.resourceType`,
    /// `meta.location` and `meta.version` equal to the `ETag` header (weak).
    fn assert_resource(&self, s: &Scim, kind: &str, what: &str) {
        self.assert_scim_json(what);
        let id = self.id();
        assert!(!id.is_empty(), "{what}: empty id");
        let schema = if kind == "User" { USER } else { GROUP };
        assert!(
            has_schema(&self.body, schema),
            "{what}: schemas lack {schema}: {self}"
        );
        let meta = &self.body["meta"];
        assert_eq!(meta["resourceType"], json!(kind), "{what}: {self}");
        assert_eq!(
            meta["location"],
            json!(format!("{}{BASE2}/{kind}s/{id}", s.origin())),
            "{what}: meta.location: {self}"
        );
        let version = meta["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no meta.version: {self}"));
        assert!(
            version.starts_with("W/\"") && version.ends_with('"'),
            "{what}: meta.version {version:?} is not a weak ETag"
        );
        assert_eq!(
            self.header("etag").as_deref(),
            Some(version),
            "{what}: ETag header vs meta.version: {self}"
        );
        assert!(self.body.get("password").is_none(), "{what}: {self}");
    }

    fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or_else(|| panic!("no ETag header: {self}"))
    }
}

fn has_schema(body: &Value, urn: &str) -> bool {
    body["schemas"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(urn)))
}

impl Scim {
    /// An authenticated SCIM 2.0 call with extra headers; `rel` is relative to the 2.0 base.
    async fn call_with(
        &self,
        method: &str,
        rel: &str,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> ScimResp {
        let auth = format!("Bearer {TOKEN}");
        self.call_as(&auth, Version::V2, method, rel, extra, body)
            .await
    }

    /// An authenticated SCIM 2.0 call (`application/scim+json`).
    async fn call(&self, method: &str, rel: &str, body: Option<Value>) -> ScimResp {
        self.call_with(method, rel, &[], body).await
    }

    /// An authenticated SCIM 1.1 call; `rel` is relative to the 1.1 base.
    async fn call_v1(&self, method: &str, rel: &str, body: Option<Value>) -> ScimResp {
        let auth = format!("Bearer {TOKEN}");
        self.call_as(&auth, Version::V1, method, rel, &[], body)
            .await
    }

    async fn get(&self, rel: &str) -> ScimResp {
        self.call("GET", rel, None).await
    }

    /// `GET /Users?filter=...` (or `/Groups`) with the filter URL-encoded.
    async fn filter(&self, endpoint: &str, filter: &str) -> ScimResp {
        self.get(&format!("{endpoint}?filter={}", enc(filter)))
            .await
    }

    /// `PATCH` with a PatchOp body holding `ops`.
    async fn patch(&self, rel: &str, ops: Value) -> ScimResp {
        self.call(
            "PATCH",
            rel,
            Some(json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await
    }

    /// A PATCH that must answer 200 with the resource.
    async fn patch_ok(&self, rel: &str, ops: Value, kind: &str) -> ScimResp {
        let what = format!("PATCH {rel} {ops}");
        let r = self.patch(rel, ops).await;
        assert_eq!(r.status, 200, "{what}: {r}");
        r.assert_resource(self, kind, &what);
        r
    }

    /// Creates a user through 2.0 and returns its id, asserting the 201.
    async fn create_user(&self, body: Value) -> String {
        let r = self.call("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 201, "POST /v2/Users: {r}");
        r.assert_resource(self, "User", "POST /v2/Users");
        r.id()
    }

    /// A schema document from `/Schemas/{urn}`.
    async fn schema(&self, urn: &str) -> Value {
        let r = self.get(&format!("/Schemas/{urn}")).await;
        assert_eq!(r.status, 200, "GET /Schemas/{urn}: {r}");
        r.body
    }
}

/// A random version-4 GUID, as Entra ID's connection test sends.
fn random_guid() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether a schema document advertises `path` (`title`, `name.givenName`).
fn advertised(schema: &Value, path: &str) -> bool {
    let (top, sub) = match path.split_once('.') {
        Some((t, s)) => (t, Some(s)),
        None => (path, None),
    };
    let named = |list: &Value, name: &str| -> Option<Value> {
        list.as_array()?
            .iter()
            .find(|a| {
                a["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .cloned()
    };
    match named(&schema["attributes"], top) {
        None => false,
        Some(attr) => match sub {
            None => true,
            Some(sub) => named(&attr["subAttributes"], sub).is_some(),
        },
    }
}

/// Entra ID's user create body.
fn entra_user(user_name: &str, external_id: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "externalId": external_id,
        "userName": user_name,
        "active": "True",
        "displayName": format!("{given} {family}"),
        "meta": {"resourceType": "User"},
        "name": {"formatted": format!("{given} {family}"), "familyName": family, "givenName": given},
        "roles": [],
    })
}

/// A plain 2.0 user body.
fn user2(user_name: &str, given: &str, family: &str, email: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    })
}

/// `userName`s of a listing, sorted.
fn user_names(resources: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = resources
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or("<none>").to_string())
        .collect();
    v.sort();
    v
}

fn work_email(user: &Value) -> Option<String> {
    user["emails"].as_array().and_then(|a| {
        a.iter()
            .find(|e| e["type"] == json!("work"))
            .and_then(|e| e["value"].as_str().map(str::to_string))
    })
}

fn member_values(group: &Value) -> Vec<String> {
    let mut v: Vec<String> = group["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The development platform, the gateway in front of it, a SCIM client and a native client.
type Env = DevEnv;

/// `provisioning`: keys of `[provisioning]` followed by any of its sub-tables.
async fn setup(provisioning: &str) -> Env {
    DevEnv::start(DevEnvSpec {
        provisioning,
        ..Default::default()
    })
    .await
}

impl Env {
    async fn enabled(&self, name: &str) -> bool {
        self.tw.is_user_enabled(name).await.unwrap()
    }

    /// Asserts extension properties; an expected `""` also accepts an absent property.
    /// "scimExternalId" stands for the externalId, kept as the term of the user's
    /// `SCIMExternalId` tag on a stock platform.
    async fn assert_ext(&self, name: &str, expected: &[(&str, &str)], what: &str) {
        let ext = self.ext(name).await;
        for (k, v) in expected {
            assert_eq!(
                ext.get(*k).map(String::as_str).unwrap_or(""),
                *v,
                "{what}: platform extension property {k} of {name} in {ext:?}"
            );
        }
    }

    /// Everything the gateway manages about a user on the platform, field by field; group
    /// names are lower-cased and renamed through `renames` so two users can be compared.
    async fn native_state(&self, name: &str, renames: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let user = self.tw.get_user(name).await.unwrap();
        out.insert("description".into(), user.description);
        out.insert("project".into(), user.project);
        out.insert("home_mashup".into(), user.home_mashup);
        out.insert("mobile_mashup".into(), user.mobile_mashup);
        // The externalId tag differs by design between the two users compared.
        let tags: Vec<Tag> = user
            .tags
            .into_iter()
            .filter(|t| t.vocabulary != "SCIMExternalId")
            .collect();
        out.insert("tags".into(), Tag::join(&tags));
        out.insert("enabled".into(), self.enabled(name).await.to_string());
        for (k, v) in self.tw.user_extensions(name).await.unwrap() {
            if k != "scimExternalId" && !v.is_empty() {
                out.insert(format!("extension.{k}"), v);
            }
        }
        let mut groups: Vec<String> = self
            .tw
            .user_groups(name)
            .await
            .unwrap()
            .into_iter()
            .map(|g| {
                let g = g.name.to_lowercase();
                renames
                    .iter()
                    .find(|(from, _)| from.eq_ignore_ascii_case(&g))
                    .map(|(_, to)| to.to_string())
                    .unwrap_or(g)
            })
            .collect();
        groups.sort();
        out.insert("groups".into(), groups.join(","));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Entra ID provisioning cycle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn entra_id_provisioning_cycle() {
    let env = setup(&format!("deprovision = \"delete\"\n{DEFAULTS}{MAPPING}")).await;
    let s = &env.scim;
    let user_schema = s.schema(USER).await;
    let ent_schema = s.schema(ENTERPRISE).await;

    // Test Connection: a random GUID as user and group probes, 200 with an empty list.
    for (rel, what) in [
        (
            format!(
                "/Users?filter={}",
                enc(&format!("userName eq \"{}\"", random_guid()))
            ),
            "user probe (userName)",
        ),
        (
            format!(
                "/Users?filter={}",
                enc(&format!("externalId eq \"{}\"", random_guid()))
            ),
            "user probe (externalId)",
        ),
        (
            format!(
                "/Groups?excludedAttributes=members&filter={}",
                enc(&format!("displayName eq \"{}\"", random_guid()))
            ),
            "group probe",
        ),
    ] {
        let r = s.get(&rel).await;
        let res = r.list(what);
        assert_eq!(r.total(), 0, "{what}: {r}");
        assert!(res.is_empty(), "{what}: {r}");
    }

    // Create, Entra-shaped.
    let name = "Grace.Hopper@contoso.com";
    let ext_id = random_guid();
    let mut body = entra_user(name, &ext_id, "Grace", "Hopper");
    body["title"] = json!("Rear Admiral");
    body["emails"] =
        json!([{"primary": true, "type": "work", "value": "grace.hopper@contoso.com"}]);
    body[ENTERPRISE] = json!({"department": "Navy Research", "employeeNumber": "1906"});
    let r = s.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "POST /v2/Users (Entra): {r}");
    r.assert_resource(s, "User", "POST /v2/Users");
    let id = r.id();
    assert_eq!(id, id_of(name), "id derivation: {r}");
    assert_eq!(
        r.header("location").as_deref(),
        r.body["meta"]["location"].as_str(),
        "Location header vs meta.location: {r}"
    );
    let u = &r.body;
    assert_eq!(u["userName"], json!(name), "{r}");
    assert_eq!(u["externalId"], json!(ext_id), "{r}");
    assert_eq!(
        u["active"],
        json!(true),
        "active must come back a boolean: {r}"
    );
    for (path, value) in [
        ("name.givenName", json!("Grace")),
        ("name.familyName", json!("Hopper")),
        ("displayName", json!("Grace Hopper")),
        ("title", json!("Rear Admiral")),
    ] {
        if advertised(&user_schema, path) {
            let got = match path.split_once('.') {
                Some((a, b)) => &u[a][b],
                None => &u[path],
            };
            assert_eq!(got, &value, "{path} after create: {r}");
        }
    }
    if advertised(&user_schema, "emails") {
        assert_eq!(
            work_email(u).as_deref(),
            Some("grace.hopper@contoso.com"),
            "{r}"
        );
    }
    for (attr, value) in [("department", "Navy Research"), ("employeeNumber", "1906")] {
        if advertised(&ent_schema, attr) {
            assert_eq!(
                u[ENTERPRISE][attr],
                json!(value),
                "{attr} after create: {r}"
            );
        }
    }

    // Platform: user, mapped properties, enabled, defaults.
    assert!(env.user_exists(name).await, "user not on the platform");
    env.assert_ext(
        name,
        &[
            ("firstName", "Grace"),
            ("lastName", "Hopper"),
            ("fullName", "Grace Hopper"),
            ("title", "Rear Admiral"),
            ("emailAddress", "grace.hopper@contoso.com"),
            ("scimExternalId", &ext_id),
            ("city", "Navy Research"),
            ("state", "1906"),
        ],
        "after create",
    )
    .await;
    assert!(env.enabled(name).await, "created enabled");
    let user = env.tw.get_user(name).await.unwrap();
    assert_eq!(user.description, "Provisioned by SCIM");
    assert_eq!(user.project, "SCIMProject");
    assert_eq!(user.home_mashup, "SCIMHome");
    // The default tag, and the externalId as a term of the dynamic SCIMExternalId vocabulary.
    assert_eq!(
        user.tags,
        vec![
            Tag::parse("Applications:SCIM").unwrap(),
            Tag::parse(&format!("SCIMExternalId:{ext_id}")).unwrap()
        ]
    );

    // Matching, by each of Entra's matching attributes.
    for filter in [
        format!("userName eq \"{name}\""),
        format!("externalId eq \"{ext_id}\""),
        "emails[type eq \"work\"].value eq \"grace.hopper@contoso.com\"".to_string(),
    ] {
        let r = s.filter("/Users", &filter).await;
        let res = r.list(&filter);
        assert_eq!(r.total(), 1, "{filter}: {r}");
        assert_eq!(res[0]["id"], json!(id), "{filter}: {r}");
    }

    let rel = format!("/Users/{id}");

    // Capitalised ops, sub-attribute path.
    let r = s
        .patch_ok(
            &rel,
            json!([
                {"op": "Replace", "path": "displayName", "value": "Amazing Grace"},
                {"op": "Replace", "path": "name.familyName", "value": "Hopper-Murray"}
            ]),
            "User",
        )
        .await;
    env.assert_ext(
        name,
        &[
            ("fullName", "Amazing Grace"),
            ("lastName", "Hopper-Murray"),
            ("firstName", "Grace"),
            ("title", "Rear Admiral"),
        ],
        "after Replace displayName/name.familyName",
    )
    .await;
    if advertised(&user_schema, "displayName") {
        assert_eq!(r.body["displayName"], json!("Amazing Grace"), "{r}");
    }

    // Add on a single-valued attribute that already has a value.
    let r = s
        .patch_ok(
            &rel,
            json!([{"op": "Add", "path": "title", "value": "Commodore"}]),
            "User",
        )
        .await;
    env.assert_ext(name, &[("title", "Commodore")], "after Add title")
        .await;
    if advertised(&user_schema, "title") {
        assert_eq!(r.body["title"], json!("Commodore"), "{r}");
    }

    // Path-less replace with dotted keys and full extension URNs.
    let r = s
        .patch_ok(
            &rel,
            json!([{"op": "Replace", "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                (format!("{ENTERPRISE}:employeeNumber")): "Aklq",
                (format!("{ENTERPRISE}:department")): "Fleet"
            }}]),
            "User",
        )
        .await;
    env.assert_ext(
        name,
        &[
            ("fullName", "Bjfe"),
            ("firstName", "Kkom"),
            ("lastName", "Unua"),
            ("state", "Aklq"),
            ("city", "Fleet"),
            ("title", "Commodore"),
            ("emailAddress", "grace.hopper@contoso.com"),
        ],
        "after path-less dotted/URN replace",
    )
    .await;
    if advertised(&user_schema, "name.givenName") {
        assert_eq!(r.body["name"]["givenName"], json!("Kkom"), "{r}");
    }
    if advertised(&ent_schema, "employeeNumber") {
        assert_eq!(r.body[ENTERPRISE]["employeeNumber"], json!("Aklq"), "{r}");
    }

    // Value-path replace of the work email.
    let r = s
        .patch_ok(
            &rel,
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value",
                    "value": "grace@navy.example"}]),
            "User",
        )
        .await;
    env.assert_ext(
        name,
        &[("emailAddress", "grace@navy.example"), ("fullName", "Bjfe")],
        "after emails[type eq \"work\"].value Replace",
    )
    .await;
    if advertised(&user_schema, "emails") {
        assert_eq!(
            work_email(&r.body).as_deref(),
            Some("grace@navy.example"),
            "{r}"
        );
    }

    // Value-path add (and replace) on users without any email: the element is created.
    for (op, who, email) in [
        ("Add", "Ada.Lovelace@contoso.com", "ada@contoso.com"),
        ("Replace", "Alan.Turing@contoso.com", "alan@contoso.com"),
    ] {
        let (given, family) = who.split_once('@').unwrap().0.split_once('.').unwrap();
        let r = s
            .call(
                "POST",
                "/Users",
                Some(entra_user(who, &random_guid(), given, family)),
            )
            .await;
        assert_eq!(r.status, 201, "POST {who}: {r}");
        env.assert_ext(who, &[("emailAddress", "")], "created without email")
            .await;
        let r = s
            .patch_ok(
                &format!("/Users/{}", r.id()),
                json!([{"op": op, "path": "emails[type eq \"work\"].value", "value": email}]),
                "User",
            )
            .await;
        env.assert_ext(
            who,
            &[("emailAddress", email), ("firstName", given)],
            &format!("after {op} emails[type eq \"work\"].value on a user without email"),
        )
        .await;
        if advertised(&user_schema, "emails") {
            assert_eq!(work_email(&r.body).as_deref(), Some(email), "{r}");
        }
    }

    // Soft delete: a string boolean, capitalised op.
    let r = s
        .patch_ok(
            &rel,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            "User",
        )
        .await;
    assert_eq!(r.body["active"], json!(false), "{r}");
    assert!(!env.enabled(name).await, "soft delete did not disable");
    assert!(env.user_exists(name).await, "soft delete removed the user");
    env.assert_ext(
        name,
        &[("fullName", "Bjfe"), ("emailAddress", "grace@navy.example")],
        "after soft delete",
    )
    .await;
    let r = s.get(&rel).await;
    assert_eq!(r.status, 200, "GET of a disabled user: {r}");
    r.assert_resource(s, "User", "GET disabled user");
    assert_eq!(r.body["active"], json!(false), "{r}");
    for filter in [
        format!("userName eq \"{name}\""),
        format!("externalId eq \"{ext_id}\""),
    ] {
        let r = s.filter("/Users", &filter).await;
        let res = r.list(&filter);
        assert_eq!(r.total(), 1, "disabled user by {filter}: {r}");
        assert_eq!(res[0]["active"], json!(false), "{r}");
    }
    // Re-enabled with Add and "True", disabled again with a lower-case string.
    s.patch_ok(
        &rel,
        json!([{"op": "Add", "path": "active", "value": "True"}]),
        "User",
    )
    .await;
    assert!(
        env.enabled(name).await,
        "Add active \"True\" did not enable"
    );
    s.patch_ok(
        &rel,
        json!([{"op": "replace", "path": "active", "value": "false"}]),
        "User",
    )
    .await;
    assert!(!env.enabled(name).await, "replace active \"false\"");

    // Hard delete.
    let r = s.call("DELETE", &rel, None).await;
    assert_eq!(r.status, 204, "DELETE /v2/Users/{id}: {r}");
    assert!(r.text.is_empty(), "204 with a body: {r}");
    assert!(!env.user_exists(name).await, "hard delete left the user");
    s.get(&rel)
        .await
        .assert_error(404, None, "GET after DELETE");
    let r = s.filter("/Users", &format!("userName eq \"{name}\"")).await;
    r.list("filter after DELETE");
    assert_eq!(r.total(), 0, "{r}");

    // Groups.
    let ada = id_of("Ada.Lovelace@contoso.com");
    let alan = id_of("Alan.Turing@contoso.com");
    let match_rel = format!(
        "/Groups?excludedAttributes=members&filter={}",
        enc("displayName eq \"Entra Group\"")
    );
    let r = s.get(&match_rel).await;
    assert!(r.list("group match before create").is_empty(), "{r}");
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({
                "schemas": [GROUP, ENTRA_GROUP],
                "externalId": random_guid(),
                "displayName": "Entra Group",
                "meta": {"resourceType": "Group"},
            })),
        )
        .await;
    assert_eq!(r.status, 201, "POST /v2/Groups without members: {r}");
    r.assert_resource(s, "Group", "POST /v2/Groups");
    assert_eq!(
        r.header("location").as_deref(),
        r.body["meta"]["location"].as_str(),
        "{r}"
    );
    let gid = r.id();
    assert!(env.group_exists("Entra Group").await);
    assert_eq!(
        env.tw.get_group("Entra Group").await.unwrap().description,
        "Provisioned SCIM group"
    );
    assert!(env.members("Entra Group").await.is_empty());
    let r = s.get(&match_rel).await;
    let res = r.list("group match after create");
    assert_eq!(res.len(), 1, "{r}");
    assert_eq!(res[0]["id"], json!(gid), "{r}");
    assert!(res[0].get("members").is_none(), "members not excluded: {r}");
    let r = s
        .get(&format!("/Groups/{gid}?excludedAttributes=members"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.get("members").is_none(), "members not excluded: {r}");

    let grel = format!("/Groups/{gid}");
    let r = s
        .patch_ok(
            &grel,
            json!([{"op": "Add", "path": "members", "value": [
                {"$ref": null, "value": ada},
                {"$ref": null, "value": alan}
            ]}]),
            "Group",
        )
        .await;
    let mut both = vec![ada.clone(), alan.clone()];
    both.sort();
    assert_eq!(member_values(&r.body), both, "{r}");
    assert_eq!(
        env.members("Entra Group").await,
        [
            "User:ada.lovelace@contoso.com",
            "User:alan.turing@contoso.com"
        ],
        "after Add members"
    );

    let r = s
        .patch_ok(
            &grel,
            json!([{"op": "Remove", "path": "members", "value": [{"value": ada}]}]),
            "Group",
        )
        .await;
    assert_eq!(member_values(&r.body), [alan.as_str()], "{r}");
    assert_eq!(
        env.members("Entra Group").await,
        ["User:alan.turing@contoso.com"],
        "Remove members with a value list must remove only those"
    );

    s.patch_ok(
        &grel,
        json!([{"op": "add", "path": "members", "value": [{"value": ada}]}]),
        "Group",
    )
    .await;
    assert_eq!(env.members("Entra Group").await.len(), 2);
    let r = s
        .patch_ok(
            &grel,
            json!([{"op": "Remove", "path": format!("members[value eq \"{alan}\"]")}]),
            "Group",
        )
        .await;
    assert_eq!(member_values(&r.body), [ada.as_str()], "{r}");
    assert_eq!(
        env.members("Entra Group").await,
        ["User:ada.lovelace@contoso.com"],
        "after members[value eq ...] remove"
    );

    let r = s.call("DELETE", &grel, None).await;
    assert_eq!(r.status, 204, "DELETE /v2/Groups/{gid}: {r}");
    assert!(!env.group_exists("Entra Group").await);
    assert!(env.user_exists("Ada.Lovelace@contoso.com").await);
    assert!(env.user_exists("Alan.Turing@contoso.com").await);
}

// ---------------------------------------------------------------------------------------------
// 2. Okta cycle
// ---------------------------------------------------------------------------------------------

fn okta_user(login: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": login,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "value": login, "type": "work"}],
        "displayName": format!("{given} {family}"),
        "locale": "en-US",
        "externalId": format!("00u{}", &random_guid()[..8]),
        "groups": [],
        "password": "Okta-Generated-Pa55word!",
        "active": true,
    })
}

#[tokio::test]
async fn okta_provisioning_cycle() {
    let env = setup(&format!("deprovision = \"disable\"\n{DEFAULTS}")).await;
    let s = &env.scim;

    // Okta's setup calls.
    let r = s.get("/Users?startIndex=1&count=2").await;
    assert!(r.list("GET /Users?startIndex=1&count=2 (empty)").is_empty());
    assert_eq!(r.total(), 0, "{r}");
    assert_eq!(r.body["startIndex"], json!(1), "{r}");
    let r = s.get("/Groups?startIndex=1&count=100").await;
    assert!(r.list("GET /Groups?startIndex=1&count=100").is_empty());

    for (login, given) in [
        ("okta.a@corp.com", "A"),
        ("okta.b@corp.com", "B"),
        ("okta.c@corp.com", "C"),
    ] {
        s.create_user(okta_user(login, given, "Seed")).await;
    }

    // Match, then create.
    let login = "okta.user@corp.com";
    let r = s
        .get(&format!(
            "/Users?filter={}&startIndex=1&count=100",
            enc(&format!("userName eq \"{login}\""))
        ))
        .await;
    r.list("Okta match");
    assert_eq!(r.total(), 0, "{r}");
    let r = s
        .call("POST", "/Users", Some(okta_user(login, "Okta", "User")))
        .await;
    assert_eq!(r.status, 201, "POST /v2/Users (Okta): {r}");
    r.assert_resource(s, "User", "Okta create");
    assert_eq!(r.body["userName"], json!(login), "{r}");
    assert_eq!(r.body["active"], json!(true), "{r}");
    let id = r.id();
    env.assert_ext(
        login,
        &[
            ("firstName", "Okta"),
            ("lastName", "User"),
            ("emailAddress", login),
        ],
        "after Okta create",
    )
    .await;
    assert!(env.enabled(login).await);

    // Paging.
    let page = |start: u64| format!("/Users?startIndex={start}&count=2");
    let r1 = s.get(&page(1)).await;
    let p1 = r1.list("page 1");
    assert_eq!(r1.total(), 4, "{r1}");
    assert_eq!(r1.body["startIndex"], json!(1), "{r1}");
    assert_eq!(p1.len(), 2, "{r1}");
    let r2 = s.get(&page(3)).await;
    let p2 = r2.list("page 2");
    assert_eq!(r2.total(), 4, "{r2}");
    assert_eq!(r2.body["startIndex"], json!(3), "{r2}");
    assert_eq!(p2.len(), 2, "{r2}");
    let r3 = s.get(&page(5)).await;
    assert!(r3.list("page 3").is_empty(), "{r3}");
    let ids: BTreeSet<String> = p1
        .iter()
        .chain(&p2)
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4, "pages overlap: {r1} / {r2}");
    assert!(ids.contains(&id));
    let again = s.get(&page(1)).await.list("page 1 again");
    assert_eq!(again, p1, "paging order is not stable");

    // Update by PUT, with the full object Okta sends (id, meta, groups included).
    let mut put = okta_user(login, "Okta", "User");
    put["id"] = json!(id);
    put["meta"] = json!({"resourceType": "User"});
    put["title"] = json!("Support");
    put["name"]["familyName"] = json!("Userson");
    let r = s.call("PUT", &format!("/Users/{id}"), Some(put)).await;
    assert_eq!(r.status, 200, "Okta PUT: {r}");
    r.assert_resource(s, "User", "Okta PUT");
    env.assert_ext(
        login,
        &[
            ("title", "Support"),
            ("lastName", "Userson"),
            ("firstName", "Okta"),
            ("emailAddress", login),
        ],
        "after Okta PUT",
    )
    .await;

    // Deactivate and reactivate.
    let rel = format!("/Users/{id}");
    for active in [false, true] {
        let r = s
            .patch_ok(
                &rel,
                json!([{"op": "replace", "value": {"active": active}}]),
                "User",
            )
            .await;
        assert_eq!(r.body["active"], json!(active), "{r}");
        assert_eq!(env.enabled(login).await, active, "after active:{active}");
        assert!(env.user_exists(login).await);
    }

    // A group with members; Administrator added natively; replace members with [].
    let (a, b) = (id_of("okta.a@corp.com"), id_of("okta.b@corp.com"));
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Okta Engineers",
                        "members": [{"value": id}, {"value": a}]})),
        )
        .await;
    assert_eq!(r.status, 201, "POST /v2/Groups with members: {r}");
    r.assert_resource(s, "Group", "Okta group create");
    let gid = r.id();
    assert_eq!(
        env.members("Okta Engineers").await,
        ["User:okta.a@corp.com", "User:okta.user@corp.com"]
    );
    env.tw
        .add_group_member("Okta Engineers", &Member::user("Administrator"))
        .await
        .unwrap();
    let r = s.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.status, 200, "{r}");
    let mut expected = vec![a.clone(), id.clone()];
    expected.sort();
    assert_eq!(
        member_values(&r.body),
        expected,
        "excluded member listed: {r}"
    );

    let grel = format!("/Groups/{gid}");
    let r = s
        .patch_ok(
            &grel,
            json!([{"op": "replace", "path": "members", "value": []}]),
            "Group",
        )
        .await;
    assert!(member_values(&r.body).is_empty(), "{r}");
    assert_eq!(
        env.members("Okta Engineers").await,
        ["User:administrator"],
        "replace members [] must empty the group of provisioned users only"
    );
    assert!(env.user_exists("Administrator").await);
    assert!(env.enabled("Administrator").await);

    // Full sync to a list keeps the hidden member too.
    let r = s
        .patch_ok(
            &grel,
            json!([{"op": "replace", "path": "members", "value": [{"value": b}]}]),
            "Group",
        )
        .await;
    assert_eq!(member_values(&r.body), [b.as_str()], "{r}");
    assert_eq!(
        env.members("Okta Engineers").await,
        ["User:administrator", "User:okta.b@corp.com"],
        "replace members [b]"
    );

    // deprovision = "disable": a DELETE keeps the user, disabled.
    let r = s.call("DELETE", &rel, None).await;
    assert_eq!(r.status, 204, "DELETE with deprovision = disable: {r}");
    assert!(
        env.user_exists(login).await,
        "deprovision = disable deleted"
    );
    assert!(!env.enabled(login).await);
}

// ---------------------------------------------------------------------------------------------
// 3. The same operation through 1.1 and 2.0 leaves the same platform state
// ---------------------------------------------------------------------------------------------

async fn assert_same_state(env: &Env, a: &str, b: &str, renames: &[(&str, &str)], step: &str) {
    let sa = env.native_state(a, renames).await;
    let sb = env.native_state(b, renames).await;
    let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    let mut diffs = Vec::new();
    for k in keys {
        if sa.get(k) != sb.get(k) {
            diffs.push(format!("{k}: 1.1 {:?} vs 2.0 {:?}", sa.get(k), sb.get(k)));
        }
    }
    assert!(
        diffs.is_empty(),
        "{step}: platform state differs between 1.1 ({a}) and 2.0 ({b}):\n{}",
        diffs.join("\n")
    );
}

#[tokio::test]
async fn v1_and_v2_leave_the_same_platform_state() {
    let env = setup(&format!("{DEFAULTS}{MAPPING}")).await;
    let s = &env.scim;
    let (a, b) = ("parity-a@corp.com", "parity-b@corp.com");
    let renames = [("team a", "team"), ("team b", "team")];

    // Create.
    let data = |user_name: &str, ext: &str| {
        json!({
            "userName": user_name,
            "externalId": ext,
            "name": {"givenName": "Sam", "familyName": "Same"},
            "displayName": "Sam Same",
            "title": "Analyst",
            "emails": [{"value": "sam@corp.com", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "+1 555 0101", "type": "work"}],
            "active": true,
        })
    };
    let mut body1 = data(a, "ext-a");
    body1["schemas"] = json!([CORE1, ENTERPRISE1]);
    body1[ENTERPRISE1] = json!({"department": "Finance", "employeeNumber": "E-7"});
    let r = s.call_v1("POST", "/Users", Some(body1)).await;
    assert_eq!(r.status, 201, "1.1 POST: {r}");
    let ida = r.id();
    let mut body2 = data(b, "ext-b");
    body2["schemas"] = json!([USER, ENTERPRISE]);
    body2[ENTERPRISE] = json!({"department": "Finance", "employeeNumber": "E-7"});
    let idb = s.create_user(body2).await;
    env.assert_ext(
        a,
        &[("scimExternalId", "ext-a"), ("city", "Finance")],
        "1.1",
    )
    .await;
    env.assert_ext(
        b,
        &[("scimExternalId", "ext-b"), ("city", "Finance")],
        "2.0",
    )
    .await;
    assert_same_state(&env, a, b, &renames, "create").await;

    // Update title and name: 1.1 partial PATCH vs 2.0 PatchOp.
    let r = s
        .call_v1(
            "PATCH",
            &format!("/Users/{ida}"),
            Some(json!({"schemas": [CORE1], "title": "Manager",
                        "name": {"givenName": "Samuel", "familyName": "Sameson"}})),
        )
        .await;
    assert_eq!(r.status, 200, "1.1 PATCH: {r}");
    s.patch_ok(
        &format!("/Users/{idb}"),
        json!([
            {"op": "replace", "path": "title", "value": "Manager"},
            {"op": "replace", "path": "name.givenName", "value": "Samuel"},
            {"op": "replace", "path": "name.familyName", "value": "Sameson"}
        ]),
        "User",
    )
    .await;
    env.assert_ext(b, &[("title", "Manager"), ("lastName", "Sameson")], "2.0")
        .await;
    assert_same_state(&env, a, b, &renames, "update by PATCH").await;

    // Update by PUT with the whole object.
    let put = |user_name: &str, ext: &str| {
        let mut v = data(user_name, ext);
        v["title"] = json!("Director");
        v["name"] = json!({"givenName": "Samantha", "familyName": "Same"});
        v
    };
    let mut put1 = put(a, "ext-a");
    put1["schemas"] = json!([CORE1, ENTERPRISE1]);
    put1[ENTERPRISE1] = json!({"department": "Audit", "employeeNumber": "E-7"});
    let r = s.call_v1("PUT", &format!("/Users/{ida}"), Some(put1)).await;
    assert_eq!(r.status, 200, "1.1 PUT: {r}");
    let mut put2 = put(b, "ext-b");
    put2["schemas"] = json!([USER, ENTERPRISE]);
    put2[ENTERPRISE] = json!({"department": "Audit", "employeeNumber": "E-7"});
    let r = s.call("PUT", &format!("/Users/{idb}"), Some(put2)).await;
    assert_eq!(r.status, 200, "2.0 PUT: {r}");
    env.assert_ext(b, &[("title", "Director"), ("city", "Audit")], "2.0 PUT")
        .await;
    assert_same_state(&env, a, b, &renames, "update by PUT").await;

    // Disable, then enable again.
    for active in [false, true] {
        let r = s
            .call_v1(
                "PATCH",
                &format!("/Users/{ida}"),
                Some(json!({"schemas": [CORE1], "active": active})),
            )
            .await;
        assert_eq!(r.status, 200, "1.1 PATCH active:{active}: {r}");
        s.patch_ok(
            &format!("/Users/{idb}"),
            json!([{"op": "replace", "path": "active", "value": active}]),
            "User",
        )
        .await;
        assert_eq!(env.enabled(b).await, active);
        assert_same_state(&env, a, b, &renames, &format!("active:{active}")).await;
    }

    // Group membership: a group each, created with the user as a member.
    let r = s
        .call_v1(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE1], "displayName": "Team A",
                        "members": [{"value": ida}]})),
        )
        .await;
    assert_eq!(r.status, 201, "1.1 POST /Groups: {r}");
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Team B",
                        "members": [{"value": idb}]})),
        )
        .await;
    assert_eq!(r.status, 201, "2.0 POST /Groups: {r}");
    let (ga, gb) = (
        env.tw.get_group("Team A").await.unwrap(),
        env.tw.get_group("Team B").await.unwrap(),
    );
    assert_eq!(
        (&ga.description, &ga.project, &ga.home_mashup, &ga.tags),
        (&gb.description, &gb.project, &gb.home_mashup, &gb.tags),
        "groups created through 1.1 and 2.0 differ"
    );
    assert_eq!(env.members("Team A").await, [format!("User:{a}")]);
    assert_eq!(env.members("Team B").await, [format!("User:{b}")]);
    assert_same_state(&env, a, b, &renames, "group create with member").await;

    // A shared group: add each user through its version, then remove.
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Shared"})),
        )
        .await;
    assert_eq!(r.status, 201, "POST Shared: {r}");
    let shared = r.id();
    let r = s
        .call_v1(
            "PATCH",
            &format!("/Groups/{shared}"),
            Some(json!({"schemas": [CORE1], "members": [{"value": ida}]})),
        )
        .await;
    assert_eq!(r.status, 200, "1.1 PATCH add member: {r}");
    s.patch_ok(
        &format!("/Groups/{shared}"),
        json!([{"op": "add", "path": "members", "value": [{"value": idb}]}]),
        "Group",
    )
    .await;
    assert_eq!(
        env.members("Shared").await,
        [format!("User:{a}"), format!("User:{b}")]
    );
    assert_same_state(&env, a, b, &renames, "added to a group").await;
    let r = s
        .call_v1(
            "PATCH",
            &format!("/Groups/{shared}"),
            Some(json!({"schemas": [CORE1],
                        "members": [{"value": ida, "operation": "delete"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "1.1 PATCH remove member: {r}");
    s.patch_ok(
        &format!("/Groups/{shared}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{idb}\"]")}]),
        "Group",
    )
    .await;
    assert!(env.members("Shared").await.is_empty());
    assert_same_state(&env, a, b, &renames, "removed from a group").await;
}

// ---------------------------------------------------------------------------------------------
// 4. Protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn etags_if_match_and_if_none_match() {
    let env = setup(&format!("deprovision = \"delete\"\n{DEFAULTS}")).await;
    let s = &env.scim;
    let name = "etag@corp.com";
    let mut body = user2(name, "E", "Tag", name);
    body["title"] = json!("T1");
    let id = s.create_user(body).await;
    let rel = format!("/Users/{id}");

    let r = s.get(&rel).await;
    assert_eq!(r.status, 200, "{r}");
    r.assert_resource(s, "User", "GET");
    let v1 = r.etag();
    let r = s
        .call_with("GET", &rel, &[("if-none-match", &v1)], None)
        .await;
    assert_eq!(r.status, 304, "GET If-None-Match current ETag: {r}");
    assert!(r.text.is_empty(), "304 with a body: {r}");
    let r = s
        .call_with("GET", &rel, &[("if-none-match", "W/\"stale\"")], None)
        .await;
    assert_eq!(r.status, 200, "GET If-None-Match other ETag: {r}");

    let ops = |title: &str| {
        json!({"schemas": [PATCH_OP],
               "Operations": [{"op": "replace", "path": "title", "value": title}]})
    };
    let r = s
        .call_with("PATCH", &rel, &[("if-match", &v1)], Some(ops("T2")))
        .await;
    assert_eq!(r.status, 200, "PATCH If-Match current: {r}");
    r.assert_resource(s, "User", "PATCH If-Match current");
    let v2 = r.etag();
    assert_ne!(v1, v2, "the ETag did not change with the resource");
    env.assert_ext(name, &[("title", "T2")], "PATCH If-Match current")
        .await;

    let r = s
        .call_with("PATCH", &rel, &[("if-match", &v1)], Some(ops("T3")))
        .await;
    r.assert_error(412, None, "PATCH If-Match stale");
    let mut put = user2(name, "E", "Tag", name);
    put["title"] = json!("T3");
    let r = s
        .call_with("PUT", &rel, &[("if-match", &v1)], Some(put))
        .await;
    r.assert_error(412, None, "PUT If-Match stale");
    let r = s
        .call_with("DELETE", &rel, &[("if-match", &v1)], None)
        .await;
    r.assert_error(412, None, "DELETE If-Match stale");
    env.assert_ext(name, &[("title", "T2")], "after stale writes")
        .await;
    assert!(env.user_exists(name).await, "stale DELETE deleted");

    let r = s
        .call_with("GET", &rel, &[("if-none-match", &v2)], None)
        .await;
    assert_eq!(r.status, 304, "GET If-None-Match after PATCH: {r}");

    // Groups too.
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Tagged"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    r.assert_resource(s, "Group", "POST /Groups");
    let (gid, gv) = (r.id(), r.etag());
    let r = s
        .call_with(
            "GET",
            &format!("/Groups/{gid}"),
            &[("if-none-match", &gv)],
            None,
        )
        .await;
    assert_eq!(r.status, 304, "GET group If-None-Match: {r}");
    let r = s
        .call_with(
            "PATCH",
            &format!("/Groups/{gid}"),
            &[("if-match", "W/\"stale\"")],
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]})),
        )
        .await;
    r.assert_error(412, None, "group PATCH If-Match stale");
    assert!(env.members("Tagged").await.is_empty());

    let r = s
        .call_with("DELETE", &rel, &[("if-match", &v2)], None)
        .await;
    assert_eq!(r.status, 204, "DELETE If-Match current: {r}");
    assert!(!env.user_exists(name).await);
}

/// Fails on any `null` in a discovery document (Entra rejects them).
fn assert_no_nulls(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                assert_no_nulls(x, &format!("{at}[{i}]"));
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                assert_no_nulls(x, &format!("{at}.{k}"));
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn discovery_documents_and_method_errors() {
    let env = setup(&format!("{DEFAULTS}{MAPPING}")).await;
    let s = &env.scim;

    let r = s.get("/ServiceProviderConfig").await;
    assert_eq!(r.status, 200, "{r}");
    r.assert_scim_json("ServiceProviderConfig");
    assert!(has_schema(&r.body, SPC), "{r}");
    for feature in ["patch", "bulk", "filter", "etag"] {
        assert_eq!(
            r.body[feature]["supported"],
            json!(true),
            "{feature}.supported: {r}"
        );
    }
    for feature in ["changePassword", "sort"] {
        assert!(r.body[feature]["supported"].is_boolean(), "{feature}: {r}");
    }
    assert!(
        r.body["bulk"]["maxOperations"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{r}"
    );
    assert!(r.body["bulk"]["maxPayloadSize"].is_u64(), "{r}");
    assert!(r.body["filter"]["maxResults"].is_u64(), "{r}");
    let schemes = r.body["authenticationSchemes"]
        .as_array()
        .unwrap_or_else(|| panic!("no authenticationSchemes: {r}"));
    assert!(!schemes.is_empty(), "{r}");
    for sch in schemes {
        assert!(sch["type"].is_string() && sch["name"].is_string(), "{r}");
    }

    // ResourceTypes.
    let r = s.get("/ResourceTypes").await;
    let types = r.list("GET /ResourceTypes");
    let find = |id: &str| {
        types
            .iter()
            .find(|t| t["id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no ResourceType {id}: {r}"))
    };
    let user_type = find("User");
    assert_eq!(user_type["endpoint"], json!("/Users"), "{r}");
    assert_eq!(user_type["schema"], json!(USER), "{r}");
    assert!(
        user_type["schemaExtensions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["schema"] == json!(ENTERPRISE))),
        "the User type lacks the enterprise extension: {r}"
    );
    let group_type = find("Group");
    assert_eq!(group_type["endpoint"], json!("/Groups"), "{r}");
    assert_eq!(group_type["schema"], json!(GROUP), "{r}");
    for t in &types {
        assert!(has_schema(t, RESOURCE_TYPE), "{t}");
        let schema = t["schema"].as_str().unwrap();
        assert_eq!(
            s.get(&format!("/Schemas/{schema}")).await.status,
            200,
            "ResourceType schema {schema} not fetchable"
        );
    }
    for id in ["User", "Group"] {
        let r = s.get(&format!("/ResourceTypes/{id}")).await;
        assert_eq!(r.status, 200, "GET /ResourceTypes/{id}: {r}");
        r.assert_scim_json("ResourceType");
        assert_eq!(r.body["id"], json!(id), "{r}");
    }
    s.get("/ResourceTypes/Nope")
        .await
        .assert_error(404, None, "GET /ResourceTypes/Nope");

    // Schemas.
    let r = s.get("/Schemas").await;
    let schemas = r.list("GET /Schemas");
    assert_no_nulls(&r.body, "/Schemas");
    let ids: Vec<&str> = schemas.iter().filter_map(|x| x["id"].as_str()).collect();
    for urn in [USER, ENTERPRISE, GROUP, RESOURCE_TYPE, SPC, SCHEMA] {
        assert!(ids.contains(&urn), "/Schemas lacks {urn}: {ids:?}");
    }
    for id in &ids {
        let r = s.get(&format!("/Schemas/{id}")).await;
        assert_eq!(r.status, 200, "GET /Schemas/{id}: {r}");
        r.assert_scim_json("Schema");
        assert_eq!(r.body["id"], json!(id), "{r}");
        assert_no_nulls(&r.body, id);
        for a in r.body["attributes"].as_array().into_iter().flatten() {
            assert!(a["name"].is_string() && a["type"].is_string(), "{id}: {a}");
        }
    }
    let user_schema = s.schema(USER).await;
    for attr in [
        "userName",
        "name.givenName",
        "name.familyName",
        "active",
        "emails",
    ] {
        assert!(advertised(&user_schema, attr), "User schema lacks {attr}");
    }
    for attr in ["photos", "ims", "x509Certificates", "entitlements"] {
        assert!(
            !advertised(&user_schema, attr),
            "User schema advertises {attr}, which is not stored"
        );
    }
    let ent = s.schema(ENTERPRISE).await;
    for attr in ["department", "employeeNumber"] {
        assert!(advertised(&ent, attr), "mapped {attr} not advertised");
    }
    for attr in ["costCenter", "organization", "division"] {
        assert!(!advertised(&ent, attr), "unmapped {attr} advertised");
    }
    let group_schema = s.schema(GROUP).await;
    assert!(advertised(&group_schema, "displayName"));
    assert!(advertised(&group_schema, "members"));
    s.get("/Schemas/urn:example:nope")
        .await
        .assert_error(404, None, "GET /Schemas/<unknown>");

    // Writes on discovery endpoints.
    let user_schema_rel = format!("/Schemas/{USER}");
    for rel in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/ResourceTypes/User",
        "/Schemas",
        user_schema_rel.as_str(),
    ] {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let body = (method != "DELETE").then(|| json!({"schemas": [SCHEMA]}));
            s.call(method, rel, body)
                .await
                .assert_error(405, None, &format!("{method} {rel}"));
        }
    }

    // Unknown paths.
    let rel = format!("/{}", random_guid());
    s.get(&rel)
        .await
        .assert_error(404, None, &format!("GET {rel}"));
    s.call("POST", &rel, Some(json!({})))
        .await
        .assert_error(404, None, &format!("POST {rel}"));

    // Unknown query flags (Entra's tenant URL options) are ignored; application/json accepted.
    let r = s.get("/Users?aadOptscim062020").await;
    r.list("GET /Users?aadOptscim062020");
    let r = s
        .call_with(
            "POST",
            "/Users",
            &[("content-type", "application/json")],
            Some(user2("json@corp.com", "J", "Son", "json@corp.com")),
        )
        .await;
    assert_eq!(r.status, 201, "POST with application/json: {r}");
    r.assert_resource(s, "User", "POST with application/json");
}

#[tokio::test]
async fn projection_filters_and_search() {
    let env = setup(DEFAULTS).await;
    let s = &env.scim;
    for (name, email, title, active) in [
        ("alice", "alice@corp.com", "Engineer", true),
        ("bob", "bob@other.org", "Engineer", true),
        ("carol", "carol@corp.com", "Manager", true),
        ("dave", "dave@other.org", "Engineer", true),
        ("eve", "eve@corp.com", "Manager", false),
    ] {
        let mut body = user2(name, name, "Tester", email);
        body["title"] = json!(title);
        body["active"] = json!(active);
        s.create_user(body).await;
    }
    assert!(!env.enabled("eve").await);
    let all: Vec<String> = ["alice", "bob", "carol", "dave", "eve"]
        .map(String::from)
        .to_vec();

    // Projection.
    let r = s.get("/Users?attributes=userName").await;
    let res = r.list("attributes=userName");
    assert_eq!(user_names(&res), all, "{r}");
    for u in &res {
        for k in u.as_object().unwrap().keys() {
            assert!(
                ["id", "userName", "schemas", "meta"].contains(&k.as_str()),
                "attributes=userName returned {k}: {u}"
            );
        }
        assert!(u["id"].is_string(), "{u}");
    }
    let r = s.get("/Users?excludedAttributes=emails,name,id").await;
    for u in r.list("excludedAttributes=emails,name,id") {
        assert!(
            u["id"].is_string(),
            "id must survive excludedAttributes: {u}"
        );
        assert!(u["userName"].is_string(), "{u}");
        assert!(u.get("emails").is_none() && u.get("name").is_none(), "{u}");
    }
    let alice = id_of("alice");
    let r = s.get(&format!("/Users/{alice}?attributes=title")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["id"], json!(alice), "{r}");
    assert_eq!(r.body["title"], json!("Engineer"), "{r}");
    for k in r.body.as_object().unwrap().keys() {
        assert!(
            ["id", "title", "schemas", "meta"].contains(&k.as_str()),
            "attributes=title returned {k}: {r}"
        );
    }
    let r = s
        .get(&format!("/Users/{alice}?excludedAttributes=id,title"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["id"], json!(alice), "{r}");
    assert!(r.body.get("title").is_none(), "{r}");
    assert_eq!(r.body["userName"], json!("alice"), "{r}");

    // Filters.
    for (filter, expected) in [
        ("userName ne \"alice\"", vec!["bob", "carol", "dave", "eve"]),
        ("userName ew \"e\"", vec!["alice", "dave", "eve"]),
        ("emails.value ew \"@other.org\"", vec!["bob", "dave"]),
        (
            "not (emails.value ew \"@other.org\")",
            vec!["alice", "carol", "eve"],
        ),
        (
            "not (title eq \"Engineer\") and userName ne \"eve\"",
            vec!["carol"],
        ),
        (
            "emails[type eq \"work\" and value ew \"corp.com\"]",
            vec!["alice", "carol", "eve"],
        ),
        (
            "emails[type eq \"work\"].value eq \"bob@other.org\"",
            vec!["bob"],
        ),
        ("active eq false", vec!["eve"]),
        ("USERNAME Eq \"CAROL\"", vec!["carol"]),
        (
            "title eq \"Manager\" or userName sw \"b\"",
            vec!["bob", "carol", "eve"],
        ),
    ] {
        let r = s.filter("/Users", filter).await;
        let res = r.list(filter);
        assert_eq!(user_names(&res), expected, "filter {filter:?}: {r}");
        assert_eq!(r.total(), expected.len() as u64, "{filter}: {r}");
    }
    for bad in [
        "userName eq",
        "userName zz \"a\"",
        "emails[type eq \"work\"",
        "active gt true",
    ] {
        let r = s.filter("/Users", bad).await;
        r.assert_error(400, Some("invalidFilter"), &format!("filter {bad:?}"));
    }

    // count=0: only the total.
    let r = s.get("/Users?count=0").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.total(), 5, "{r}");
    assert!(
        r.body["Resources"].as_array().is_none_or(|a| a.is_empty()),
        "count=0 returned resources: {r}"
    );

    // POST .search.
    let r = s
        .call(
            "POST",
            "/Users/.search",
            Some(json!({"schemas": [SEARCH], "filter": "userName ew \"e\"",
                        "attributes": ["userName"], "startIndex": 1, "count": 10})),
        )
        .await;
    let res = r.list("POST /Users/.search");
    assert_eq!(user_names(&res), ["alice", "dave", "eve"], "{r}");
    for u in &res {
        assert!(u["id"].is_string() && u.get("emails").is_none(), "{u}");
    }
    let r = s
        .call(
            "POST",
            "/.search",
            Some(json!({"schemas": [SEARCH], "filter": "userName eq \"carol\""})),
        )
        .await;
    let res = r.list("POST /.search");
    assert_eq!(user_names(&res), ["carol"], "{r}");
    assert_eq!(res[0]["id"], json!(id_of("carol")), "{r}");
    let r = s
        .call(
            "POST",
            "/Users/.search",
            Some(json!({"schemas": [SEARCH], "filter": "userName eq"})),
        )
        .await;
    r.assert_error(400, Some("invalidFilter"), "POST /Users/.search bad filter");

    // A URN-qualified attribute path.
    let filter = format!("{USER}:userName eq \"carol\"");
    let r = s.filter("/Users", &filter).await;
    assert_eq!(user_names(&r.list(&filter)), ["carol"], "{r}");
}

#[tokio::test]
async fn bulk_with_bulk_id_references_and_fail_on_errors() {
    let env = setup(&format!("deprovision = \"delete\"\n{DEFAULTS}")).await;
    let s = &env.scim;
    let r = s
        .call(
            "POST",
            "/Bulk",
            Some(json!({
                "schemas": [BULK_REQUEST],
                "failOnErrors": 1,
                "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "u1",
                     "data": user2("bulk.one@corp.com", "Bulk", "One", "bulk.one@corp.com")},
                    {"method": "POST", "path": "/Groups", "bulkId": "g1",
                     "data": {"schemas": [GROUP], "displayName": "Bulk Group",
                              "members": [{"value": "bulkId:u1"}]}}
                ]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "POST /Bulk: {r}");
    r.assert_scim_json("POST /Bulk");
    assert!(has_schema(&r.body, BULK_RESPONSE), "{r}");
    let ops = r.body["Operations"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no Operations: {r}"));
    assert_eq!(ops.len(), 2, "{r}");
    let uid = id_of("bulk.one@corp.com");
    let gid = group_id_of("Bulk Group");
    for (op, bulk_id, location) in [
        (&ops[0], "u1", format!("{}{BASE2}/Users/{uid}", s.origin())),
        (&ops[1], "g1", format!("{}{BASE2}/Groups/{gid}", s.origin())),
    ] {
        assert_eq!(op["bulkId"], json!(bulk_id), "{r}");
        assert_eq!(op["status"], json!("201"), "{bulk_id} status: {r}");
        assert_eq!(op["location"], json!(location), "{bulk_id} location: {r}");
    }
    assert!(env.user_exists("bulk.one@corp.com").await);
    assert_eq!(
        env.members("Bulk Group").await,
        ["User:bulk.one@corp.com"],
        "bulkId:u1 reference not resolved"
    );

    // failOnErrors: 1 stops after the first error.
    let r = s
        .call(
            "POST",
            "/Bulk",
            Some(json!({
                "schemas": [BULK_REQUEST],
                "failOnErrors": 1,
                "Operations": [
                    {"method": "POST", "path": "/Users", "bulkId": "dup",
                     "data": user2("bulk.one@corp.com", "Bulk", "Again", "x@corp.com")},
                    {"method": "POST", "path": "/Users", "bulkId": "late",
                     "data": user2("bulk.late@corp.com", "Bulk", "Late", "late@corp.com")}
                ]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "POST /Bulk failOnErrors: {r}");
    let ops = r.body["Operations"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no Operations: {r}"));
    assert_eq!(ops[0]["bulkId"], json!("dup"), "{r}");
    assert_eq!(ops[0]["status"], json!("409"), "duplicate in Bulk: {r}");
    assert!(
        !ops.iter()
            .any(|o| o["bulkId"] == json!("late") && o["status"] == json!("201")),
        "operation after failOnErrors ran: {r}"
    );
    assert!(
        !env.user_exists("bulk.late@corp.com").await,
        "operation after failOnErrors reached the platform"
    );

    // PATCH and DELETE through Bulk.
    let r = s
        .call(
            "POST",
            "/Bulk",
            Some(json!({
                "schemas": [BULK_REQUEST],
                "Operations": [
                    {"method": "PATCH", "path": format!("/Users/{uid}"),
                     "data": {"schemas": [PATCH_OP],
                              "Operations": [{"op": "replace", "path": "title", "value": "Bulked"}]}},
                    {"method": "DELETE", "path": format!("/Groups/{gid}")}
                ]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "POST /Bulk PATCH+DELETE: {r}");
    assert_eq!(r.body["Operations"][0]["status"], json!("200"), "{r}");
    assert_eq!(r.body["Operations"][1]["status"], json!("204"), "{r}");
    env.assert_ext("bulk.one@corp.com", &[("title", "Bulked")], "Bulk PATCH")
        .await;
    assert!(!env.group_exists("Bulk Group").await, "Bulk DELETE");
}

#[tokio::test]
async fn error_shapes_uniqueness_patch_errors_and_policy() {
    let env = setup(&format!("user_exclusions = [\"svc-backup\"]\n{DEFAULTS}")).await;
    let s = &env.scim;
    let name = "dup@corp.com";
    let id = s.create_user(user2(name, "D", "Up", name)).await;

    // 409 uniqueness, in any spelling.
    for spelling in [name, "DUP@corp.com"] {
        let r = s
            .call("POST", "/Users", Some(user2(spelling, "D", "Up", name)))
            .await;
        r.assert_error(
            409,
            Some("uniqueness"),
            &format!("POST duplicate {spelling}"),
        );
    }
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Unique"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Unique"})),
        )
        .await;
    r.assert_error(409, Some("uniqueness"), "POST duplicate group");

    // 404s.
    s.get(&format!("/Users/{}", id_of("nobody@corp.com")))
        .await
        .assert_error(404, None, "GET unknown user");
    s.patch(
        &format!("/Groups/{}", group_id_of("no group")),
        json!([{"op": "add", "path": "members", "value": [{"value": id}]}]),
    )
    .await
    .assert_error(404, None, "PATCH unknown group");

    // Malformed JSON.
    let auth = format!("Bearer {TOKEN}");
    let r = s
        .send(
            "POST",
            &format!("{BASE2}/Users"),
            &[
                ("authorization", &auth),
                ("content-type", "application/scim+json"),
            ],
            Some(br#"{"userName": "broken", "#.to_vec()),
        )
        .await;
    r.assert_error(400, None, "malformed JSON");
    assert!(!env.user_exists("broken").await);

    // No token: a 2.0 error with a Bearer challenge.
    let r = s.send("GET", &format!("{BASE2}/Users"), &[], None).await;
    r.assert_error(401, None, "no token");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{r}"
    );

    // Policy: excluded users are neither created nor visible.
    for excluded in ["Administrator", "svc-backup"] {
        let r = s
            .call(
                "POST",
                "/Users",
                Some(user2(excluded, "X", "X", "x@corp.com")),
            )
            .await;
        r.assert_error(403, None, &format!("POST {excluded}"));
    }
    assert!(!env.user_exists("svc-backup").await);
    s.get(&format!("/Users/{}", id_of("Administrator")))
        .await
        .assert_error(404, None, "GET Administrator");
    let r = s.filter("/Users", "userName eq \"Administrator\"").await;
    r.list("filter Administrator");
    assert_eq!(r.total(), 0, "{r}");
    let r = s.get("/Users").await;
    assert_eq!(user_names(&r.list("GET /Users")), [name], "{r}");
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Administrators"})),
        )
        .await;
    r.assert_error(403, None, "POST /Groups Administrators");

    // Audit: 2.0 changes and refusals are recorded as 1.1's are.
    let text = std::fs::read_to_string(env.gw.dir.join("audit.jsonl")).unwrap_or_default();
    let audit: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        audit.iter().any(|l| l["operation"] == json!("create_user")
            && l["target"] == json!(name)
            && l["result"] == json!("done")),
        "no audit line for the 2.0 create: {audit:?}"
    );
    assert!(
        audit.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("svc-backup"))
            && l["result"] == json!("refused")),
        "no audit line for the 2.0 refusal: {audit:?}"
    );

    // PATCH errors, all-or-nothing.
    let rel = format!("/Users/{id}");
    s.patch(&rel, json!([{"op": "remove"}])).await.assert_error(
        400,
        Some("noTarget"),
        "remove without a path",
    );
    let r = s
        .patch(
            &rel,
            json!([
                {"op": "replace", "path": "title", "value": "Atomic"},
                {"op": "remove"}
            ]),
        )
        .await;
    r.assert_error(400, Some("noTarget"), "second op fails");
    env.assert_ext(
        name,
        &[("title", "")],
        "a failed PATCH applied its first op",
    )
    .await;
    let r = s
        .patch(
            &rel,
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
        )
        .await;
    r.assert_error(400, None, "active \"maybe\"");
    assert!(env.enabled(name).await);
    // Removing a required attribute.
    s.patch(&rel, json!([{"op": "remove", "path": "userName"}]))
        .await
        .assert_error(400, Some("mutability"), "remove userName");
}

/// An attribute definition from a schema document (`userName`, `members.$ref`).
fn definition(schema: &Value, path: &str) -> Value {
    let (top, sub) = match path.split_once('.') {
        Some((t, s)) => (t, Some(s)),
        None => (path, None),
    };
    let named = |list: &Value, name: &str| -> Value {
        list.as_array()
            .and_then(|l| l.iter().find(|a| a["name"] == json!(name)))
            .cloned()
            .unwrap_or_else(|| panic!("{path} is not advertised: {schema}"))
    };
    let attr = named(&schema["attributes"], top);
    match sub {
        None => attr,
        Some(sub) => named(&attr["subAttributes"], sub),
    }
}

/// What `/Schemas` says must be what the platform allows and what reads give back, so a client
/// that trusts the schema (as conformance testers and the Microsoft validator do) round-trips.
#[tokio::test]
async fn schemas_say_what_the_platform_allows_and_reads_round_trip() {
    let env = setup(DEFAULTS).await;
    let s = &env.scim;

    let user_schema = s.schema(USER).await;
    assert_eq!(
        definition(&user_schema, "userName")["mutability"],
        json!("immutable")
    );
    assert_eq!(definition(&user_schema, "active")["required"], json!(true));
    assert!(
        !advertised(&user_schema, "emails.primary"),
        "primary is not stored: {user_schema}"
    );
    let group_schema = s.schema(GROUP).await;
    assert_eq!(
        definition(&group_schema, "displayName")["mutability"],
        json!("immutable")
    );
    let reference = definition(&group_schema, "members.$ref");
    assert_eq!(reference["type"], json!("reference"));
    assert_eq!(reference["referenceTypes"], json!(["User", "Group"]));
    assert_eq!(
        definition(&group_schema, "members.display")["returned"],
        json!("request")
    );

    // Nothing is mapped to the enterprise extension here, so the User type does not offer it,
    // while its schema stays listed.
    let r = s.get("/ResourceTypes/User").await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.get("schemaExtensions").is_none(), "{r}");
    assert_eq!(s.get(&format!("/Schemas/{ENTERPRISE}")).await.status, 200);

    // A single e-mail sent without primary comes back exactly as sent.
    let body = json!({
        "schemas": [USER], "userName": "rt@corp.com", "active": true,
        "emails": [{"value": "rt@corp.com", "type": "work"}],
    });
    let uid = s.create_user(body).await;
    let r = s.get(&format!("/Users/{uid}")).await;
    assert_eq!(
        r.body["emails"],
        json!([{"value": "rt@corp.com", "type": "work"}]),
        "{r}"
    );
    // 1.1 keeps returning primary: PingFederate relies on it.
    let r1 = s.call_v1("GET", &format!("/Users/{uid}"), None).await;
    assert_eq!(r1.body["emails"][0]["primary"], json!(true), "{r1}");

    // Removing active, a required attribute with no unassigned state, is refused and changes
    // nothing.
    s.patch(
        &format!("/Users/{uid}"),
        json!([{"op": "remove", "path": "active"}]),
    )
    .await
    .assert_error(400, Some("mutability"), "remove active");
    assert!(env.enabled("rt@corp.com").await);

    // Members round-trip with value, $ref and type; display only when asked for.
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "RoundTrip"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let gid = r.id();
    let user_ref = r.body["meta"]["location"]
        .as_str()
        .unwrap()
        .replace(&format!("/Groups/{gid}"), &format!("/Users/{uid}"));
    let member = json!({"value": uid, "$ref": user_ref, "type": "User"});
    let r = s
        .patch_ok(
            &format!("/Groups/{gid}"),
            json!([{"op": "add", "path": "members", "value": [member.clone()]}]),
            "Group",
        )
        .await;
    assert_eq!(r.body["members"], json!([member.clone()]), "{r}");
    let r = s.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.body["members"], json!([member]), "{r}");
    let r = s
        .get(&format!("/Groups/{gid}?attributes=members.display"))
        .await;
    assert_eq!(
        r.body["members"],
        json!([{"display": "rt@corp.com"}]),
        "{r}"
    );
}

/// `userName eq` and `id eq` are answered by one read rather than a listing; the answers must
/// be the listing's: case-insensitive names, excluded users absent, paging honoured.
#[tokio::test]
async fn single_user_lookups_answer_like_a_listing() {
    let env = setup(DEFAULTS).await;
    let s = &env.scim;
    s.create_user(user2("Lookup.Person@corp.com", "L", "P", "lookup@corp.com"))
        .await;
    let id = id_of("Lookup.Person@corp.com");
    for filter in [
        "userName eq \"lookup.person@corp.com\"".to_string(),
        "USERNAME eq \"LOOKUP.PERSON@CORP.COM\"".to_string(),
        format!("id eq \"{id}\""),
    ] {
        let r = s.filter("/Users", &filter).await;
        let found = r.list(&filter);
        assert_eq!(
            user_names(&found),
            ["Lookup.Person@corp.com"],
            "{filter}: {r}"
        );
        assert_eq!(r.total(), 1, "{filter}: {r}");
        let r = s
            .get(&format!("/Users?filter={}&startIndex=2", enc(&filter)))
            .await;
        assert!(r.list("second page").is_empty(), "{filter} page 2: {r}");
        assert_eq!(r.total(), 1, "{filter} page 2: {r}");
    }
    for filter in [
        "userName eq \"nobody@corp.com\"",
        // Built-in users are on the exclusion list: SCIM never sees them.
        "userName eq \"Administrator\"",
        "id eq \"not-base64!\"",
    ] {
        let r = s.filter("/Users", filter).await;
        assert!(r.list(filter).is_empty(), "{filter}: {r}");
        assert_eq!(r.total(), 0, "{filter}: {r}");
    }
}

/// Native calls made so far, from the admin listener's metrics.
async fn platform_calls(env: &Env) -> u64 {
    let metrics = common::http_get(env.gw.admin_addr, "/metrics")
        .await
        .unwrap()
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("scimgate_platform_calls_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A PATCH reads the resource once: the read that checks its version (and that a user PATCH is
/// applied to) is the one the update starts from, so the platform is not asked twice.
#[tokio::test]
async fn a_patch_reads_the_resource_from_the_platform_once() {
    let env = setup(&format!("deprovision = \"delete\"\n{DEFAULTS}")).await;
    let s = &env.scim;
    let name = "once@corp.com";
    let user = s.create_user(user2(name, "Read", "Once", name)).await;
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "read-once"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let group = r.id();

    let before = platform_calls(&env).await;
    let r = s
        .patch(
            &format!("/Groups/{group}"),
            json!([{"op": "add", "path": "members", "value": [{"value": user}]}]),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{r}");
    // The group and its members (2), the new member (1), AddMember (1), the group and its
    // members again for the answer (2).
    assert_eq!(platform_calls(&env).await - before, 6, "membership PATCH");

    let before = platform_calls(&env).await;
    let r = s
        .patch_ok(
            &format!("/Users/{user}"),
            json!([{"op": "replace", "path": "title", "value": "Reader"}]),
            "User",
        )
        .await;
    assert_eq!(r.body["title"], json!("Reader"), "{r}");
    // The user (4), SetPropertyValues (1), the user again for the answer (4).
    assert_eq!(platform_calls(&env).await - before, 9, "user PATCH");
    env.assert_ext(name, &[("title", "Reader")], "user PATCH")
        .await;
}

/// Issue 18: a membership PATCH naming many members runs its native calls in parallel (the
/// default `platform.max_concurrency` is 8) and is still applied whole or not at all: with the
/// 15th AddMember refused, every member the platform had confirmed is taken back, and the audit
/// line lists exactly what was confirmed and undone.
#[tokio::test]
async fn a_large_member_patch_is_applied_whole_or_not_at_all() {
    let env = setup("deprovision = \"delete\"").await;
    let s = &env.scim;
    let names: Vec<String> = (0..40).map(|i| format!("bulk{i:02}@corp.com")).collect();
    for name in &names {
        env.tw
            .create_user(&scimgate::platform::NewUser {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let value: Vec<Value> = names.iter().map(|n| json!({"value": id_of(n)})).collect();
    let mut groups = Vec::new();
    for display in ["bulk-ok", "bulk-failed"] {
        let r = s
            .call(
                "POST",
                "/Groups",
                Some(json!({"schemas": [GROUP], "displayName": display})),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
        groups.push(r.id());
    }

    let r = s
        .patch(
            &format!("/Groups/{}", groups[0]),
            json!([{"op": "add", "path": "members", "value": value}]),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{r}");
    let mut members: Vec<String> = env
        .tw
        .group_members("bulk-ok")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    members.sort();
    assert_eq!(members, names);

    env.dev.set_faults(scimgate::dev::platform::FaultSpec {
        faults: vec![scimgate::dev::platform::FaultRule {
            kind: scimgate::dev::platform::FaultKind::Error500,
            call: Some(15),
            service: Some("AddMember".into()),
            times: None,
        }],
        ..Default::default()
    });
    let r = s
        .patch(
            &format!("/Groups/{}", groups[1]),
            json!([{"op": "add", "path": "members", "value": value}]),
        )
        .await;
    env.dev.set_faults(Default::default());
    assert!(r.status >= 500, "{r}");
    assert!(
        env.tw
            .group_members("bulk-failed")
            .await
            .unwrap()
            .is_empty(),
        "every confirmed add was taken back"
    );
    let text = std::fs::read_to_string(env.gw.dir.join("audit.jsonl")).unwrap_or_default();
    let line: Value = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["operation"] == "update_group" && l["target"] == "bulk-failed")
        .unwrap_or_else(|| panic!("no audit line: {text}"));
    assert_eq!(line["result"], "failed", "{line}");
    let changes: Vec<String> = serde_json::from_value(line["changes"].clone()).unwrap();
    let added = changes.iter().filter(|c| c.starts_with("added ")).count();
    let undone = changes.iter().filter(|c| c.starts_with("undone: ")).count();
    assert!(
        added >= 14,
        "the 14 AddMember calls before the refused one: {changes:?}"
    );
    assert_eq!(added, undone, "{changes:?}");
}

/// Issue 18: the lookups identity providers make before a create or a link — `userName eq` and
/// `id eq` for users; `displayName eq`, `id eq` and `externalId eq` for groups; and `or` of them —
/// cost the same number of native calls in a directory of 20 users and groups as in one of 200
/// (counted through `scimgate_platform_calls_total`), and find what they name. The group
/// externalId is a tag in `provisioning.group_external_id_vocabulary`, found by GetEntityList's
/// `tags` parameter; so is a user's, kept by default as a tag in
/// `provisioning.user_external_id_vocabulary`.
#[tokio::test]
async fn identity_provider_lookups_cost_the_same_at_any_directory_size() {
    let env = setup(&format!(
        "deprovision = \"delete\"\ngroup_external_id_vocabulary = \"SCIMExternalId\"\n{DEFAULTS}"
    ))
    .await;
    let s = &env.scim;
    let grow = |from: usize, to: usize| {
        let env = &env;
        async move {
            for i in from..to {
                env.tw
                    .create_user(&scimgate::platform::NewUser {
                        name: format!("dir{i:03}@corp.com"),
                        tags: vec![Tag {
                            vocabulary: "SCIMExternalId".into(),
                            term: format!("uext-{i:03}"),
                        }],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                env.tw
                    .create_group(&scimgate::platform::NewGroup {
                        name: format!("dir-group-{i:03}"),
                        tags: vec![Tag {
                            vocabulary: "SCIMExternalId".into(),
                            term: format!("ext-{i:03}"),
                        }],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
    };
    let lookups: Vec<(&str, String, Vec<&str>)> = vec![
        ("/Users", "userName eq \"DIR007@corp.com\"".into(), vec!["dir007@corp.com"]),
        ("/Users", format!("id eq \"{}\"", id_of("dir007@corp.com")), vec!["dir007@corp.com"]),
        (
            "/Users",
            format!(
                "userName eq \"dir003@corp.com\" or id eq \"{}\" or userName eq \"nobody@corp.com\"",
                id_of("dir011@corp.com")
            ),
            vec!["dir003@corp.com", "dir011@corp.com"],
        ),
        ("/Users", "userName eq \"nobody@corp.com\"".into(), vec![]),
        ("/Users", "externalId eq \"uext-013\"".into(), vec!["dir013@corp.com"]),
        (
            "/Users",
            "externalId eq \"uext-002\" or userName eq \"dir005@corp.com\"".into(),
            vec!["dir002@corp.com", "dir005@corp.com"],
        ),
        ("/Users", "externalId eq \"no-such-ext\"".into(), vec![]),
        ("/Groups", "displayName eq \"DIR-GROUP-007\"".into(), vec!["dir-group-007"]),
        ("/Groups", format!("id eq \"{}\"", group_id_of("dir-group-007")), vec!["dir-group-007"]),
        ("/Groups", "externalId eq \"ext-012\"".into(), vec!["dir-group-012"]),
        ("/Groups", "externalId eq \"no-such-ext\"".into(), vec![]),
        (
            "/Groups",
            "externalId eq \"ext-004\" or displayName eq \"dir-group-009\"".into(),
            vec!["dir-group-004", "dir-group-009"],
        ),
    ];
    let mut costs: Vec<Vec<u64>> = Vec::new();
    for (from, to) in [(0, 20), (20, 200)] {
        grow(from, to).await;
        let mut cost = Vec::new();
        for (endpoint, filter, expected) in &lookups {
            // Once first: the gateway probes the platform (name lookups, how extension values
            // are read) on first need, a cost that belongs to no directory size.
            s.filter(endpoint, filter).await;
            let before = platform_calls(&env).await;
            let r = s.filter(endpoint, filter).await;
            cost.push(platform_calls(&env).await - before);
            let field = if *endpoint == "/Users" {
                "userName"
            } else {
                "displayName"
            };
            let mut found: Vec<String> = r
                .list(filter)
                .iter()
                .map(|v| v[field].as_str().unwrap_or("?").to_lowercase())
                .collect();
            found.sort();
            assert_eq!(found, *expected, "{filter} with {to} users and groups: {r}");
        }
        println!("native calls per lookup with {to} users and groups: {cost:?}");
        costs.push(cost);
    }
    assert_eq!(costs[0], costs[1], "lookups cost the same at 20 and at 200");
}
