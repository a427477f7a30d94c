//! The gateway against a development platform that behaves like the real one where
//! platform-contract.md says versions are strict: opaque 500s for failed service calls, the
//! password policy, sessions that outlive DisableUser, names looked up with or without case
//! (8.x and 9.x/10.x), the stock UserExtensions shape and tag vocabularies. Judged by the
//! platform's state, read with the gateway's own native client.

mod common;

use common::dev_env::{DevEnv, DevEnvSpec, TOKEN};
use common::scim::Version;
use scimgate::dev::platform::{DevPlatform, Flavor};
use scimgate::platform::{Platform, PlatformError, ThingWorx};
use serde_json::{json, Value};
use std::net::SocketAddr;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

type Env = DevEnv;

async fn setup(flavor: Flavor, provisioning: &str) -> Env {
    setup_with(flavor, provisioning, "", |_| {}).await
}

/// `platform`: extra keys of `[platform]`; `prepare` runs on the development platform before
/// the gateway starts (and probes it).
async fn setup_with(
    flavor: Flavor,
    provisioning: &str,
    platform: &str,
    prepare: impl FnOnce(&DevPlatform),
) -> Env {
    let spec = DevEnvSpec {
        flavor: Some(flavor),
        platform,
        provisioning,
        ..Default::default()
    };
    DevEnv::start_prepared(spec, prepare).await
}

struct Resp {
    status: u16,
    body: Value,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Env {
    async fn call_at(&self, v: Version, method: &str, rel: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        let r = self
            .scim
            .call_as(
                &auth,
                v,
                method,
                rel,
                &[
                    ("accept", "application/json"),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        Resp {
            status: r.status,
            body: r.body,
        }
    }

    async fn call(&self, method: &str, rel: &str, body: Option<Value>) -> Resp {
        self.call_at(Version::V2, method, rel, body).await
    }

    async fn call_v1(&self, method: &str, rel: &str, body: Option<Value>) -> Resp {
        self.call_at(Version::V1, method, rel, body).await
    }

    /// The gateway's own native client, pointed at the same development platform.
    fn platform(&self) -> ThingWorx {
        self.platform_as(&format!("app_key = \"{}\"", self.key))
    }
}

fn user(name: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "active": true})
}

fn group(name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
    json!({"schemas": [GROUP], "displayName": name, "members": members})
}

#[tokio::test]
async fn duplicates_and_missing_members_are_found_by_reading_not_by_the_platform_wording() {
    let env = setup(Flavor::V9, "").await;
    let r = env
        .call("POST", "/Users", Some(user("Dup.User@corp.com")))
        .await;
    assert_eq!(r.status, 201, "{r}");
    // The platform answers a duplicate create with a bare 500; the gateway never gets there.
    for name in ["Dup.User@corp.com", "dup.user@CORP.com"] {
        let r = env.call("POST", "/Users", Some(user(name))).await;
        assert_eq!(r.status, 409, "{name}: {r}");
        assert_eq!(r.body["scimType"], "uniqueness", "{r}");
    }
    let r = env.call("POST", "/Groups", Some(group("Team", &[]))).await;
    assert_eq!(r.status, 201, "{r}");
    let r = env.call("POST", "/Groups", Some(group("TEAM", &[]))).await;
    assert_eq!(r.status, 409, "{r}");
    // A member that names nothing is a 400, and the group is not created.
    let r = env
        .call(
            "POST",
            "/Groups",
            Some(group("Other", &["nobody%40corp.com"])),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    let tw = env.platform();
    assert!(matches!(
        tw.get_group("Other").await,
        Err(PlatformError::NotFound(_))
    ));
    let users = tw.list_users().await.unwrap();
    assert_eq!(
        users
            .iter()
            .filter(|u| u.name.eq_ignore_ascii_case("dup.user@corp.com"))
            .count(),
        1
    );
}

#[tokio::test]
async fn passwords_the_platform_policy_refuses_are_a_400_before_any_call() {
    let env = setup(Flavor::V9, "").await;
    let tw = env.platform();
    for (password, what) in [
        ("short-pw", "8 characters"),
        ("thirteen-char", "13 characters"),
        (&"p".repeat(129) as &str, "129 characters"),
    ] {
        let mut body = user("pw.user");
        body["password"] = json!(password);
        let r = env.call("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {r}");
        let detail = r.body["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("14 to 128"), "{what}: {detail}");
        assert!(matches!(
            tw.get_user("pw.user").await,
            Err(PlatformError::NotFound(_))
        ));
    }
    let mut body = user("pw.user");
    body["password"] = json!("fourteen-chars");
    let r = env.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.body["id"].as_str().unwrap().to_string();
    // A change of password is held to the same rule, in 1.1 and 2.0.
    let r = env
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "password", "value": "too-short"}]
            })),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    let r = env
        .call_v1(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"userName": "pw.user", "password": "too-short"})),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
}

#[tokio::test]
async fn the_minimum_password_length_is_a_setting() {
    let env = setup(Flavor::V8, "password_min_length = 10").await;
    let mut body = user("ten.chars");
    body["password"] = json!("ten-chars!");
    let r = env.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{r}");
    let mut body = user("nine.chars");
    body["password"] = json!("nine-char");
    let r = env.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 400, "{r}");
}

#[tokio::test]
async fn deactivation_ends_sessions_although_disable_user_alone_does_not() {
    let env = setup(Flavor::V9, "").await;
    let tw = env.platform();
    let password = "session-password-1";
    let mut body = user("Sess.User");
    body["password"] = json!(password);
    let r = env.call("POST", "/Users", Some(body)).await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let login = || async {
        let as_user = env.platform_as(&format!(
            "username = \"Sess.User\"\npassword = \"{password}\""
        ));
        as_user.current_user().await.unwrap();
    };
    let active = || async {
        tw.active_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect::<Vec<_>>()
    };

    // The platform alone: DisableUser leaves the session alive.
    login().await;
    tw.set_user_enabled("Sess.User", false).await.unwrap();
    assert!(active().await.contains(&"Sess.User".to_string()));
    tw.terminate_sessions("Sess.User").await.unwrap();
    tw.set_user_enabled("Sess.User", true).await.unwrap();

    // Through SCIM 2.0 (PATCH) and 1.1 (PUT): the gateway ends it.
    login().await;
    assert!(active().await.contains(&"Sess.User".to_string()));
    let r = env
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(!tw.is_user_enabled("Sess.User").await.unwrap());
    let now = active().await;
    assert!(!now.contains(&"Sess.User".to_string()), "{now:?}");
}

/// The same SCIM story on both name-lookup behaviours: names keep the spelling they were
/// created with, ids are the same whatever case a client uses, and every call after a lookup
/// names the entity as the platform spells it (8.x finds nothing otherwise).
async fn names_keep_their_spelling_on(flavor: Flavor) {
    let env = setup(flavor, "").await;
    let tw = env.platform();
    let r = env
        .call("POST", "/Users", Some(user("Mixed.Case@Corp.com")))
        .await;
    assert_eq!(r.status, 201, "{r}");
    let uid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["userName"], "Mixed.Case@Corp.com");
    let r = env
        .call("POST", "/Users", Some(user("mixed.case@corp.com")))
        .await;
    assert_eq!(r.status, 409, "a duplicate in another case: {r}");

    let r = env
        .call("POST", "/Groups", Some(group("Sales Team", &[&uid])))
        .await;
    assert_eq!(r.status, 201, "{r}");
    let gid = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["displayName"], "Sales Team");
    let r = env
        .call("POST", "/Groups", Some(group("SALES TEAM", &[])))
        .await;
    assert_eq!(r.status, 409, "{r}");

    // The id encodes the folded name (stable whatever case a client sends the name in), so
    // the gateway looks the stored spelling up.
    let r = env.call("GET", &format!("/Users/{uid}"), None).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["userName"], "Mixed.Case@Corp.com");
    assert_eq!(r.body["id"], uid.as_str());
    let filter = "userName%20eq%20%22MIXED.CASE%40corp.com%22";
    let r = env
        .call("GET", &format!("/Users?filter={filter}"), None)
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["totalResults"], 1, "{r}");
    assert_eq!(r.body["Resources"][0]["id"], uid.as_str(), "{r}");
    let r = env.call("GET", &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["members"][0]["value"], uid.as_str(), "{r}");

    // Membership out and in again, extension attributes, deactivation.
    let patch = |op: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": op, "path": "members", "value": [{"value": uid}]}]
        })
    };
    let r = env
        .call("PATCH", &format!("/Groups/{gid}"), Some(patch("remove")))
        .await;
    assert!(r.status == 200 || r.status == 204, "{r}");
    assert!(tw.group_members("Sales Team").await.unwrap().is_empty());
    let r = env
        .call("PATCH", &format!("/Groups/{gid}"), Some(patch("add")))
        .await;
    assert!(r.status == 200 || r.status == 204, "{r}");
    let members = tw.group_members("Sales Team").await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "Mixed.Case@Corp.com");
    let r = env
        .call(
            "PATCH",
            &format!("/Users/{uid}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "replace", "path": "name.givenName", "value": "Mixed"},
                    {"op": "replace", "path": "active", "value": false}
                ]
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(!tw.is_user_enabled("Mixed.Case@Corp.com").await.unwrap());
    let r = env.call("GET", &format!("/Users/{uid}"), None).await;
    assert_eq!(r.body["name"]["givenName"], "Mixed", "{r}");

    // An entity the gateway has never seen (created on the platform directly) is found from
    // a name in another case too, and joins a group under its stored spelling.
    tw.create_user(&scimgate::platform::NewUser {
        name: "Native.User".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let filter = "userName%20eq%20%22native.user%22";
    let r = env
        .call("GET", &format!("/Users?filter={filter}"), None)
        .await;
    assert_eq!(r.body["totalResults"], 1, "{r}");
    assert_eq!(r.body["Resources"][0]["userName"], "Native.User", "{r}");
    let native = r.body["Resources"][0]["id"].as_str().unwrap().to_string();
    let r = env
        .call(
            "PATCH",
            &format!("/Groups/{gid}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": native}]}]
            })),
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{r}");
    let members = tw.group_members("Sales Team").await.unwrap();
    assert!(
        members.iter().any(|m| m.name == "Native.User"),
        "{members:?}"
    );
    let fresh = env.platform();
    assert_eq!(
        fresh.get_user("NATIVE.user").await.unwrap().name,
        "Native.User"
    );
    assert_eq!(
        fresh.get_group("sales team").await.unwrap().name,
        "Sales Team"
    );

    let r = env.call("DELETE", &format!("/Groups/{gid}"), None).await;
    assert_eq!(r.status, 204, "{r}");
    let r = env.call("DELETE", &format!("/Users/{uid}"), None).await;
    assert_eq!(r.status, 204, "{r}");
    assert!(tw
        .list_users()
        .await
        .unwrap()
        .iter()
        .all(|u| u.name != "Mixed.Case@Corp.com"));
    assert!(tw
        .list_groups()
        .await
        .unwrap()
        .iter()
        .all(|g| g.name != "Sales Team"));
}

#[tokio::test]
async fn names_on_a_9x_10x_platform() {
    names_keep_their_spelling_on(Flavor::V9).await;
}

#[tokio::test]
async fn names_on_an_8x_platform_that_finds_names_only_as_spelled() {
    names_keep_their_spelling_on(Flavor::V8).await;
}

fn with_extensions(name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": name,
        "externalId": external_id,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "title": "Countess",
        "active": true,
    })
}

/// Extension values are read by whichever mechanism the platform answers, chosen once by a
/// probe at start and logged; a setting can force one.
async fn extensions_round_trip(env: &Env, name: &str) {
    let r = env
        .call("POST", "/Users", Some(with_extensions(name, "ext-7")))
        .await;
    assert_eq!(r.status, 201, "{r}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = env.call("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(r.body["name"]["givenName"], "Ada", "{r}");
    assert_eq!(r.body["title"], "Countess", "{r}");
    assert_eq!(r.body["externalId"], "ext-7", "{r}");
}

#[tokio::test]
async fn extension_values_are_read_from_the_configuration_table_when_it_answers() {
    let env = setup(Flavor::V9, "").await;
    extensions_round_trip(&env, "ct.user").await;
    let logged = env
        .gw
        .wait_log(std::time::Duration::from_secs(10), |j| {
            j.message()
                .contains("user extension values are read with GetConfigurationTable")
        })
        .await;
    assert!(logged.is_some(), "{:?}", env.gw.logs());
    let probes = env
        .gw
        .json_logs()
        .iter()
        .filter(|j| j.message().contains("user extension values are read with"))
        .count();
    assert_eq!(probes, 1, "logged once");
    // Stored where a stock platform keeps them: values in the configuration table, the
    // externalId as a tag term (no scimExternalId property exists).
    let tw = env.platform();
    let ext = tw.user_extensions("ct.user").await.unwrap();
    assert_eq!(ext["firstName"], "Ada");
    assert!(!ext.contains_key("scimExternalId"));
    let user = tw.get_user("ct.user").await.unwrap();
    assert!(user
        .tags
        .iter()
        .any(|t| t.vocabulary == "SCIMExternalId" && t.term == "ext-7"));
}

#[tokio::test]
async fn extension_values_are_read_with_get_property_values_where_that_is_what_answers() {
    let env = setup_with(Flavor::V9, "", "", |p| p.model_property_value_reads(true)).await;
    extensions_round_trip(&env, "pv.user").await;
    let logged = env
        .gw
        .wait_log(std::time::Duration::from_secs(10), |j| {
            j.message()
                .contains("user extension values are read with GetPropertyValues")
        })
        .await;
    assert!(logged.is_some(), "{:?}", env.gw.logs());
}

#[tokio::test]
async fn an_operator_added_external_id_property_is_an_option() {
    let env = setup_with(
        Flavor::V9,
        "external_id_property = \"scimExternalId\"",
        "extensions = \"configuration-table\"",
        |_| {},
    )
    .await;
    // The stock shape lacks it: a user write fails with a 500 that names the setting.
    let r = env
        .call(
            "POST",
            "/Users",
            Some(with_extensions("prop.user", "ext-1")),
        )
        .await;
    assert_eq!(r.status, 500, "{r}");
    let detail = r.body["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("external_id_property"), "{detail}");
    let tw = env.platform();
    assert!(matches!(
        tw.get_user("prop.user").await,
        Err(PlatformError::NotFound(_))
    ));
    // Once an administrator adds it to the shape, the externalId lives there.
    let r = tw.user_extension_properties().await.unwrap().unwrap();
    assert!(!r.contains(&"scimExternalId".to_string()));
    add_property(env.platform_addr, &env.key, "scimExternalId").await;
    let r = env
        .call(
            "POST",
            "/Users",
            Some(with_extensions("prop.user", "ext-1")),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body["externalId"], "ext-1", "{r}");
    let ext = tw.user_extensions("prop.user").await.unwrap();
    assert_eq!(ext["scimExternalId"], "ext-1");
    let user = tw.get_user("prop.user").await.unwrap();
    assert!(user.tags.iter().all(|t| t.vocabulary != "SCIMExternalId"));
}

/// `AddPropertyDefinition` on the UserExtensions shape, as an administrator would.
async fn add_property(addr: SocketAddr, key: &str, name: &str) {
    let body = json!({"name": name, "type": "STRING"}).to_string();
    let req = http::Request::builder()
        .method("POST")
        .uri("/Thingworx/ThingShapes/UserExtensions/Services/AddPropertyDefinition")
        .header("host", addr.to_string())
        .header("appKey", key)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(common::full(body))
        .unwrap();
    let resp = common::send_plain(addr, req).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn groups_get_their_project_on_an_8x_platform_whose_create_group_ignores_it() {
    let env = setup(
        Flavor::V8,
        "[provisioning.group_defaults]\nproject = \"MyProject\"\ntags = [\"Applications:SCIM\"]",
    )
    .await;
    let mut body = group("Plant Crew", &[]);
    body["externalId"] = json!("grp-1");
    let r = env.call("POST", "/Groups", Some(body)).await;
    assert_eq!(r.status, 201, "{r}");
    let g = env.platform().get_group("Plant Crew").await.unwrap();
    assert_eq!(g.project, "MyProject");
    assert!(g
        .tags
        .iter()
        .any(|t| t.vocabulary == "SCIMExternalId" && t.term == "grp-1"));
}

/// `scimgate check --config FILE --live [--probe]` as a separate process, against a
/// development platform that keeps serving meanwhile.
async fn check_live(
    platform_addr: SocketAddr,
    extra: String,
    args: &'static [&'static str],
) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let toml = common::config_toml(
            &common::plain_listener(),
            &format!("http://{platform_addr}"),
            "",
            &extra,
        );
        let path = dir.path().join("scimgate.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(common::bin())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_remove("SCIMGATE_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_probe_verifies_everything_and_leaves_nothing_behind() {
    for flavor in [Flavor::V9, Flavor::V8] {
        let env = setup(flavor, "").await;
        let tw = env.platform();
        let users_before = tw.list_users().await.unwrap().len();
        let groups_before = tw.list_groups().await.unwrap().len();
        let extra = format!(
            "[platform]\napp_key = \"{}\"\n\n[provisioning.user_defaults]\nproject = \"MyProject\"\nhome_mashup = \"Home\"\ntags = [\"Applications:SCIM\"]\n[provisioning.group_defaults]\nproject = \"MyProject\"\n",
            env.key
        );
        let (ok, out) = check_live(env.platform_addr, extra, &["--live", "--probe"]).await;
        assert!(ok, "{flavor:?}:\n{out}");
        for expected in [
            "ok: the credentials authenticate as \"Administrator\"",
            "ok: \"Administrator\" is in Administrators",
            "ok: the UserExtensions thing shape has every mapped property",
            "the model tag vocabulary \"SCIMExternalId\" exists and is dynamic",
            "ok: every default project and mashup exists",
            "ok: GetEntityList lists users",
            "ok: probe: every mapped extension property reads back",
            "ok: probe: the externalId tag reads back",
            "ok: probe: the membership reads back",
            "ok: probe: the user reads back disabled",
            "ok: probe: nothing was left behind",
            "live check: OK",
        ] {
            assert!(out.contains(expected), "{flavor:?}: {expected:?} in\n{out}");
        }
        assert!(!out.contains("FAIL"), "{out}");
        assert_eq!(tw.list_users().await.unwrap().len(), users_before);
        assert_eq!(tw.list_groups().await.unwrap().len(), groups_before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_names_each_missing_prerequisite_and_its_fix() {
    let env = setup_with(Flavor::V9, "", "", |p| {
        // An administrator never created the externalId vocabulary as dynamic.
        p.ensure_vocabulary("SCIMExternalId", false).unwrap();
    })
    .await;
    let extra = format!(
        "[platform]\napp_key = \"{}\"\n\n[provisioning]\nexternal_id_property = \"scimExternalId\"\ngroup_external_id_vocabulary = \"GroupIds\"\n[provisioning.user_defaults]\nproject = \"NoSuchProject\"\ntags = [\"Departments:Sales\"]\n",
        env.key
    );
    let (ok, out) = check_live(env.platform_addr, extra, &["--live"]).await;
    assert!(!ok, "{out}");
    for expected in [
        "FAIL: provisioning.external_id_property = \"scimExternalId\": the UserExtensions thing shape has no such property",
        "FAIL: provisioning.group_external_id_vocabulary: the platform has no model tag vocabulary \"GroupIds\"",
        "FAIL: provisioning.user_defaults.project: the platform has no project \"NoSuchProject\"",
        "FAIL: provisioning.user_defaults.tags: Departments:Sales names the model tag vocabulary \"Departments\"",
        "fix: create the dynamic model tag vocabulary \"GroupIds\"",
        "live check: 4 failed",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    // The user vocabulary is not needed (a property keeps user externalIds): not checked.
    assert!(!out.contains("user_external_id_vocabulary"), "{out}");

    // Wrong credentials: one failure naming the setting.
    let (ok, out) = check_live(
        env.platform_addr,
        "[platform]\napp_key = \"not-a-key-0123456789abcdef0123456789\"\n".into(),
        &["--live"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL: the platform did not accept the gateway's credentials"),
        "{out}"
    );
    assert!(out.contains("platform.app_key"), "{out}");
}

#[tokio::test]
async fn external_ids_a_tag_cannot_hold_are_not_kept_and_never_a_5xx() {
    let env = setup(Flavor::V9, "").await;
    for (i, external_id) in ["   ", " padded ", "a;b", "ok:with:colons"]
        .iter()
        .enumerate()
    {
        let name = format!("ext.user{i}");
        let mut body = user(&name);
        body["externalId"] = json!(external_id);
        let r = env.call("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 201, "{external_id:?}: {r}");
        let kept = r
            .body
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_string);
        if *external_id == "ok:with:colons" {
            assert_eq!(kept.as_deref(), Some("ok:with:colons"), "{r}");
        } else {
            assert_eq!(kept, None, "{external_id:?}: {r}");
        }
        let mut body = group(&format!("Ext Group {i}"), &[]);
        body["externalId"] = json!(external_id);
        let r = env.call("POST", "/Groups", Some(body)).await;
        assert_eq!(r.status, 201, "{external_id:?}: {r}");
    }
}
