//! SCIM 1.1 provisioning end to end: the real gateway binary over TLS in front of the in-process
//! development platform, driven with the request sequences a PingFederate SCIM 1.1 channel sends,
//! with the platform's state checked after every step through its native API.

mod common;

use base64::Engine;
use common::dev_env::{DevEnv, DevEnvSpec, TOKEN};
use common::scim::{enc, id_of, Scim, ScimResp, Version};
use http::Method;
use scimgate::config::Secret;
use scimgate::platform::{NewUser, Platform};
use scimgate::tag::Tag;
use serde_json::{json, Value};

/// 32 characters, as a real deployment's token would be.
const BASE: &str = "/Thingworx/SCIMProvider/SCIM";
const CORE: &str = "urn:scim:schemas:core:1.0";

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

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

impl ScimResp {
    /// The first 1.1 error's description.
    fn description(&self) -> String {
        self.body["Errors"][0]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts a SCIM 1.1 error answer: the status, JSON, and `{"Errors":[{"code": ..}]}`.
    fn assert_error(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {self}");
        self.assert_error_shape(what);
    }

    fn assert_error_shape(&self, what: &str) {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{what}: content-type {ct:?}: {self}"
        );
        let errors = self.body["Errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no 1.1 Errors array: {self}"));
        assert!(!errors.is_empty(), "{what}: empty Errors: {self}");
        assert_eq!(
            errors[0]["code"],
            json!(self.status.to_string()),
            "{what}: Errors[0].code: {self}"
        );
        assert!(
            !self.description().is_empty(),
            "{what}: no description: {self}"
        );
    }

    fn resources(&self) -> Vec<Value> {
        self.body["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no Resources: {self}"))
    }
}

impl Scim {
    /// An authenticated SCIM call; `rel` is relative to the SCIM base path.
    async fn call(&self, method: &str, rel: &str, body: Option<Value>) -> ScimResp {
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

    /// Creates a user and returns its id, asserting the 201.
    async fn create_user(&self, body: Value) -> String {
        let r = self.call("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 201, "POST /Users: {r}");
        r.id()
    }
}

fn user_body(user_name: &str, given: &str, family: &str, email: &str) -> Value {
    json!({
        "schemas": [CORE],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    })
}

/// The development platform, the gateway in front of it, a SCIM client and a native client.
type Env = DevEnv;

/// `provisioning`: keys of `[provisioning]` followed by any of its sub-tables;
/// `scim_extra`: more keys for `[scim]`.
async fn setup(provisioning: &str, scim_extra: &str) -> Env {
    DevEnv::start(DevEnvSpec {
        provisioning,
        scim: scim_extra,
        default_accept: Some("application/json"),
        ..Default::default()
    })
    .await
}

impl Env {
    async fn active_users(&self) -> Vec<String> {
        self.tw
            .active_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name.to_lowercase())
            .collect()
    }

    /// Gives `user` a password and logs in with Basic, which opens a platform session.
    async fn open_session(&self, user: &str) {
        let password = "session-password-123";
        self.tw
            .assign_password(user, &Secret::new(password))
            .await
            .unwrap();
        let as_user =
            self.platform_as(&format!("username = \"{user}\"\npassword = \"{password}\""));
        assert_eq!(as_user.current_user().await.unwrap(), user);
        assert!(
            self.active_users().await.contains(&user.to_lowercase()),
            "no session for {user}"
        );
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.gw.dir.join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    async fn admin(&self, method: Method, path: &str) -> common::Resp {
        let addr = self.gw.admin_addr;
        common::send_plain(
            addr,
            common::request(method, &addr.to_string(), path, common::empty()),
        )
        .await
        .unwrap()
    }
}

fn assert_ext(ext: &scimgate::platform::Extensions, expected: &[(&str, &str)], what: &str) {
    for (k, v) in expected {
        assert_eq!(
            ext.get(*k).map(String::as_str),
            Some(*v),
            "{what}: extension property {k} in {ext:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. PingFederate user cycle
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pingfederate_user_cycle_create_update_disable_delete() {
    let env = setup(&format!("deprovision = \"delete\"\n{DEFAULTS}"), "").await;
    let s = &env.scim;
    let name = "jdoe@corp.com";

    // Ping looks the user up first, in either spelling of the filter.
    for filter in [
        format!("userName eq \"{name}\""),
        format!("UserName Eq \"{name}\""),
    ] {
        let r = s.filter("/Users", &filter).await;
        assert_eq!(r.status, 200, "lookup {filter}: {r}");
        assert_eq!(r.body["totalResults"], json!(0), "{filter}: {r}");
        assert_eq!(r.body["Resources"], json!([]), "{filter}: {r}");
    }

    // Create.
    let r = s
        .call(
            "POST",
            "/Users",
            Some(json!({
                "schemas": [CORE],
                "userName": name,
                "externalId": "ping-0042",
                "name": {"givenName": "Jane", "familyName": "Doe"},
                "emails": [{"value": "jane.doe@corp.com", "type": "work", "primary": true}],
                "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
                "title": "Engineer",
                "active": true,
            })),
        )
        .await;
    assert_eq!(r.status, 201, "POST /Users: {r}");
    let id = r.id();
    assert!(!id.is_empty());
    let location = r.header("location").expect("Location header on 201");
    assert_eq!(
        Some(location.as_str()),
        r.body["meta"]["location"].as_str(),
        "Location header vs meta.location"
    );
    assert_eq!(location, format!("{}{BASE}/Users/{id}", s.origin()));
    assert_eq!(r.body["userName"], json!(name));

    // Platform: the user, its extension properties, enabled, defaults applied.
    assert!(env.user_exists(name).await);
    let ext = env.ext(name).await;
    assert_ext(
        &ext,
        &[
            ("firstName", "Jane"),
            ("lastName", "Doe"),
            ("emailAddress", "jane.doe@corp.com"),
            ("workPhone", "+1 555 0100"),
            ("title", "Engineer"),
            ("scimExternalId", "ping-0042"),
        ],
        "after create",
    );
    assert!(env.tw.is_user_enabled(name).await.unwrap());
    let user = env.tw.get_user(name).await.unwrap();
    assert_eq!(user.description, "Provisioned by SCIM");
    assert_eq!(user.project, "SCIMProject");
    assert_eq!(user.home_mashup, "SCIMHome");
    assert_eq!(user.mobile_mashup, "SCIMMobile");
    // The default tag, and the externalId as a term of the dynamic SCIMExternalId vocabulary.
    assert_eq!(
        user.tags,
        vec![
            Tag::parse("Applications:SCIM").unwrap(),
            Tag::parse("SCIMExternalId:ping-0042").unwrap()
        ]
    );

    // The lookup now finds it.
    let r = s.filter("/Users", &format!("userName eq \"{name}\"")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(1), "{r}");
    assert_eq!(r.resources()[0]["id"], json!(id), "{r}");

    // Read back.
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, 200, "GET /Users/{id}: {r}");
    let u = &r.body;
    assert_eq!(u["userName"], json!(name));
    assert_eq!(u["externalId"], json!("ping-0042"));
    assert_eq!(u["name"]["givenName"], json!("Jane"));
    assert_eq!(u["name"]["familyName"], json!("Doe"));
    assert_eq!(u["title"], json!("Engineer"));
    assert_eq!(u["active"], json!(true));
    let emails = u["emails"].as_array().expect("emails");
    assert!(
        emails
            .iter()
            .any(|e| e["value"] == json!("jane.doe@corp.com") && e["type"] == json!("work")),
        "{r}"
    );
    let phones = u["phoneNumbers"].as_array().expect("phoneNumbers");
    assert!(
        phones
            .iter()
            .any(|p| p["value"] == json!("+1 555 0100") && p["type"] == json!("work")),
        "{r}"
    );
    assert!(u.get("password").is_none());

    // PUT with only some attributes: the omitted ones stay.
    let r = s
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": [CORE],
                "userName": name,
                "name": {"familyName": "Doe-Smith"},
                "title": "Lead Engineer",
            })),
        )
        .await;
    assert_eq!(r.status, 200, "partial PUT: {r}");
    let ext = env.ext(name).await;
    assert_ext(
        &ext,
        &[
            ("lastName", "Doe-Smith"),
            ("title", "Lead Engineer"),
            ("emailAddress", "jane.doe@corp.com"),
            ("firstName", "Jane"),
            ("workPhone", "+1 555 0100"),
            ("scimExternalId", "ping-0042"),
        ],
        "after partial PUT",
    );

    // A userName change is refused and nothing is applied.
    let before = env.ext(name).await;
    let r = s
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [CORE], "userName": "jsmith@corp.com", "title": "Renamed"})),
        )
        .await;
    r.assert_error(400, "PUT with another userName");
    assert_eq!(env.ext(name).await, before, "PUT with another userName");
    assert!(!env.user_exists("jsmith@corp.com").await);

    // Disable: the user's live session ends.
    env.open_session(name).await;
    let r = s
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [CORE], "userName": name, "active": false})),
        )
        .await;
    assert_eq!(r.status, 200, "PUT active:false: {r}");
    assert_eq!(r.body["active"], json!(false), "{r}");
    assert!(!env.tw.is_user_enabled(name).await.unwrap());
    let active = env.active_users().await;
    assert!(
        !active.contains(&name.to_string()),
        "session survived the disable: {active:?}"
    );
    // Disabled users are still visible (Entra depends on it).
    let r = s.get(&format!("/Users/{id}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["active"], json!(false));

    // Re-enable.
    let r = s
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [CORE], "userName": name, "active": true})),
        )
        .await;
    assert_eq!(r.status, 200, "PUT active:true: {r}");
    assert!(env.tw.is_user_enabled(name).await.unwrap());
    assert_ext(
        &env.ext(name).await,
        &[
            ("lastName", "Doe-Smith"),
            ("emailAddress", "jane.doe@corp.com"),
        ],
        "after re-enable",
    );

    // Delete (deprovision = delete).
    let r = s.call("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 200, "DELETE: {r}");
    assert!(!env.user_exists(name).await, "user still on the platform");
    s.get(&format!("/Users/{id}"))
        .await
        .assert_error(404, "GET after DELETE");
    let r = s.filter("/Users", &format!("userName eq \"{name}\"")).await;
    assert_eq!(r.body["totalResults"], json!(0), "{r}");
}

#[tokio::test]
async fn delete_with_deprovision_disable_keeps_the_user_disabled() {
    let env = setup(&format!("deprovision = \"disable\"\n{DEFAULTS}"), "").await;
    let s = &env.scim;
    let name = "leaver@corp.com";
    let id = s
        .create_user(user_body(name, "Lee", "Ver", "leaver@corp.com"))
        .await;
    env.open_session(name).await;

    let r = s.call("DELETE", &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, 200, "DELETE: {r}");
    assert!(env.user_exists(name).await, "deprovision = disable deleted");
    assert!(!env.tw.is_user_enabled(name).await.unwrap());
    assert_ext(
        &env.ext(name).await,
        &[("firstName", "Lee"), ("emailAddress", "leaver@corp.com")],
        "after disable-delete",
    );
    let active = env.active_users().await;
    assert!(
        !active.contains(&name.to_string()),
        "session survived: {active:?}"
    );

    // Provisioned disabled ("Provision Disabled Users"), then enabled, then disabled by PUT
    // without ever having had a session.
    let mut body = user_body("newhire@corp.com", "New", "Hire", "newhire@corp.com");
    body["active"] = json!(false);
    let r = s.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "POST active:false: {r}");
    assert_eq!(r.body["active"], json!(false), "{r}");
    let newhire = r.id();
    assert!(env.user_exists("newhire@corp.com").await);
    assert!(!env.tw.is_user_enabled("newhire@corp.com").await.unwrap());
    for active in [true, false] {
        let r = s
            .call(
                "PUT",
                &format!("/Users/{newhire}"),
                Some(json!({"schemas": [CORE], "userName": "newhire@corp.com",
                            "active": active})),
            )
            .await;
        assert_eq!(r.status, 200, "PUT active:{active} (no session): {r}");
        assert_eq!(
            env.tw.is_user_enabled("newhire@corp.com").await.unwrap(),
            active
        );
    }
    let r = s.call("DELETE", &format!("/Users/{newhire}"), None).await;
    assert_eq!(r.status, 200, "DELETE of a disabled user: {r}");
    assert!(env.user_exists("newhire@corp.com").await);
    assert!(!env.tw.is_user_enabled("newhire@corp.com").await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// 2. Groups, Ping style
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_created_patched_and_deleted_ping_style() {
    let env = setup(DEFAULTS, "").await;
    let s = &env.scim;
    let alice = s
        .create_user(user_body("alice", "Alice", "A", "alice@corp.com"))
        .await;
    let bob = s
        .create_user(user_body("bob", "Bob", "B", "bob@corp.com"))
        .await;

    // Unfiltered listing: built-in groups are absent.
    let r = s.get("/Groups").await;
    assert_eq!(r.status, 200, "GET /Groups: {r}");
    let listed: Vec<String> = r
        .resources()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for builtin in [
        "Administrators",
        "Users",
        "Designers",
        "Developers",
        "ComposerUsers",
        "SecurityAdministrators",
        "SolutionCentralDevelopers",
        "SolutionCentralSiteAdministrators",
    ] {
        assert!(
            !listed.contains(&builtin.to_lowercase()),
            "{builtin} listed: {listed:?}"
        );
    }

    // Create with a member.
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE], "displayName": "Engineering",
                        "members": [{"value": alice, "display": "alice"}]})),
        )
        .await;
    assert_eq!(r.status, 201, "POST /Groups: {r}");
    let gid = r.id();
    assert_eq!(r.body["displayName"], json!("Engineering"));
    let location = r.header("location").expect("Location on 201");
    assert_eq!(Some(location.as_str()), r.body["meta"]["location"].as_str());
    assert_eq!(location, format!("{}{BASE}/Groups/{gid}", s.origin()));
    let g = env.tw.get_group("Engineering").await.unwrap();
    assert_eq!(g.description, "Provisioned SCIM group");
    assert_eq!(g.project, "SCIMGroups");
    assert_eq!(g.tags, vec![Tag::parse("Applications:SCIM").unwrap()]);
    assert_eq!(env.members("Engineering").await, ["User:alice"]);

    // Listed now.
    let r = s.get("/Groups").await;
    assert!(
        r.resources()
            .iter()
            .any(|g| g["displayName"] == json!("Engineering") && g["id"] == json!(gid)),
        "{r}"
    );

    // PATCH: add bob.
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [CORE], "members": [{"value": bob, "display": "bob"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH add: {r}");
    assert_eq!(env.members("Engineering").await, ["User:alice", "User:bob"]);

    // PATCH: remove alice.
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [CORE],
                        "members": [{"value": alice, "display": "alice", "operation": "delete"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH delete: {r}");
    assert_eq!(env.members("Engineering").await, ["User:bob"]);

    // PATCH: remove all members.
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [CORE], "meta": {"attributes": ["members"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH clear: {r}");
    assert!(env.members("Engineering").await.is_empty());

    // A rename is refused and nothing in the request is applied.
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(
                json!({"schemas": [CORE], "id": gid, "displayName": "Engineering 2",
                        "members": [{"value": alice}]}),
            ),
        )
        .await;
    r.assert_error(400, "rename PATCH");
    assert!(env.group_exists("Engineering").await);
    assert!(!env.group_exists("Engineering 2").await);
    assert!(
        env.members("Engineering").await.is_empty(),
        "rename PATCH applied its members"
    );

    // Filtered lookup.
    let r = s.filter("/Groups", "displayName eq \"Engineering\"").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(1), "{r}");
    assert_eq!(r.resources()[0]["id"], json!(gid));

    // Delete.
    let r = s.call("DELETE", &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.status, 200, "DELETE group: {r}");
    assert!(!env.group_exists("Engineering").await);
    // Its former members are untouched.
    assert!(env.user_exists("alice").await && env.user_exists("bob").await);
}

// ---------------------------------------------------------------------------------------------
// 3. Exclusion lists
// ---------------------------------------------------------------------------------------------

/// Everything about a user the gateway might change.
async fn snapshot_user(env: &Env, name: &str) -> String {
    let user = env.tw.get_user(name).await.unwrap();
    let enabled = env.tw.is_user_enabled(name).await.unwrap();
    let ext = env.ext(name).await;
    let mut groups: Vec<String> = env
        .tw
        .user_groups(name)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    groups.sort();
    format!("{user:?} enabled={enabled} {ext:?} {groups:?}")
}

async fn snapshot_platform(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for u in ["Administrator", "SuperUser", "System", "svc-backup"] {
        out.push(snapshot_user(env, u).await);
    }
    let mut users: Vec<String> = env
        .tw
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    users.sort();
    out.push(format!("users {users:?}"));
    let mut groups: Vec<String> = env
        .tw
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    groups.sort();
    out.push(format!("groups {groups:?}"));
    for g in ["Administrators", "Designers", "SecurityAdministrators"] {
        out.push(format!("{g} {:?}", env.members(g).await));
    }
    out
}

const EXCLUDED_USERS: [&str; 4] = ["administrator", "superuser", "system", "svc-backup"];

#[tokio::test]
async fn exclusion_lists_cannot_be_bypassed() {
    let env = setup(
        &format!(
            "user_exclusions = [\"svc-backup\"]\n{DEFAULTS}\n[provisioning.group_mappings]\n\"IdP Admins\" = \"Administrators\"\n"
        ),
        "",
    )
    .await;
    let s = &env.scim;
    env.tw
        .create_user(&NewUser {
            name: "svc-backup".into(),
            description: "backup service".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut backup_ext = scimgate::platform::Extensions::new();
    backup_ext.insert("firstName".into(), "Backup".into());
    env.tw
        .set_user_extensions("svc-backup", &backup_ext)
        .await
        .unwrap();
    assert!(
        env.members("Administrators")
            .await
            .contains(&"User:administrator".to_string()),
        "the development platform should seed Administrator in Administrators"
    );
    let before = snapshot_platform(&env).await;

    // Creating an excluded user, in any spelling.
    for spelling in [
        "Administrator",
        " administrator ",
        "ADMINISTRATOR",
        "Administr%61tor",
        "Ａｄｍｉｎｉｓｔｒａｔｏｒ",
        "SuperUser",
        "system",
        "svc-backup",
        "SVC-Backup",
    ] {
        let r = s
            .call(
                "POST",
                "/Users",
                Some(
                    json!({"schemas": [CORE], "userName": spelling, "title": "pwned",
                            "active": false}),
                ),
            )
            .await;
        r.assert_error(403, &format!("POST /Users userName {spelling:?}"));
    }
    assert_eq!(
        snapshot_platform(&env).await,
        before,
        "platform changed by refused creates"
    );

    // Reaching an excluded user by id.
    for name in ["Administrator", "svc-backup"] {
        let id = id_of(name);
        s.get(&format!("/Users/{id}"))
            .await
            .assert_error(404, &format!("GET /Users/<{name}>"));
        for (method, body) in [
            (
                "PUT",
                Some(
                    json!({"schemas": [CORE], "userName": name, "title": "pwned",
                            "active": false}),
                ),
            ),
            ("PATCH", Some(json!({"schemas": [CORE], "active": false}))),
            (
                "PATCH",
                Some(json!({"schemas": [CORE], "meta": {"attributes": ["name", "emails"]}})),
            ),
            ("DELETE", None),
        ] {
            // Excluded users do not exist for SCIM, whichever the verb.
            let r = s.call(method, &format!("/Users/{id}"), body).await;
            assert_eq!(r.status, 404, "{method} /Users/<{name}>: {r}");
            r.assert_error_shape(&format!("{method} /Users/<{name}>"));
        }
    }
    assert_eq!(
        snapshot_platform(&env).await,
        before,
        "platform changed through an excluded user's id"
    );

    // A provisioned user and group, then Administrator as a member.
    let alice = s
        .create_user(user_body("alice", "Alice", "A", "alice@corp.com"))
        .await;
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE], "displayName": "Engineering",
                        "members": [{"value": alice}]})),
        )
        .await;
    assert_eq!(r.status, 201, "POST /Groups: {r}");
    let eng = r.id();
    let admin_id = id_of("Administrator");
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{eng}"),
            Some(json!({"schemas": [CORE], "members": [{"value": admin_id}]})),
        )
        .await;
    // Skipped, not fatal: an identity provider pushing a whole group must not fail forever.
    assert_eq!(
        r.status, 200,
        "PATCH adding Administrator to Engineering: {r}"
    );
    assert!(
        !r.text.contains(&admin_id),
        "Administrator shown as a member: {r}"
    );
    for member in [
        json!({"value": admin_id, "type": "User"}),
        json!({"value": admin_id, "display": "Administrator", "type": "User"}),
        json!({"value": id_of("svc-backup")}),
        json!({"value": id_of("Ａｄｍｉｎｉｓｔｒａｔｏｒ")}),
        json!({"value": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Administrator")}),
    ] {
        let r = s
            .call(
                "PATCH",
                &format!("/Groups/{eng}"),
                Some(json!({"schemas": [CORE], "members": [member.clone()]})),
            )
            .await;
        // Skipped by policy, or (for an id the gateway never issues) an invalid member value.
        assert!(
            matches!(r.status, 200 | 400),
            "PATCH adding {member} to Engineering: {r}"
        );
        if r.status == 400 {
            r.assert_error_shape(&format!("PATCH adding {member}"));
        }
    }
    assert_eq!(env.members("Engineering").await, ["User:alice"]);

    // A create carrying an excluded member makes the group with the other members.
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE], "displayName": "Ops",
                        "members": [{"value": alice}, {"value": admin_id}]})),
        )
        .await;
    assert_eq!(
        r.status, 201,
        "POST /Groups with Administrator as member: {r}"
    );
    assert_eq!(env.members("Ops").await, ["User:alice"]);

    // Listings and filters never show excluded users.
    let r = s.get("/Users").await;
    assert_eq!(r.status, 200, "{r}");
    let names: Vec<String> = r
        .resources()
        .iter()
        .map(|u| u["userName"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    assert_eq!(names, ["alice"], "GET /Users listed {names:?}");
    assert_eq!(r.body["totalResults"], json!(1), "{r}");
    for filter in [
        "userName eq \"Administrator\"",
        "userName eq \"svc-backup\"",
        "userName co \"admin\"",
        "userName sw \"S\"",
        "userName pr and title pr or userName eq \"SuperUser\"",
    ] {
        let r = s.filter("/Users", filter).await;
        assert_eq!(r.status, 200, "{filter}: {r}");
        for u in r.resources() {
            let n = u["userName"].as_str().unwrap_or_default().to_lowercase();
            assert!(!EXCLUDED_USERS.contains(&n.as_str()), "{filter}: {r}");
        }
    }
    let r = s.filter("/Users", "userName eq \"Administrator\"").await;
    assert_eq!(r.body["totalResults"], json!(0), "{r}");

    // Excluded groups: no creates, deletes or changes.
    for display in ["Administrators", "users", "IdP Admins", " DESIGNERS "] {
        let r = s
            .call(
                "POST",
                "/Groups",
                Some(json!({"schemas": [CORE], "displayName": display,
                            "members": [{"value": alice}]})),
            )
            .await;
        r.assert_error(403, &format!("POST /Groups {display:?}"));
    }
    let designers = id_of("Designers");
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{designers}"),
            Some(json!({"schemas": [CORE], "members": [{"value": alice}]})),
        )
        .await;
    r.assert_error(404, "PATCH Designers");
    let r = s
        .call("DELETE", &format!("/Groups/{designers}"), None)
        .await;
    r.assert_error(404, "DELETE Designers");
    assert!(env.group_exists("Designers").await);
    assert!(env.members("Designers").await.is_empty());
    let r = s.filter("/Groups", "displayName eq \"Designers\"").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(0), "{r}");

    // The mapped group: visible under the IdP's name, membership manageable.
    let r = s.filter("/Groups", "displayName eq \"IdP Admins\"").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(1), "{r}");
    let mapped = &r.resources()[0];
    assert_eq!(mapped["displayName"], json!("IdP Admins"), "{r}");
    let mapped_id = mapped["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{mapped_id}"),
            Some(json!({"schemas": [CORE], "members": [{"value": alice, "display": "alice"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH IdP Admins add alice: {r}");
    assert_eq!(r.body["displayName"], json!("IdP Admins"), "{r}");
    assert_eq!(
        env.members("Administrators").await,
        ["User:administrator", "User:alice"]
    );
    // The IdP never sees the excluded member, and cannot take it out.
    let r = s.get(&format!("/Groups/{mapped_id}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        !r.text.to_lowercase().contains(&admin_id.to_lowercase()),
        "Administrator shown as a member: {r}"
    );
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{mapped_id}"),
            Some(json!({"schemas": [CORE],
                        "members": [{"value": admin_id, "operation": "delete"}]})),
        )
        .await;
    assert!(
        matches!(r.status, 200 | 403 | 404),
        "PATCH removing Administrator from IdP Admins: {r}"
    );
    assert!(
        env.members("Administrators")
            .await
            .contains(&"User:administrator".to_string()),
        "Administrator removed from Administrators through SCIM"
    );
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{mapped_id}"),
            Some(json!({"schemas": [CORE], "meta": {"attributes": ["members"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "PATCH IdP Admins clear: {r}");
    assert_eq!(
        env.members("Administrators").await,
        ["User:administrator"],
        "clearing the mapped group must only remove provisioned members"
    );
    // Renaming or deleting the mapped group is refused.
    let r = s
        .call(
            "PATCH",
            &format!("/Groups/{mapped_id}"),
            Some(json!({"schemas": [CORE], "displayName": "Platform Admins"})),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 403,
        "rename of the mapped group: {r}"
    );
    r.assert_error_shape("rename of the mapped group");
    let r = s
        .call("DELETE", &format!("/Groups/{mapped_id}"), None)
        .await;
    r.assert_error(403, "DELETE of the mapped group");
    assert!(env.group_exists("Administrators").await);
    assert!(!env.group_exists("Platform Admins").await);
    assert!(!env.group_exists("IdP Admins").await);

    // The built-in users themselves were never touched.
    let after = snapshot_platform(&env).await;
    assert_eq!(after[..4], before[..4], "built-in or excluded user changed");
}

// ---------------------------------------------------------------------------------------------
// 4. Licence cap
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn licence_cap_refuses_the_create_beyond_it() {
    let env = setup("max_users = 3\nuser_exclusions = [\"svc-backup\"]\n", "").await;
    let s = &env.scim;
    // The built-in users do not count; an excluded user on the platform is a named user and does.
    env.tw
        .create_user(&NewUser {
            name: "svc-backup".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.create_user(user_body("one", "One", "U", "one@corp.com"))
        .await;
    s.create_user(user_body("two", "Two", "U", "two@corp.com"))
        .await;
    let r = s
        .call(
            "POST",
            "/Users",
            Some(user_body("three", "Three", "U", "three@corp.com")),
        )
        .await;
    r.assert_error(403, "fourth user over max_users = 3");
    let d = r.description().to_lowercase();
    assert!(
        d.contains("licen") && d.contains('3'),
        "description should name the licence and its limit: {r}"
    );
    assert!(!env.user_exists("three").await, "user created over the cap");
    let refused = env
        .audit()
        .into_iter()
        .any(|l| l["target"] == json!("three") && l["result"] == json!("refused"));
    assert!(refused, "no refusal in the audit log: {:?}", env.audit());
    // A disabled user still holds its licence.
    let r = s
        .call(
            "PATCH",
            &format!("/Users/{}", id_of("two")),
            Some(json!({"schemas": [CORE], "active": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = s
        .call(
            "POST",
            "/Users",
            Some(user_body("three", "Three", "U", "three@corp.com")),
        )
        .await;
    r.assert_error(403, "a disabled user still counts");
    assert!(!env.user_exists("three").await, "user created over the cap");
    // Removing one makes room again.
    let r = s
        .call("DELETE", &format!("/Users/{}", id_of("one")), None)
        .await;
    assert_eq!(r.status, 200, "{r}");
    s.create_user(user_body("three", "Three", "U", "three@corp.com"))
        .await;
}

// ---------------------------------------------------------------------------------------------
// 5. No half-done create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn group_create_with_a_missing_member_leaves_nothing_behind() {
    let env = setup(DEFAULTS, "").await;
    let s = &env.scim;
    let alice = s
        .create_user(user_body("alice", "Alice", "A", "alice@corp.com"))
        .await;
    let ghost = id_of("ghost@corp.com");
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE], "displayName": "Half",
                        "members": [{"value": alice}, {"value": ghost}]})),
        )
        .await;
    assert!(
        (400..500).contains(&r.status),
        "POST /Groups with a missing member: expected a 4xx SCIM error, got {r}"
    );
    r.assert_error_shape("POST /Groups with a missing member");
    let d = r.description();
    assert!(
        d.contains(&ghost) || d.to_lowercase().contains("ghost@corp.com"),
        "the failing member is not named: {r}"
    );
    assert!(
        !d.contains(&alice),
        "the member that was fine is reported as failing: {r}"
    );
    assert!(!env.group_exists("Half").await, "half-created group left");
    let r = s.filter("/Groups", "displayName eq \"Half\"").await;
    assert_eq!(r.body["totalResults"], json!(0), "{r}");
    // The user who would have been a member is untouched, and a retry without the ghost works.
    assert!(env.user_exists("alice").await);
    let r = s
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [CORE], "displayName": "Half", "members": [{"value": alice}]})),
        )
        .await;
    assert_eq!(r.status, 201, "retry: {r}");
    assert_eq!(env.members("Half").await, ["User:alice"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Paging, projection, filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_projection_and_filters() {
    let env = setup("", "").await;
    let s = &env.scim;
    for (name, email) in [
        ("carol", "carol@corp.com"),
        ("eve", "eve@corp.com"),
        ("alice", "alice@corp.com"),
        ("dave", "dave@other.org"),
        ("bob", "bob@other.org"),
    ] {
        s.create_user(user_body(name, name, "Tester", email)).await;
    }

    let r = s.get("/Users?startIndex=2&count=2").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], json!(5), "{r}");
    assert_eq!(r.body["itemsPerPage"], json!(2), "{r}");
    assert_eq!(r.body["startIndex"], json!(2), "{r}");
    let page: Vec<Value> = r
        .resources()
        .iter()
        .map(|u| u["userName"].clone())
        .collect();
    assert_eq!(page, [json!("bob"), json!("carol")], "{r}");

    let r = s.get("/Users").await;
    let all: Vec<Value> = r
        .resources()
        .iter()
        .map(|u| u["userName"].clone())
        .collect();
    assert_eq!(
        all,
        ["alice", "bob", "carol", "dave", "eve"].map(|n| json!(n)),
        "{r}"
    );

    let r = s
        .get("/Users?sortBy=userName&sortOrder=descending&count=1")
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.resources()[0]["userName"], json!("eve"), "{r}");

    let r = s.get("/Users?attributes=userName").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.resources().len(), 5);
    for u in r.resources() {
        let keys: Vec<&String> = u.as_object().unwrap().keys().collect();
        for k in &keys {
            assert!(
                ["id", "userName", "schemas", "meta"].contains(&k.as_str()),
                "attributes=userName returned {k}: {u}"
            );
        }
        assert!(u.get("id").is_some() && u.get("userName").is_some(), "{u}");
    }

    let r = s.filter("/Users", "emails co \"corp.com\"").await;
    assert_eq!(r.status, 200, "{r}");
    let found: Vec<Value> = r
        .resources()
        .iter()
        .map(|u| u["userName"].clone())
        .collect();
    assert_eq!(found, ["alice", "carol", "eve"].map(|n| json!(n)), "{r}");
    assert_eq!(r.body["totalResults"], json!(3), "{r}");

    let r = s
        .filter(
            "/Users",
            "name.familyName eq \"Tester\" and (emails co \"other.org\" or userName eq \"eve\")",
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let found: Vec<Value> = r
        .resources()
        .iter()
        .map(|u| u["userName"].clone())
        .collect();
    assert_eq!(found, ["bob", "dave", "eve"].map(|n| json!(n)), "{r}");

    for bad in [
        "meta.created gt \"2011-05-13T04:42:34Z\"",
        "userName eq",
        "userName ne \"x\"",
        "userName eq \"unterminated",
    ] {
        let r = s.filter("/Users", bad).await;
        r.assert_error(400, &format!("filter {bad:?}"));
        assert!(
            r.body.get("Resources").is_none(),
            "filter {bad:?} produced a listing: {r}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Protocol edges
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn protocol_edges() {
    let env = setup(DEFAULTS, "").await;
    let s = &env.scim;

    // Unknown path under the base: a SCIM 404, not the platform's page.
    let r = s.get("/Nope").await;
    r.assert_error(404, "GET /Nope");
    assert!(!r.text.to_lowercase().contains("<html"), "{r}");

    // Discovery.
    let r = s.get("/ServiceProviderConfigs").await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body["schemas"]
        .as_array()
        .is_some_and(|a| a.contains(&json!(CORE))));
    assert!(r.body["patch"]["supported"].is_boolean(), "{r}");
    assert!(r.body["filter"]["supported"].is_boolean(), "{r}");
    let r = s.get("/Schemas").await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.is_object(), "{r}");
    let r = s.get("/Schemas/Users").await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body["attributes"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["name"] == json!("userName"))));
    let r = s
        .call("POST", "/ServiceProviderConfigs", Some(json!({})))
        .await;
    r.assert_error(405, "POST /ServiceProviderConfigs");

    // Authentication.
    let r = s
        .send(
            "GET",
            &format!("{BASE}/Users"),
            &[("content-type", "application/json")],
            None,
        )
        .await;
    r.assert_error(401, "no token");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "challenge {challenge:?}");
    let wrong = "wrong-token-but-long-enough-00000";
    for auth in [
        format!("Bearer {wrong}"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("a:b")
        ),
    ] {
        let r = s
            .send(
                "GET",
                &format!("{BASE}/Users"),
                &[("authorization", &auth)],
                None,
            )
            .await;
        r.assert_error(401, &format!("Authorization {auth}"));
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "challenge {challenge:?}");
    }
    let r = s
        .send(
            "POST",
            &format!("{BASE}/Users"),
            &[("content-type", "application/json")],
            Some(
                user_body("intruder", "I", "N", "i@x.org")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_error(401, "POST without a token");
    assert!(!env.user_exists("intruder").await);

    // Method override: POST + X-HTTP-Method-Override: DELETE deletes.
    let id = s
        .create_user(user_body("override", "O", "R", "o@corp.com"))
        .await;
    let auth = format!("Bearer {TOKEN}");
    let r = s
        .send(
            "POST",
            &format!("{BASE}/Users/{id}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-http-method-override", "DELETE"),
            ],
            None,
        )
        .await;
    assert_eq!(
        r.status, 200,
        "POST with X-HTTP-Method-Override: DELETE: {r}"
    );
    assert!(!env.user_exists("override").await);

    // The /v1 prefix.
    let r = s
        .call(
            "POST",
            "/v1/Users",
            Some(user_body("viaone", "V", "One", "v1@corp.com")),
        )
        .await;
    assert_eq!(r.status, 201, "POST /v1/Users: {r}");
    let v1id = r.id();
    assert_eq!(
        r.header("location"),
        Some(format!("{}{BASE}/v1/Users/{v1id}", s.origin())),
        "{r}"
    );
    assert!(env.user_exists("viaone").await);
    let r = s.get(&format!("/v1/Users/{v1id}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["userName"], json!("viaone"));
    let r = s
        .get(&format!(
            "/v1/Users?filter={}",
            enc("userName eq \"viaone\"")
        ))
        .await;
    assert_eq!(r.body["totalResults"], json!(1), "{r}");

    // Malformed JSON.
    let r = s
        .send(
            "POST",
            &format!("{BASE}/Users"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(br#"{"userName": "broken", "#.to_vec()),
        )
        .await;
    r.assert_error(400, "malformed JSON");
    assert!(!env.user_exists("broken").await);

    // Audit lines for a create and a refusal.
    let r = s
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [CORE], "userName": "Administrator"})),
        )
        .await;
    r.assert_error(403, "POST Administrator");
    let audit = env.audit();
    assert!(
        audit.iter().any(|l| l["operation"] == json!("create_user")
            && l["target"] == json!("viaone")
            && l["result"] == json!("done")),
        "no audit line for the create: {audit:?}"
    );
    assert!(
        audit.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Administrator"))
            && l["result"] == json!("refused")
            && !l["reason"].is_null()),
        "no audit line for the refusal: {audit:?}"
    );
    for l in &audit {
        assert!(l["time"].is_string() && l["client"].is_string(), "{l}");
    }

    // No token anywhere, looked for once every request's lines are out.
    assert!(
        env.gw
            .wait_access_lines(env.scim.sent(), std::time::Duration::from_secs(30))
            .await,
        "access lines missing: {:?}",
        env.gw.logs()
    );
    let audit_text = std::fs::read_to_string(env.gw.dir.join("audit.jsonl")).unwrap();
    let logs = env.gw.all_output().join("\n");
    for secret in [TOKEN, wrong] {
        assert!(!audit_text.contains(secret), "token in the audit log");
        assert!(!logs.contains(secret), "token in the gateway's logs");
    }
    assert!(
        logs.contains("/SCIMProvider/SCIM"),
        "no access log lines for SCIM requests"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Subsystem state
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stopped_scim_answers_503_until_started_on_the_admin_listener() {
    let env = setup("", "auto_start = false\n").await;
    let s = &env.scim;
    s.get("/Users").await.assert_error(503, "before start");
    s.call(
        "POST",
        "/Users",
        Some(user_body("early", "E", "A", "e@corp.com")),
    )
    .await
    .assert_error(503, "POST before start");
    assert!(!env.user_exists("early").await);

    let r = env.admin(Method::GET, "/scim/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(status["started"], json!(false), "{status}");

    let r = env.admin(Method::POST, "/scim/start").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.get("/Users").await;
    assert_eq!(r.status, 200, "after start: {r}");
    s.create_user(user_body("late", "L", "A", "l@corp.com"))
        .await;
    assert!(env.user_exists("late").await);

    let r = env.admin(Method::GET, "/scim/status").await;
    let status: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(status["started"], json!(true), "{status}");
    assert_eq!(status["enabled"], json!(true), "{status}");

    let r = env.admin(Method::POST, "/scim/stop").await;
    assert_eq!(r.status, 200, "{}", r.text());
    s.get("/Users").await.assert_error(503, "after stop");
    let r = env.admin(Method::GET, "/scim/status").await;
    let status: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(status["started"], json!(false), "{status}");
}

#[tokio::test]
async fn disabled_scim_answers_404() {
    let env = setup("", "enabled = false\n").await;
    let s = &env.scim;
    s.get("/Users")
        .await
        .assert_error(404, "GET /Users, disabled");
    s.call(
        "POST",
        "/Users",
        Some(user_body("nope", "N", "O", "n@corp.com")),
    )
    .await
    .assert_error(404, "POST /Users, disabled");
    assert!(!env.user_exists("nope").await);
    let r = env.admin(Method::POST, "/scim/start").await;
    assert_ne!(r.status, 200, "a disabled SCIM was started: {}", r.text());
    s.get("/Users")
        .await
        .assert_error(404, "GET /Users after a start attempt");
    // Never the platform's answer.
    assert!(!s.get("/Users").await.text.to_lowercase().contains("<html"));
}
