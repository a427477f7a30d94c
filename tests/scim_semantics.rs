//! SCIM semantics the protocol suites do not cover, end to end against the real binary in front
//! of the development platform: SearchRequest members of the wrong type, the authentication
//! schemes discovery lists, `meta.lastModified`, home emails, attributes the mapping cannot
//! store, and a mapping that names a property the platform lacks.

mod common;

use common::dev_env::{DevEnv, DevEnvSpec, TOKEN};
use common::scim::{enc, ScimResp, Version};
use common::{config_toml, plain_listener, run_check, Json};
use scimgate::platform::{Platform, ThingWorx};
use serde_json::{json, Value};
use std::time::Duration;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const BASIC_PASSWORD: &str = "s3cret-password-for-basic";

/// The development platform, the gateway in front of it and a SCIM client.
type Env = DevEnv;

/// `auth`: the `[scim]`/`[auth]` tables; `provisioning`: keys and sub-tables of
/// `[provisioning]`; `env`: extra environment for the gateway (secrets).
async fn setup(auth: &str, provisioning: &str, env: &[(&str, &str)]) -> Env {
    DevEnv::start(DevEnvSpec {
        auth: Some(auth),
        provisioning,
        env,
        ..Default::default()
    })
    .await
}

fn bearer_only() -> String {
    format!("[scim]\nbearer_token = \"{TOKEN}\"\n")
}

async fn default_env() -> Env {
    setup(&bearer_only(), "", &[]).await
}

impl Env {
    /// An authenticated SCIM 2.0 call; `rel` is relative to the 2.0 base.
    async fn call(&self, method: &str, rel: &str, body: Option<Value>) -> ScimResp {
        let auth = format!("Bearer {TOKEN}");
        self.scim
            .call_as(&auth, Version::V2, method, rel, &[], body)
            .await
    }

    /// An authenticated SCIM 1.1 call; `rel` is relative to the 1.1 base.
    async fn call_v1(&self, method: &str, rel: &str, body: Option<Value>) -> ScimResp {
        let auth = format!("Bearer {TOKEN}");
        self.scim
            .call_as(&auth, Version::V1, method, rel, &[], body)
            .await
    }

    async fn create(&self, body: Value) -> ScimResp {
        let r = self.call("POST", "/Users", Some(body)).await;
        assert_eq!(r.status, 201, "POST /Users: {r}");
        r
    }

    /// A native client to the development platform, built as the gateway builds its own.
    fn platform(&self) -> ThingWorx {
        self.platform_as(&format!("app_key = \"{}\"", self.key))
    }

    /// The warnings about attributes the mapping does not store, so far.
    fn unstored_warnings(&self) -> Vec<Json> {
        self.gw
            .json_logs()
            .into_iter()
            .filter(|j| {
                j.str_field("level").as_deref() == Some("WARN")
                    && j.message().contains("attribute mapping does not store")
            })
            .collect()
    }
}

fn user(name: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": name,
        "emails": [{"value": format!("{name}@corp.example"), "type": "work", "primary": true}],
        "active": true,
    })
}

fn assert_v2_error(r: &ScimResp, status: u16, scim_type: Option<&str>, what: &str) {
    assert_eq!(r.status, status, "{what}: {r}");
    assert!(
        r.body["schemas"]
            .as_array()
            .is_some_and(|s| s.contains(&json!(ERROR))),
        "{what}: not a SCIM error: {r}"
    );
    assert_eq!(r.body["status"], json!(status.to_string()), "{what}: {r}");
    if let Some(t) = scim_type {
        assert_eq!(r.body["scimType"], json!(t), "{what}: {r}");
    }
    assert!(r.body.get("Resources").is_none(), "{what}: {r}");
}

// ---------------------------------------------------------------------------------------------
// .search bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn search_members_of_the_wrong_type_are_refused_never_a_full_listing() {
    let env = default_env().await;
    env.create(user("alice")).await;
    for endpoint in ["/.search", "/Users/.search", "/Groups/.search"] {
        for filter in [
            json!(5),
            json!(true),
            json!({"attribute": "userName", "op": "eq", "value": "alice"}),
            json!(["userName eq \"alice\""]),
        ] {
            let r = env
                .call(
                    "POST",
                    endpoint,
                    Some(json!({"schemas": [SEARCH], "filter": filter})),
                )
                .await;
            assert_v2_error(
                &r,
                400,
                Some("invalidFilter"),
                &format!("{endpoint} filter {filter}"),
            );
        }
        // null and absent are "no filter".
        for body in [
            json!({"schemas": [SEARCH], "filter": null}),
            json!({"schemas": [SEARCH]}),
        ] {
            let r = env.call("POST", endpoint, Some(body.clone())).await;
            assert_eq!(r.status, 200, "{endpoint} {body}: {r}");
        }
    }
    let r = env
        .call(
            "POST",
            "/Users/.search",
            Some(json!({"schemas": [SEARCH], "filter": null})),
        )
        .await;
    assert!(r.body["totalResults"].as_u64().unwrap_or(0) >= 1, "{r}");

    for (member, value) in [
        ("attributes", json!(7)),
        ("attributes", json!(["userName", 3])),
        ("excludedAttributes", json!({"emails": true})),
        ("sortBy", json!(["userName"])),
        ("sortOrder", json!(1)),
        ("startIndex", json!("1")),
        ("count", json!("10")),
        ("count", json!(2.5)),
    ] {
        for endpoint in ["/.search", "/Users/.search"] {
            let r = env
                .call(
                    "POST",
                    endpoint,
                    Some(json!({"schemas": [SEARCH], member: value})),
                )
                .await;
            assert_v2_error(
                &r,
                400,
                Some("invalidValue"),
                &format!("{endpoint} {member}: {value}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceProviderConfig
// ---------------------------------------------------------------------------------------------

/// `(type, name, primary)` of the 2.0 schemes and the names of the 1.1 ones.
async fn schemes(env: &Env) -> (Vec<(String, String, bool)>, Vec<String>) {
    let r = env.call("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(r.status, 200, "{r}");
    let v2 = r.body["authenticationSchemes"]
        .as_array()
        .unwrap_or_else(|| panic!("no authenticationSchemes: {r}"))
        .iter()
        .map(|s| {
            assert!(
                s["specUri"].is_string() && s["description"].is_string(),
                "{s}"
            );
            (
                s["type"].as_str().unwrap_or("").to_string(),
                s["name"].as_str().unwrap_or("").to_string(),
                s["primary"] == json!(true),
            )
        })
        .collect();
    let r = env.call_v1("GET", "/ServiceProviderConfigs", None).await;
    assert_eq!(r.status, 200, "{r}");
    let v1 = r.body["authenticationSchemes"]
        .as_array()
        .unwrap_or_else(|| panic!("no 1.1 authenticationSchemes: {r}"))
        .iter()
        .map(|s| {
            assert!(s["specUrl"].is_string(), "{s}");
            s["name"].as_str().unwrap_or("").to_string()
        })
        .collect();
    (v2, v1)
}

fn owned(list: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    list.iter()
        .map(|(t, n, p)| (t.to_string(), n.to_string(), *p))
        .collect()
}

#[tokio::test]
async fn service_provider_config_lists_the_configured_schemes() {
    let env = default_env().await;
    let (v2, v1) = schemes(&env).await;
    assert_eq!(
        v2,
        owned(&[("oauthbearertoken", "Static Bearer Token", true)])
    );
    assert_eq!(v1, ["Static Bearer Token"]);
    drop(env);

    let with_basic = format!(
        "{}\n[auth.basic]\nusername = \"pingfed\"\npassword = \"env:SCIMGATE_TEST_BASIC_PASSWORD\"\n",
        bearer_only()
    );
    let env = setup(
        &with_basic,
        "",
        &[("SCIMGATE_TEST_BASIC_PASSWORD", BASIC_PASSWORD)],
    )
    .await;
    let (v2, v1) = schemes(&env).await;
    assert_eq!(
        v2,
        owned(&[
            ("oauthbearertoken", "Static Bearer Token", true),
            ("httpbasic", "HTTP Basic", false),
        ])
    );
    assert_eq!(v1, ["Static Bearer Token", "HTTP Basic"]);
    drop(env);

    // A JWT provider (its key set need not load for the static token to work).
    let jwks = common::dead_addr().await;
    let with_jwt = format!(
        "{}\n[[auth.jwt]]\nissuer = \"https://idp.example/\"\naudiences = [\"scimgate\"]\njwks_url = \"http://{jwks}/jwks.json\"\nalgorithms = [\"RS256\"]\n",
        bearer_only()
    );
    let env = setup(&with_jwt, "", &[]).await;
    let (v2, v1) = schemes(&env).await;
    assert_eq!(
        v2,
        owned(&[
            ("oauthbearertoken", "OAuth Bearer Token", true),
            ("oauthbearertoken", "Static Bearer Token", false),
        ])
    );
    assert_eq!(v1, ["OAuth Bearer Token", "Static Bearer Token"]);
}

// ---------------------------------------------------------------------------------------------
// meta.lastModified
// ---------------------------------------------------------------------------------------------

fn last_modified(r: &ScimResp) -> String {
    assert!(
        !r.text.contains("\"created\""),
        "meta.created must never be returned: {r}"
    );
    let t = r.body["meta"]["lastModified"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta.lastModified: {r}"))
        .to_string();
    // RFC 3339 UTC with milliseconds, as the gateway formats the platform's date.
    assert!(
        t.len() == 24 && t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );
    t
}

#[tokio::test]
async fn last_modified_comes_from_the_platform_and_created_never() {
    let env = default_env().await;
    let created = env.create(user("lm.user")).await;
    let id = created.id();
    let t0 = last_modified(&created);
    let got = env.call("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(last_modified(&got), t0, "{got}");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let patched = env
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "title", "value": "Boss"}]})),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched}");
    let t1 = last_modified(&patched);
    assert!(t1 > t0, "lastModified did not advance: {t0} then {t1}");

    let v1 = env.call_v1("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(v1.status, 200, "{v1}");
    assert_eq!(last_modified(&v1), t1, "{v1}");

    // Listings carry it too, and it filters as a timestamp.
    let list = env
        .call(
            "GET",
            &format!(
                "/Users?filter={}",
                enc(&format!("meta.lastModified ge \"{t1}\""))
            ),
            None,
        )
        .await;
    assert_eq!(list.status, 200, "{list}");
    let names: Vec<&str> = list.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    assert_eq!(names, ["lm.user"], "{list}");
    let none = env
        .call(
            "GET",
            &format!(
                "/Users?filter={}",
                enc(&format!("meta.lastModified gt \"{t1}\""))
            ),
            None,
        )
        .await;
    assert_eq!(none.body["totalResults"], json!(0), "{none}");
    let refused = env
        .call(
            "GET",
            &format!(
                "/Users?filter={}",
                enc("meta.created gt \"2020-01-01T00:00:00Z\"")
            ),
            None,
        )
        .await;
    assert_v2_error(&refused, 400, Some("invalidFilter"), "meta.created filter");

    // A group: created, then changed by a membership change.
    let g = env
        .call(
            "POST",
            "/Groups",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "LM Crew"}),
            ),
        )
        .await;
    assert_eq!(g.status, 201, "{g}");
    let g0 = last_modified(&g);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let add = env
        .call(
            "PATCH",
            &format!("/Groups/{}", g.id()),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": id}]}]})),
        )
        .await;
    assert!(add.status == 200 || add.status == 204, "{add}");
    let g1 = env.call("GET", &format!("/Groups/{}", g.id()), None).await;
    assert!(last_modified(&g1) > g0, "{g1}");

    // The schema says what meta holds.
    let schema = env.call("GET", &format!("/Schemas/{USER}"), None).await;
    let description = schema.body["description"].as_str().unwrap_or("");
    assert!(
        description.contains("meta.created is never returned")
            && description.contains("meta.lastModified is the platform's last-modified date"),
        "{schema}"
    );
}

// ---------------------------------------------------------------------------------------------
// Home emails and attributes the mapping cannot store
// ---------------------------------------------------------------------------------------------

fn emails_of(r: &ScimResp, kind: &str) -> Vec<String> {
    r.body["emails"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == json!(kind))
                .filter_map(|e| e["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn home_emails_are_stored_and_read_back() {
    let env = default_env().await;
    let mut body = user("home.mail");
    body["emails"] = json!([
        {"value": "home.mail@corp.example", "type": "work", "primary": true},
        {"value": "babs@home.example", "type": "home"},
        {"value": "babs2@home.example", "type": "home"},
    ]);
    let created = env.create(body).await;
    let id = created.id();
    let got = env.call("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(
        emails_of(&got, "home"),
        ["babs@home.example", "babs2@home.example"],
        "{got}"
    );
    assert_eq!(emails_of(&got, "work"), ["home.mail@corp.example"], "{got}");
    let ext = env.platform().user_extensions("home.mail").await.unwrap();
    assert_eq!(
        ext.get("altEmailAddresses").map(String::as_str),
        Some("babs@home.example,babs2@home.example"),
        "{ext:?}"
    );

    // 1.1 the same way, and a replaced home address replaces the stored one.
    let r = env
        .call_v1(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"schemas": ["urn:scim:schemas:core:1.0"], "userName": "home.mail",
                        "emails": [{"value": "home.mail@corp.example", "type": "work", "primary": true},
                                   {"value": "new@home.example", "type": "home"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(emails_of(&r, "home"), ["new@home.example"], "{r}");
    // Nothing in this exchange was dropped (looked at once every request's lines are out).
    assert!(
        env.gw
            .wait_access_lines(env.scim.sent(), Duration::from_secs(30))
            .await,
        "access lines missing: {:?}",
        env.gw.logs()
    );
    assert!(env.unstored_warnings().is_empty(), "{:?}", env.gw.logs());
}

#[tokio::test]
async fn attributes_the_mapping_cannot_store_are_named_once_in_a_warning() {
    let env = default_env().await;
    let mut body = user("nick");
    body["nickName"] = json!("Babs-the-nickname");
    body["emails"] = json!([
        {"value": "nick@corp.example", "type": "work"},
        {"value": "nick-other@corp.example", "type": "other"},
    ]);
    env.create(body).await;
    let line = env
        .gw
        .wait_log(Duration::from_secs(5), |j| {
            j.message().contains("attribute mapping does not store")
        })
        .await
        .unwrap_or_else(|| panic!("no warning: {:?}", env.gw.logs()));
    let warnings = env.unstored_warnings();
    assert_eq!(warnings.len(), 1, "one line per request: {warnings:?}");
    assert_eq!(line.str_field("level").as_deref(), Some("WARN"), "{line:?}");
    assert_eq!(
        line.str_field("operation").as_deref(),
        Some("users_create"),
        "{line:?}"
    );
    let names = line.str_field("attributes").unwrap_or_default();
    let names: Vec<&str> = names.split(", ").collect();
    assert_eq!(
        names.iter().filter(|n| **n == "nickName").count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"emails.other"), "{names:?}");
    // Names, never values: looked for once every request's lines are out.
    assert!(
        env.gw
            .wait_access_lines(env.scim.sent(), Duration::from_secs(30))
            .await,
        "access lines missing: {:?}",
        env.gw.logs()
    );
    for l in env.gw.logs() {
        assert!(
            !l.contains("Babs-the-nickname") && !l.contains("nick-other@corp.example"),
            "a value was logged: {l}"
        );
    }

    // A 2.0 PATCH that adds an unmapped attribute: one more line, for that operation only.
    let id = common::scim::id_of("nick");
    let r = env
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "x509Certificates", "value": [{"value": "MIIB"}]}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    // The log is read from the process's stderr as it comes.
    env.gw
        .wait_log(Duration::from_secs(5), |j| {
            j.str_field("operation").as_deref() == Some("users_patch")
        })
        .await;
    let warnings = env.unstored_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[1].str_field("operation").as_deref(),
        Some("users_patch")
    );
    assert_eq!(
        warnings[1].str_field("attributes").as_deref(),
        Some("x509Certificates"),
        "{warnings:?}"
    );

    // Everything stored: no line.
    env.create(user("plain")).await;
    assert!(
        env.gw
            .wait_access_lines(env.scim.sent(), Duration::from_secs(30))
            .await,
        "access lines missing: {:?}",
        env.gw.logs()
    );
    assert_eq!(env.unstored_warnings().len(), 2, "{:?}", env.gw.logs());
}

// ---------------------------------------------------------------------------------------------
// A mapping the platform cannot hold
// ---------------------------------------------------------------------------------------------

const MISSING_PROPERTY: &str = "[provisioning.user_attributes]\n\"nickName\" = \"nickProp\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_the_platform_lacks_is_a_configuration_error() {
    let env = setup(&bearer_only(), MISSING_PROPERTY, &[]).await;
    let mut body = user("nick.config");
    body["nickName"] = json!("Nick");
    let r = env.call("POST", "/Users", Some(body)).await;
    assert_v2_error(&r, 500, None, "create with an unknown property");
    let detail = r.body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("provisioning.user_attributes.\"nickName\"") && detail.contains("nickProp"),
        "the detail does not name the setting: {r}"
    );
    // The create was undone, so a retry after the fix starts clean.
    let search = env
        .call(
            "GET",
            &format!("/Users?filter={}", enc("userName eq \"nick.config\"")),
            None,
        )
        .await;
    assert_eq!(search.body["totalResults"], json!(0), "{search}");
    let error = env
        .gw
        .wait_log(Duration::from_secs(5), |j| {
            j.str_field("level").as_deref() == Some("ERROR")
                && j.str_field("settings")
                    .is_some_and(|s| s.contains("provisioning.user_attributes.\"nickName\""))
        })
        .await;
    assert!(error.is_some(), "no ERROR line: {:?}", env.gw.logs());

    // Without the attribute the mapping is not touched; a later update with it fails the same
    // way, in 1.1 too.
    let id = env.create(user("nick.config")).await.id();
    let r = env
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "add", "path": "nickName", "value": "Nick"}]})),
        )
        .await;
    assert_v2_error(&r, 500, None, "patch with an unknown property");
    let r = env
        .call_v1(
            "PUT",
            &format!("/Users/{id}"),
            Some(json!({"userName": "nick.config", "nickName": "Nick"})),
        )
        .await;
    assert_eq!(r.status, 500, "{r}");
    let description = r.body["Errors"][0]["description"].as_str().unwrap_or("");
    assert!(
        description.contains("nickName") && description.contains("nickProp"),
        "{r}"
    );

    // `scimgate check` asks the running platform and names the setting before any request.
    let toml = config_toml(
        &plain_listener(),
        &format!("http://{}", env.platform_addr),
        "",
        &format!(
            "[platform]\napp_key = \"{}\"\n\n{MISSING_PROPERTY}",
            env.key
        ),
    );
    let out = tokio::task::spawn_blocking(move || run_check(&toml))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(
        warnings[0].starts_with("warning: provisioning.user_attributes.\"nickName\": ")
            && warnings[0].contains("no user extension property \"nickProp\""),
        "{stdout}"
    );
    // The note on what the mapping drops follows the mapping: nickName is mapped here.
    let note = stdout
        .lines()
        .find(|l| l.starts_with("note: the attribute mapping does not store"))
        .unwrap_or_else(|| panic!("no note on unstored attributes: {stdout}"));
    assert!(
        note.contains("emails.other") && note.contains("x509Certificates"),
        "{note}"
    );
    assert!(!note.contains("nickName"), "{note}");
}

/// A plain listing (no filter; sorted by userName or not sorted) is ordered and paged by names
/// alone; it must give exactly what the general path does, which a filter that keeps every
/// user (`userName pr`) still takes: the same users, in the same order, page by page, both ways.
#[tokio::test]
async fn a_plain_listing_pages_in_the_order_of_the_general_path() {
    let env = default_env().await;
    for name in [
        "b.Mixed", "A.upper", "c.lower", "a.second", "B.again", "zed", "Älvsjö",
    ] {
        let r = env.call("POST", "/Users", Some(user(name))).await;
        assert_eq!(r.status, 201, "{name}: {r}");
    }
    let names = |r: &ScimResp| -> Vec<String> {
        r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_string())
            .collect()
    };
    let all = env.call("GET", "/Users?count=1000", None).await;
    assert_eq!(all.status, 200, "{all}");
    let total = all.body["totalResults"].as_u64().unwrap();
    assert!(total >= 7, "{all}");
    for order in [
        "",
        "&sortBy=userName",
        "&sortOrder=descending&sortBy=username",
    ] {
        for (start, count) in [(1, 1000), (1, 3), (4, 3), (7, 2), (2, 100)] {
            let page = format!("startIndex={start}&count={count}{order}");
            let plain = env.call("GET", &format!("/Users?{page}"), None).await;
            let general = env
                .call(
                    "GET",
                    &format!("/Users?filter={}&{page}", enc("userName pr")),
                    None,
                )
                .await;
            assert_eq!(plain.status, 200, "{page}: {plain}");
            assert_eq!(names(&plain), names(&general), "{page}");
            assert_eq!(plain.body["totalResults"], general.body["totalResults"]);
            assert_eq!(plain.body["startIndex"], general.body["startIndex"]);
        }
    }
    let ascending = names(
        &env.call("GET", "/Users?count=1000&sortBy=userName", None)
            .await,
    );
    let mut descending = names(
        &env.call(
            "GET",
            "/Users?count=1000&sortBy=userName&sortOrder=descending",
            None,
        )
        .await,
    );
    descending.reverse();
    assert_eq!(ascending, descending);
    let folded: Vec<String> = ascending.iter().map(|n| n.to_lowercase()).collect();
    let mut sorted = folded.clone();
    sorted.sort();
    assert_eq!(folded, sorted, "{ascending:?}");
}
