//! The development platform over real HTTP on loopback: authentication, the content rules,
//! users, groups, memberships, extension properties, sessions and persistence across restarts.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use scimgate::dev::platform::DevPlatform;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    key: String,
    password: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_in(dir: tempfile::TempDir) -> Server {
    let platform = DevPlatform::open(dir.path()).unwrap();
    let key = platform.ensure_app_key("tests", "Administrator").unwrap();
    // Vocabularies the tests tag with, as an administrator would create them.
    for vocabulary in ["Colors", "A"] {
        platform.ensure_vocabulary(vocabulary, true).unwrap();
    }
    let password = std::fs::read_to_string(dir.path().join("administrator.password")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(platform.serve(listener, stop.clone()));
    Server {
        addr,
        dir,
        key,
        password,
        stop,
        task,
    }
}

async fn start() -> Server {
    start_in(tempfile::tempdir().unwrap()).await
}

impl Server {
    /// Stops the server and waits for it to finish, handing back its data directory.
    async fn shut_down(self) -> tempfile::TempDir {
        self.stop.cancel();
        self.task.await.unwrap();
        self.dir
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = Full::new(Bytes::from(body.unwrap_or("").to_string()));
        let response = sender
            .send_request(builder.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// A service call as an administrator's app key, with the canonical headers.
    async fn call(&self, path: &str, body: Value) -> Resp {
        self.call_as(&[("appKey", &self.key)], path, body).await
    }

    async fn call_as(&self, auth: &[(&str, &str)], path: &str, body: Value) -> Resp {
        let mut headers = vec![
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(auth);
        self.send(Method::POST, path, &headers, Some(&body.to_string()))
            .await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(
            Method::GET,
            path,
            &[("appKey", &self.key), ("accept", "application/json")],
            None,
        )
        .await
    }

    async fn entity_services(&self, service: &str, body: Value) -> Resp {
        self.call(
            &format!("/Thingworx/Resources/EntityServices/Services/{service}"),
            body,
        )
        .await
    }

    async fn user_service(&self, user: &str, service: &str, body: Value) -> Resp {
        self.call(
            &format!("/Thingworx/Users/{}/Services/{service}", enc(user)),
            body,
        )
        .await
    }

    async fn group_service(&self, group: &str, service: &str, body: Value) -> Resp {
        self.call(
            &format!("/Thingworx/Groups/{}/Services/{service}", enc(group)),
            body,
        )
        .await
    }

    async fn create_user(&self, name: &str, password: Option<&str>) {
        let mut body = json!({ "name": name });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        self.entity_services("CreateUser", body).await.ok();
    }

    async fn create_group(&self, name: &str) {
        self.entity_services("CreateGroup", json!({ "name": name }))
            .await
            .ok();
    }

    async fn members(&self, group: &str) -> Vec<(String, String)> {
        let rows = self
            .group_service(group, "GetGroupMembers", json!({}))
            .await
            .ok()
            .rows();
        rows.iter()
            .map(|r| (s(&r["name"]), s(&r["type"])))
            .collect()
    }
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[track_caller]
    fn ok(self) -> Resp {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        self
    }

    /// Asserts the platform's opaque answer to a failed service call: HTTP 500 and
    /// `Unable to Invoke Service <what>`, with no cause.
    #[track_caller]
    fn unable(self, what: &str) -> Resp {
        let expected = format!("Unable to Invoke Service {what}");
        let r = self.refused(StatusCode::INTERNAL_SERVER_ERROR, &expected);
        assert_eq!(r.text(), expected);
        r
    }

    /// Asserts an error status with a plain-text body containing `needle`.
    #[track_caller]
    fn refused(self, status: StatusCode, needle: &str) -> Resp {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.text().contains(needle),
            "{:?} lacks {needle:?}",
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain"),
            "error content type {content_type}"
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn rows(&self) -> Vec<Value> {
        self.json()["rows"].as_array().unwrap().clone()
    }

    fn result(&self) -> Value {
        self.rows()[0]["result"].clone()
    }

    fn session_cookie(&self) -> Option<String> {
        let cookie = self.header("set-cookie")?;
        assert!(cookie.contains("Path=/Thingworx"), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        let pair = cookie.split(';').next().unwrap();
        assert!(pair.starts_with("JSESSIONID="), "{cookie}");
        Some(pair.to_string())
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn enc(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn names(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| s(&r["name"])).collect()
}

const CURRENT_USER: &str = "/Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser";
const ACTIVE_USERS: &str = "/Thingworx/Resources/CurrentSessionInfo/Services/GetActiveUsers";

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let server = start().await;
    let r = server.call(CURRENT_USER, json!({})).await.ok();
    assert_eq!(r.result(), "Administrator");
    assert!(
        r.header("set-cookie").is_none(),
        "app keys open no session by default"
    );
    let fields = &r.json()["dataShape"]["fieldDefinitions"]["result"];
    assert_eq!(fields["name"], "result");

    let admin_basic = basic("administrator", &server.password);
    let r = server
        .call_as(&[("authorization", &admin_basic)], CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "Administrator");

    for auth in [
        vec![("appKey", "not-a-key")],
        vec![("appKey", &server.key[..server.key.len() - 1])],
        vec![("authorization", &*basic("Administrator", "wrong"))],
        vec![("authorization", &*basic("nobody", "whatever-123"))],
        vec![("authorization", &*basic("System", ""))],
        vec![("authorization", "Bearer abc")],
        vec![("cookie", "JSESSIONID=made-up")],
        vec![],
    ] {
        let r = server
            .call_as(&auth, CURRENT_USER, json!({}))
            .await
            .refused(StatusCode::UNAUTHORIZED, "");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Basic realm=\"ThingWorx\""),
            "{auth:?}"
        );
        assert!(!r.text().contains(&server.key));
    }

    let in_url = format!("{CURRENT_USER}?appKey={}", server.key);
    server.call_as(&[], &in_url, json!({})).await.refused(
        StatusCode::UNAUTHORIZED,
        "ApplicationKey Is Not Allowed As A URL Parameter",
    );
    // Even next to a valid header.
    server
        .call(&in_url, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "Not Allowed As A URL Parameter");

    // An ordinary user may ask who it is, and nothing more.
    server.create_user("plain", Some("plain-password-1")).await;
    let plain = basic("Plain", "plain-password-1");
    let as_plain = [("authorization", plain.as_str())];
    let r = server
        .call_as(&as_plain, CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "plain");
    server
        .call_as(
            &as_plain,
            "/Thingworx/Resources/EntityServices/Services/CreateUser",
            json!({"name": "x"}),
        )
        .await
        .refused(StatusCode::FORBIDDEN, "Not authorized");
    server
        .call_as(&as_plain, ACTIVE_USERS, json!({}))
        .await
        .refused(StatusCode::FORBIDDEN, "Not authorized");
    server
        .send(Method::GET, "/Thingworx/Users", &as_plain, None)
        .await
        .refused(StatusCode::FORBIDDEN, "Not authorized");

    // Membership in SecurityAdministrators, even through a nested group, makes an administrator.
    server.create_group("Helpdesk").await;
    server
        .group_service(
            "Helpdesk",
            "AddMember",
            json!({"member": "plain", "type": "User"}),
        )
        .await
        .ok();
    server
        .group_service(
            "SecurityAdministrators",
            "AddMember",
            json!({"member": "helpdesk", "type": "Group"}),
        )
        .await
        .ok();
    server
        .send(Method::GET, "/Thingworx/Users", &as_plain, None)
        .await
        .ok();

    // A disabled user's password and app keys stop working.
    server
        .user_service("plain", "DisableUser", json!({}))
        .await
        .ok();
    server
        .call_as(&as_plain, CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
}

#[tokio::test]
async fn landing_pages_and_unknown_paths() {
    let server = start().await;
    for path in ["/", "/Thingworx", "/Thingworx/"] {
        let r = server.send(Method::GET, path, &[], None).await.ok();
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(r.text().contains("development platform"), "{path}");
    }
    for path in ["/favicon.ico", "/thingworx/Users", "/Other/Thingworx"] {
        let r = server.send(Method::GET, path, &[], None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(r.text().contains("Not Found"));
    }
    // Under /Thingworx everything but the landing page needs credentials, even unknown paths.
    server
        .send(Method::GET, "/Thingworx/Things/x", &[], None)
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
    server
        .get("/Thingworx/Things/x")
        .await
        .refused(StatusCode::NOT_FOUND, "");
    server
        .entity_services("NoSuchService", json!({}))
        .await
        .refused(StatusCode::NOT_FOUND, "NoSuchService");
    server
        .call("/Thingworx/Resources/Nope/Services/X", json!({}))
        .await
        .refused(StatusCode::NOT_FOUND, "Nope");
    server
        .get("/Thingworx/Resources/EntityServices/Services/GetEntityList")
        .await
        .refused(StatusCode::METHOD_NOT_ALLOWED, "POST");
}

#[tokio::test]
async fn content_type_accept_and_body_rules() {
    let server = start().await;
    let key = server.key.as_str();
    let path = "/Thingworx/Resources/EntityServices/Services/GetEntityList";
    let body = r#"{"type":"User"}"#;
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let mut headers = vec![("appKey", key), ("accept", "application/json")];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        server
            .send(Method::POST, path, &headers, Some(body))
            .await
            .refused(StatusCode::FORBIDDEN, "Invalid content type");
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        server
            .send(
                Method::POST,
                path,
                &[("appKey", key), ("content-type", content_type)],
                Some(body),
            )
            .await
            .ok();
    }
    // XML is admitted by the filter, but the body still has to be a JSON object.
    server
        .send(
            Method::POST,
            path,
            &[("appKey", key), ("content-type", "text/xml")],
            Some("<type>User</type>"),
        )
        .await
        .refused(StatusCode::NOT_ACCEPTABLE, "");
    for bad in ["[]", "\"x\"", "{", "null"] {
        server
            .send(
                Method::POST,
                path,
                &[("appKey", key), ("content-type", "application/json")],
                Some(bad),
            )
            .await
            .refused(StatusCode::NOT_ACCEPTABLE, "");
    }
    // An empty body is `{}`.
    let r = server
        .send(
            Method::POST,
            CURRENT_USER,
            &[("appKey", key), ("content-type", "application/json")],
            None,
        )
        .await
        .ok();
    assert_eq!(r.result(), "Administrator");

    for accept in ["*/*", "application/*", "text/html, application/json;q=0.5"] {
        server
            .send(
                Method::POST,
                path,
                &[
                    ("appKey", key),
                    ("content-type", "application/json"),
                    ("accept", accept),
                ],
                Some(body),
            )
            .await
            .ok();
    }
    for accept in ["text/xml", "text/csv"] {
        server
            .send(
                Method::POST,
                path,
                &[
                    ("appKey", key),
                    ("content-type", "application/json"),
                    ("accept", accept),
                ],
                Some(body),
            )
            .await
            .refused(StatusCode::NOT_ACCEPTABLE, "");
    }

    // A missing or mistyped parameter fails the call like any other cause: a bare 500.
    server
        .entity_services("CreateUser", json!({"description": "x"}))
        .await
        .unable("CreateUser on EntityServices");
    server
        .entity_services("GetEntityList", json!({}))
        .await
        .unable("GetEntityList on EntityServices");
    server
        .entity_services("CreateUser", json!({"name": 42}))
        .await
        .unable("CreateUser on EntityServices");
    // DELETE follows the same content rules.
    server
        .send(
            Method::DELETE,
            "/Thingworx/Users/x",
            &[("appKey", key)],
            None,
        )
        .await
        .refused(StatusCode::FORBIDDEN, "Invalid content type");
}

#[tokio::test]
async fn users_are_created_read_listed_and_deleted() {
    let server = start().await;
    server
        .entity_services(
            "CreateUser",
            json!({
                "name": "JDoe",
                "password": "jdoe-password-1",
                "description": "Jane",
                "projectName": "P1",
                "tags": "Applications:SCIM;Colors:Green",
            }),
        )
        .await
        .ok();
    let r = server.get("/Thingworx/Users/jdoe").await.ok();
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    // The entity carries its lastModifiedDate (a DATETIME: epoch milliseconds), set by the
    // create and moved by every change since.
    let mut entity = r.json();
    let modified = entity
        .as_object_mut()
        .and_then(|o| o.remove("lastModifiedDate"))
        .and_then(|d| d.as_i64())
        .unwrap_or_else(|| panic!("no lastModifiedDate: {}", r.text()));
    assert!(modified > 1_600_000_000_000, "{modified}");
    assert_eq!(
        entity,
        json!({
            "name": "JDoe",
            "description": "Jane",
            "enabled": true,
            "projectName": "P1",
            "homeMashup": "",
            "mobileMashup": "",
            "tags": [
                {"vocabulary": "Applications", "vocabularyTerm": "SCIM"},
                {"vocabulary": "Colors", "vocabularyTerm": "Green"},
            ],
        })
    );
    server
        .entity_services("CreateUser", json!({"name": "jdoe"}))
        .await
        .unable("CreateUser on EntityServices");
    server
        .entity_services("CreateUser", json!({"name": "a/b"}))
        .await
        .unable("CreateUser on EntityServices");
    server
        .entity_services("CreateUser", json!({"name": "t", "tags": "NoColon"}))
        .await
        .unable("CreateUser on EntityServices");
    server
        .get("/Thingworx/Users/t")
        .await
        .refused(StatusCode::NOT_FOUND, "");

    // The setters and getters.
    let u = "JDOE";
    for (service, body) in [
        ("SetDescription", json!({"description": "changed"})),
        ("SetTags", json!({"tags": "A:B"})),
        ("SetProjectName", json!({"projectName": "P2"})),
        ("SetHomeMashup", json!({"name": "Home"})),
        ("SetMobileMashup", json!({"name": "Mobile"})),
        ("DisableUser", json!({})),
    ] {
        let r = server.user_service(u, service, body).await.ok();
        assert!(r.body.is_empty(), "{service}");
        assert_eq!(r.header("content-length").as_deref(), Some("0"));
    }
    assert_eq!(
        server
            .user_service(u, "IsEnabled", json!({}))
            .await
            .ok()
            .result(),
        false
    );
    server.user_service(u, "EnableUser", json!({})).await.ok();
    assert_eq!(
        server
            .user_service(u, "IsEnabled", json!({}))
            .await
            .ok()
            .result(),
        true
    );
    assert_eq!(
        server
            .user_service(u, "GetProjectName", json!({}))
            .await
            .ok()
            .result(),
        "P2"
    );
    assert_eq!(
        server
            .user_service(u, "GetHomeMashup", json!({}))
            .await
            .ok()
            .result(),
        "Home"
    );
    assert_eq!(
        server
            .user_service(u, "GetMobileMashup", json!({}))
            .await
            .ok()
            .result(),
        "Mobile"
    );
    assert_eq!(
        server
            .user_service(u, "GetTags", json!({}))
            .await
            .ok()
            .rows(),
        vec![json!({"vocabulary": "A", "vocabularyTerm": "B"})]
    );
    let user = server.get("/Thingworx/Users/jdoe").await.ok().json();
    assert_eq!(user["description"], "changed");

    // Listing: the entity collection and GetEntityList, sorted, with masks and system flags.
    server.create_user("alice", None).await;
    server.create_user("Bob", None).await;
    let all = server.get("/Thingworx/Users").await.ok().rows();
    assert_eq!(
        names(&all),
        [
            "Administrator",
            "alice",
            "Bob",
            "JDoe",
            "SuperUser",
            "System"
        ]
    );
    assert_eq!(
        all[0],
        json!({"name": "Administrator", "description": "Platform administrator"})
    );
    let r = server
        .entity_services("GetEntityList", json!({"type": "User", "nameMask": "*"}))
        .await
        .ok();
    let rows = r.rows();
    assert_eq!(rows.len(), 6);
    let admin = &rows[0];
    assert_eq!(admin["isSystemObject"], true);
    assert_eq!(admin["avatar"], "");
    assert_eq!(rows[1]["isSystemObject"], false);
    let fields = &r.json()["dataShape"]["fieldDefinitions"];
    for f in [
        "name",
        "description",
        "isSystemObject",
        "homeMashup",
        "avatar",
        "tags",
    ] {
        assert_eq!(fields[f]["name"], f);
    }
    let masked = server
        .entity_services(
            "GetEntityList",
            json!({"type": "User", "nameMask": "S*", "maxItems": 10}),
        )
        .await
        .ok()
        .rows();
    assert_eq!(names(&masked), ["SuperUser", "System"]);
    let limited = server
        .entity_services("GetEntityList", json!({"type": "User", "maxItems": 2}))
        .await
        .ok()
        .rows();
    assert_eq!(limited.len(), 2);
    let tagged = server
        .entity_services("GetEntityList", json!({"type": "User", "tags": "A:B"}))
        .await
        .ok()
        .rows();
    assert_eq!(names(&tagged), ["JDoe"]);
    assert_eq!(tagged[0]["homeMashup"], "Home");
    assert_eq!(
        tagged[0]["tags"],
        json!([{"vocabulary": "A", "vocabularyTerm": "B"}])
    );

    // Deletion, by service and by verb; built-ins are protected.
    server
        .entity_services("DeleteUser", json!({"name": "ALICE"}))
        .await
        .ok();
    server
        .send(
            Method::DELETE,
            "/Thingworx/Users/bob",
            &[
                ("appKey", &server.key),
                ("content-type", "application/json"),
            ],
            None,
        )
        .await
        .ok();
    server
        .get("/Thingworx/Users/alice")
        .await
        .refused(StatusCode::NOT_FOUND, "User [alice] does not exist");
    server
        .entity_services("DeleteUser", json!({"name": "bob"}))
        .await
        .unable("DeleteUser on EntityServices");
    server
        .user_service("bob", "IsEnabled", json!({}))
        .await
        .unable("IsEnabled on bob");
    for name in ["Administrator", "superuser", "System"] {
        server
            .entity_services("DeleteUser", json!({ "name": name }))
            .await
            .unable("DeleteUser on EntityServices");
    }
    server
        .entity_services("DeleteGroup", json!({"name": "Administrators"}))
        .await
        .unable("DeleteGroup on EntityServices");
}

#[tokio::test]
async fn awkward_names_travel_percent_encoded() {
    let server = start().await;
    for name in [
        "jdoe@corp.com",
        "Jane Doe",
        "Jörg Müller@beispiel.de",
        "名前",
        "50% off",
    ] {
        server
            .entity_services("CreateUser", json!({ "name": name, "description": name }))
            .await
            .ok();
        let upper = name.to_uppercase();
        let r = server
            .get(&format!("/Thingworx/Users/{}", enc(&upper)))
            .await
            .ok();
        assert_eq!(r.json()["name"], name);
        assert_eq!(
            server
                .user_service(&upper, "IsEnabled", json!({}))
                .await
                .ok()
                .result(),
            true
        );
        let group = format!("G {name}");
        server.create_group(&group).await;
        server
            .group_service(
                &group.to_lowercase(),
                "AddMember",
                json!({"member": upper, "type": "User"}),
            )
            .await
            .ok();
        assert_eq!(
            server.members(&group).await,
            vec![(name.to_string(), "User".to_string())]
        );
        let r = server
            .get(&format!("/Thingworx/Groups/{}", enc(&group)))
            .await
            .ok();
        assert_eq!(r.json()["name"], group);
    }
    // The same decoded name in a raw (unencoded-@) path.
    server.get("/Thingworx/Users/jdoe@corp.com").await.ok();
}

#[tokio::test]
async fn groups_and_memberships() {
    let server = start().await;
    server
        .entity_services(
            "CreateGroup",
            json!({"name": "Engineering", "description": "eng", "projectName": "P", "tags": "A:B"}),
        )
        .await
        .ok();
    server
        .entity_services("CreateGroup", json!({"name": "ENGINEERING"}))
        .await
        .unable("CreateGroup on EntityServices");
    let mut group = server
        .get("/Thingworx/Groups/engineering")
        .await
        .ok()
        .json();
    let created = group
        .as_object_mut()
        .and_then(|o| o.remove("lastModifiedDate"))
        .and_then(|d| d.as_i64())
        .unwrap_or_else(|| panic!("no lastModifiedDate: {group}"));
    assert!(created > 1_600_000_000_000, "{created}");
    assert_eq!(
        group,
        json!({
            "name": "Engineering",
            "description": "eng",
            "projectName": "P",
            "homeMashup": "",
            "tags": [{"vocabulary": "A", "vocabularyTerm": "B"}],
        })
    );
    for (service, body) in [
        ("SetDescription", json!({"description": "Engineers"})),
        ("SetTags", json!({"tags": ""})),
        ("SetProjectName", json!({"projectName": "P2"})),
        ("SetHomeMashup", json!({"name": "EngHome"})),
    ] {
        server
            .group_service("Engineering", service, body)
            .await
            .ok();
    }
    let g = server
        .get("/Thingworx/Groups/Engineering")
        .await
        .ok()
        .json();
    assert_eq!(
        (
            &g["description"],
            &g["projectName"],
            &g["homeMashup"],
            &g["tags"]
        ),
        (
            &json!("Engineers"),
            &json!("P2"),
            &json!("EngHome"),
            &json!([])
        )
    );
    let listed = names(&server.get("/Thingworx/Groups").await.ok().rows());
    assert!(listed.contains(&"Engineering".to_string()) && listed.contains(&"Users".to_string()));

    server.create_group("Contractors").await;
    server.create_user("alice", None).await;
    let add = |group: &'static str, member: &'static str, kind: &'static str| {
        let server = &server;
        async move {
            server
                .group_service(group, "AddMember", json!({"member": member, "type": kind}))
                .await
        }
    };
    add("Engineering", "Alice", "User").await.ok();
    add("Engineering", "alice", "User").await.ok();
    add("engineering", "contractors", "Group").await.ok();
    let rows = server
        .group_service("Engineering", "GetGroupMembers", json!({}))
        .await
        .ok()
        .rows();
    assert_eq!(
        rows,
        vec![
            json!({"name": "alice", "description": "", "type": "User"}),
            json!({"name": "Contractors", "description": "", "type": "Group"}),
        ]
    );
    add("Engineering", "nobody", "User")
        .await
        .unable("AddMember on Engineering");
    add("Engineering", "Nope", "Group")
        .await
        .unable("AddMember on Engineering");
    add("Engineering", "alice", "Person")
        .await
        .unable("AddMember on Engineering");
    add("Contractors", "Engineering", "Group")
        .await
        .unable("AddMember on Contractors");
    add("Contractors", "Contractors", "Group")
        .await
        .unable("AddMember on Contractors");
    server
        .group_service("Engineering", "AddMember", json!({"member": "alice"}))
        .await
        .unable("AddMember on Engineering");

    let groups_of_alice = server
        .user_service("alice", "GetGroups", json!({}))
        .await
        .ok()
        .rows();
    assert_eq!(names(&groups_of_alice), ["Engineering"]);
    let parents = server
        .group_service("Contractors", "GetGroups", json!({}))
        .await
        .ok()
        .rows();
    assert_eq!(names(&parents), ["Engineering"]);

    // The all-users group: every user is in it, and adding or removing one changes nothing.
    add("Users", "alice", "User").await.ok();
    server
        .group_service(
            "Users",
            "DeleteMember",
            json!({"member": "alice", "type": "User"}),
        )
        .await
        .ok();
    let everyone = server.members("users").await;
    for user in ["Administrator", "alice", "SuperUser", "System"] {
        assert!(
            everyone.contains(&(user.to_string(), "User".to_string())),
            "{user}"
        );
    }
    add("Users", "Contractors", "Group").await.ok();
    assert!(server
        .members("Users")
        .await
        .contains(&("Contractors".to_string(), "Group".to_string())));

    // Removal: twice is fine; deleting a group removes it from its parents.
    for _ in 0..2 {
        server
            .group_service(
                "Engineering",
                "DeleteMember",
                json!({"member": "ALICE", "type": "User"}),
            )
            .await
            .ok();
    }
    assert_eq!(
        server.members("Engineering").await,
        vec![("Contractors".to_string(), "Group".to_string())]
    );
    server
        .entity_services("DeleteGroup", json!({"name": "contractors"}))
        .await
        .ok();
    assert!(server.members("Engineering").await.is_empty());
    server
        .group_service("Contractors", "GetGroupMembers", json!({}))
        .await
        .unable("GetGroupMembers on Contractors");

    // Deleting a user removes it from every group; DELETE on the group works like DeleteGroup.
    add("Engineering", "alice", "User").await.ok();
    server
        .entity_services("DeleteUser", json!({"name": "alice"}))
        .await
        .ok();
    assert!(server.members("Engineering").await.is_empty());
    server
        .send(
            Method::DELETE,
            "/Thingworx/Groups/Engineering",
            &[
                ("appKey", &server.key),
                ("content-type", "application/json"),
            ],
            None,
        )
        .await
        .ok();
    server
        .get("/Thingworx/Groups/Engineering")
        .await
        .refused(StatusCode::NOT_FOUND, "Group [Engineering] does not exist");
}

#[tokio::test]
async fn create_user_with_options_joins_groups_atomically() {
    let server = start().await;
    server.create_group("Engineering").await;
    let options = |name: &str, groups: Value| {
        json!({"userOptions": {
            "dataShape": {"fieldDefinitions": {
                "userName": {"name": "userName", "baseType": "USERNAME"},
                "password": {"name": "password", "baseType": "PASSWORD"},
                "groups": {"name": "groups", "baseType": "INFOTABLE"},
            }},
            "rows": [{
                "userName": name,
                "password": "a-long-password-1",
                "description": "Provisioned by SCIM",
                "tags": "Applications:SCIM",
                "homeMashupName": "Home",
                "mobileMashupName": "MobileHome",
                "language": "en",
                "groups": groups,
            }],
        }})
    };
    server
        .entity_services(
            "CreateUserWithOptions",
            options(
                "ghost",
                json!({"rows": [{"name": "Engineering"}, {"name": "Missing"}]}),
            ),
        )
        .await
        .unable("CreateUserWithOptions on EntityServices");
    server
        .get("/Thingworx/Users/ghost")
        .await
        .refused(StatusCode::NOT_FOUND, "");

    server
        .entity_services(
            "CreateUserWithOptions",
            options(
                "jdoe@corp.com",
                json!({"dataShape": {"fieldDefinitions": {"name": {"name": "name", "baseType": "GROUPNAME"}}},
                       "rows": [{"name": "engineering"}, {"name": "Users"}]}),
            ),
        )
        .await
        .ok();
    let user = server
        .get("/Thingworx/Users/JDOE@corp.com")
        .await
        .ok()
        .json();
    assert_eq!(user["description"], "Provisioned by SCIM");
    assert_eq!(user["homeMashup"], "Home");
    assert_eq!(user["mobileMashup"], "MobileHome");
    assert_eq!(
        user["tags"],
        json!([{"vocabulary": "Applications", "vocabularyTerm": "SCIM"}])
    );
    assert_eq!(
        server.members("Engineering").await,
        vec![("jdoe@corp.com".to_string(), "User".to_string())]
    );
    let login = basic("jdoe@corp.com", "a-long-password-1");
    let r = server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "jdoe@corp.com");

    // Rows without a data shape are accepted too; the user name is required.
    server
        .entity_services(
            "CreateUserWithOptions",
            json!({"userOptions": {"rows": [{"userName": "bare"}]}}),
        )
        .await
        .ok();
    server
        .entity_services(
            "CreateUserWithOptions",
            json!({"userOptions": {"rows": [{"description": "x"}]}}),
        )
        .await
        .unable("CreateUserWithOptions on EntityServices");
    server
        .entity_services("CreateUserWithOptions", json!({}))
        .await
        .unable("CreateUserWithOptions on EntityServices");
}

#[tokio::test]
async fn extension_properties_and_passwords() {
    let server = start().await;
    server.create_user("jdoe", None).await;
    // Values are read from the user's UserExtensions configuration table (name/value rows),
    // as verified live on 9.5–10.2; GetPropertyValues does not return them.
    let ext = |user: &'static str| {
        let server = &server;
        async move {
            server
                .user_service(
                    user,
                    "GetConfigurationTable",
                    json!({"tableName": "UserExtensions"}),
                )
                .await
                .ok()
                .rows()
                .iter()
                .map(|r| (r["name"].as_str().unwrap().to_string(), r["value"].clone()))
                .collect::<serde_json::Map<String, Value>>()
        }
    };
    let row = ext("jdoe").await;
    // The fifteen stock UserExtensions properties, and no scimExternalId.
    assert_eq!(row.len(), 15);
    assert!(!row.contains_key("scimExternalId"));
    assert!(row.values().all(|v| v == ""));
    server
        .user_service(
            "jdoe",
            "GetConfigurationTable",
            json!({"tableName": "Settings"}),
        )
        .await
        .unable("GetConfigurationTable on jdoe");

    let values = |row: Value| {
        json!({"values": {
            "dataShape": {"fieldDefinitions": {}},
            "rows": [row],
        }})
    };
    server
        .user_service(
            "jdoe",
            "SetPropertyValues",
            values(json!({"firstName": "Jane", "lastName": "Doe", "emailAddress": "jane@corp.com", "city": "Zürich"})),
        )
        .await
        .ok();
    server
        .user_service(
            "jdoe",
            "SetPropertyValues",
            json!({"values": {"rows": [{"title": "Dr", "city": null}]}}),
        )
        .await
        .ok();
    server
        .user_service(
            "jdoe",
            "SetPropertyValues",
            values(json!({"firstName": "Changed", "shoeSize": "44"})),
        )
        .await
        .refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unable to Invoke Service SetPropertyValues on jdoe",
        );
    server
        .user_service("jdoe", "SetPropertyValues", values(json!({"firstName": 7})))
        .await
        .unable("SetPropertyValues on jdoe");
    let row = ext("jdoe").await;
    assert_eq!(row["firstName"], "Jane");
    assert_eq!(row["lastName"], "Doe");
    assert_eq!(row["emailAddress"], "jane@corp.com");
    assert_eq!(row["title"], "Dr");
    assert_eq!(row["city"], "");
    assert_eq!(row["zipCode"], "");
    let listed = server
        .user_service("jdoe", "GetPropertyValues", json!({}))
        .await
        .ok()
        .rows()[0]
        .clone();
    assert!(listed.get("firstName").is_none(), "{listed}");

    // An administrator adds a property to the shape; then it can be written.
    server
        .call(
            "/Thingworx/ThingShapes/UserExtensions/Services/AddPropertyDefinition",
            json!({"name": "scimExternalId", "type": "STRING"}),
        )
        .await
        .ok();
    server
        .user_service(
            "jdoe",
            "SetPropertyValues",
            values(json!({"scimExternalId": "x-1"})),
        )
        .await
        .ok();
    assert_eq!(ext("jdoe").await["scimExternalId"], "x-1");

    let assign = |a: &str, b: &str| json!({"newPassword": a, "newPasswordConfirm": b});
    server
        .user_service(
            "jdoe",
            "AssignNewPassword",
            assign("long-enough-pw-1", "long-enough-pw-2"),
        )
        .await
        .unable("AssignNewPassword on jdoe");
    // The 9.x/10.x policy: 14 to 128 characters.
    let too_long = "x".repeat(129);
    for refused in ["short", "thirteen-char", too_long.as_str()] {
        server
            .user_service("jdoe", "AssignNewPassword", assign(refused, refused))
            .await
            .unable("AssignNewPassword on jdoe");
        server
            .entity_services("CreateUser", json!({"name": "pw", "password": refused}))
            .await
            .unable("CreateUser on EntityServices");
    }
    server
        .get("/Thingworx/Users/pw")
        .await
        .refused(StatusCode::NOT_FOUND, "");
    let longest = "y".repeat(128);
    server
        .user_service("jdoe", "AssignNewPassword", assign(&longest, &longest))
        .await
        .ok();
    server
        .user_service(
            "jdoe",
            "AssignNewPassword",
            json!({"newPassword": "long-enough-pw-1"}),
        )
        .await
        .unable("AssignNewPassword on jdoe");
    server
        .user_service(
            "jdoe",
            "AssignNewPassword",
            assign("long-enough-pw-1", "long-enough-pw-1"),
        )
        .await
        .ok();
    let login = basic("JDOE", "long-enough-pw-1");
    let r = server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "jdoe");
}

#[tokio::test]
async fn sessions_are_opened_listed_and_terminated() {
    let server = start().await;
    server.create_user("bob", Some("bob-password-1")).await;
    let login = basic("bob", "bob-password-1");
    let r = server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok();
    let cookie = r.session_cookie().expect("a Basic login opens a session");

    // The cookie alone authenticates, and presenting it with Basic keeps the same session.
    let r = server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "bob");
    let r = server
        .call_as(
            &[("authorization", &login), ("cookie", &cookie)],
            CURRENT_USER,
            json!({}),
        )
        .await
        .ok();
    assert!(r.header("set-cookie").is_none());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let r = server
        .call(ACTIVE_USERS, json!({"maxItems": 100}))
        .await
        .ok();
    let rows = r.rows();
    assert_eq!(names(&rows), ["bob"]);
    assert_eq!(rows[0]["isConnected"], true);
    assert!(rows[0]["lastConnection"].as_i64().unwrap() > before);

    // An app key opens a session only when asked to.
    let r = server
        .call_as(
            &[("appKey", &server.key), ("x-thingworx-session", "true")],
            CURRENT_USER,
            json!({}),
        )
        .await
        .ok();
    let admin_cookie = r
        .session_cookie()
        .expect("x-thingworx-session opens a session");
    let active = names(&server.call(ACTIVE_USERS, json!({})).await.ok().rows());
    assert_eq!(active, ["Administrator", "bob"]);

    server
        .call(
            "/Thingworx/Resources/CurrentSessionInfo/Services/TerminateUserSessions",
            json!({"userName": "BOB"}),
        )
        .await
        .ok();
    server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
    let active = names(&server.call(ACTIVE_USERS, json!({})).await.ok().rows());
    assert_eq!(active, ["Administrator"]);
    server
        .call_as(&[("cookie", &admin_cookie)], CURRENT_USER, json!({}))
        .await
        .ok();
    server
        .call(
            "/Thingworx/Resources/CurrentSessionInfo/Services/TerminateUserSessions",
            json!({"userName": "nobody"}),
        )
        .await
        .unable("TerminateUserSessions on CurrentSessionInfo");

    // Disabling does not end a session (as on ThingWorx); a new login is refused, and only
    // TerminateUserSessions ends the live one. Deleting ends it too.
    let cookie = server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok()
        .session_cookie()
        .unwrap();
    server
        .user_service("bob", "DisableUser", json!({}))
        .await
        .ok();
    let r = server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .ok();
    assert_eq!(r.result(), "bob");
    server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
    server
        .call(
            "/Thingworx/Resources/CurrentSessionInfo/Services/TerminateUserSessions",
            json!({"userName": "BOB"}),
        )
        .await
        .ok();
    server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
    server
        .user_service("bob", "EnableUser", json!({}))
        .await
        .ok();
    let cookie = server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok()
        .session_cookie()
        .unwrap();
    server
        .entity_services("DeleteUser", json!({"name": "bob"}))
        .await
        .ok();
    server.create_user("bob", Some("bob-password-1")).await;
    server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
}

#[tokio::test]
async fn a_restart_keeps_everything_but_sessions() {
    let server = start().await;
    let key = server.key.clone();
    let password = server.password.clone();
    server
        .create_user("Jörg@corp.com", Some("joerg-password-1"))
        .await;
    server.create_group("Engineering").await;
    server.create_group("Inner").await;
    server
        .group_service(
            "Engineering",
            "AddMember",
            json!({"member": "jörg@corp.com", "type": "User"}),
        )
        .await
        .ok();
    server
        .group_service(
            "Engineering",
            "AddMember",
            json!({"member": "inner", "type": "Group"}),
        )
        .await
        .ok();
    server
        .user_service(
            "Jörg@corp.com",
            "SetPropertyValues",
            json!({"values": {"rows": [{"firstName": "Jörg"}]}}),
        )
        .await
        .ok();
    server
        .user_service("Jörg@corp.com", "DisableUser", json!({}))
        .await
        .ok();
    let admin_login = basic("Administrator", &password);
    let cookie = server
        .call_as(&[("authorization", &admin_login)], CURRENT_USER, json!({}))
        .await
        .ok()
        .session_cookie()
        .unwrap();

    let dir = server.shut_down().await;
    assert!(dir.path().join("state.json").exists());
    assert!(!dir.path().join("state.json.tmp").exists());
    let server = start_in(dir).await;
    assert_eq!(server.key, key, "the app key is stable");
    assert_eq!(
        server.password, password,
        "the password file is not rewritten"
    );

    let user = server
        .get("/Thingworx/Users/jörg@corp.com")
        .await
        .ok()
        .json();
    assert_eq!(user["name"], "Jörg@corp.com");
    assert_eq!(user["enabled"], false);
    assert_eq!(
        server.members("Engineering").await,
        vec![
            ("Jörg@corp.com".to_string(), "User".to_string()),
            ("Inner".to_string(), "Group".to_string()),
        ]
    );
    let rows = server
        .user_service(
            "Jörg@corp.com",
            "GetConfigurationTable",
            json!({"tableName": "UserExtensions"}),
        )
        .await
        .ok()
        .rows();
    let first = rows.iter().find(|r| r["name"] == "firstName").unwrap();
    assert_eq!(first["value"], "Jörg");
    server
        .user_service("Jörg@corp.com", "EnableUser", json!({}))
        .await
        .ok();
    let login = basic("jörg@corp.com", "joerg-password-1");
    server
        .call_as(&[("authorization", &login)], CURRENT_USER, json!({}))
        .await
        .ok();
    // Sessions live in memory only.
    server
        .call_as(&[("cookie", &cookie)], CURRENT_USER, json!({}))
        .await
        .refused(StatusCode::UNAUTHORIZED, "");
    server
        .call_as(&[("authorization", &admin_login)], CURRENT_USER, json!({}))
        .await
        .ok();
    server.shut_down().await;
}

async fn entity_list(server: &Server, kind: &str, mask: &str) -> Vec<Value> {
    server
        .entity_services(
            "GetEntityList",
            json!({"type": kind, "maxItems": 100, "nameMask": mask, "tags": ""}),
        )
        .await
        .ok()
        .rows()
}

#[tokio::test]
async fn projects_and_mashups_are_listed_by_name_and_kept_across_restarts() {
    let server = start().await;
    let list = |kind, mask| entity_list(&server, kind, mask);
    // The names config/scimgate.example.toml uses for user and group defaults.
    assert_eq!(names(&list("Project", "*").await), ["MyProject"]);
    assert_eq!(names(&list("Mashup", "*").await), ["Home", "MobileHome"]);
    let exact = list("Mashup", "mobilehome").await;
    assert_eq!(names(&exact), ["MobileHome"]);
    assert_eq!(exact[0]["isSystemObject"], false);
    assert!(list("Mashup", "Mobile").await.is_empty());
    assert!(list("Project", "Home").await.is_empty());
    server
        .entity_services("GetEntityList", json!({"type": "Thing"}))
        .await
        .unable("GetEntityList on EntityServices");

    let dir = server.shut_down().await;
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(names(state["projects"].as_array().unwrap()), ["MyProject"]);
    let server = start_in(dir).await;
    let home = entity_list(&server, "Mashup", "Home").await;
    assert_eq!(names(&home), ["Home"]);
    server.shut_down().await;
}

#[tokio::test]
async fn stopping_waits_for_nothing_when_idle_connections_are_open() {
    let server = start().await;
    // An idle keep-alive connection must not hold the stop up.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::builder()
        .uri("/Thingworx")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        sender.send_request(request).await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), server.shut_down())
        .await
        .expect("stop finished");
    drop(sender);
    let _ = conn.await;
}

#[tokio::test]
async fn tags_need_an_existing_vocabulary_and_new_terms_a_dynamic_one() {
    let server = start().await;
    let r = server.get("/Thingworx/ModelTags/SCIMExternalId").await.ok();
    assert_eq!(r.json()["isDynamic"], true);
    let r = server.get("/Thingworx/ModelTags/Applications").await.ok();
    assert_eq!(r.json()["isDynamic"], false);
    server
        .get("/Thingworx/ModelTags/Nope")
        .await
        .refused(StatusCode::NOT_FOUND, "");
    // A term of the static vocabulary, and a new term of the dynamic one.
    server
        .entity_services(
            "CreateGroup",
            json!({"name": "G1", "tags": "Applications:SCIM;SCIMExternalId:ext-1"}),
        )
        .await
        .ok();
    // A new term of a static vocabulary, and a vocabulary that does not exist.
    for tags in ["Applications:NewTerm", "Nope:X"] {
        server
            .entity_services("CreateGroup", json!({"name": "G2", "tags": tags}))
            .await
            .unable("CreateGroup on EntityServices");
        server
            .entity_services("CreateUser", json!({"name": "u2", "tags": tags}))
            .await
            .unable("CreateUser on EntityServices");
        server
            .group_service("G1", "SetTags", json!({ "tags": tags }))
            .await
            .unable("SetTags on G1");
    }
    server
        .get("/Thingworx/Groups/G2")
        .await
        .refused(StatusCode::NOT_FOUND, "");
}

#[tokio::test]
async fn the_running_state_is_served_to_administrators_as_the_snapshot_holds_it() {
    const STATE: &str = "/Thingworx/_dev/state";
    let server = start().await;
    server.create_user("State.User", None).await;
    server.create_group("State Group").await;
    server
        .create_user("plain.user", Some("plain-password-1"))
        .await;

    // Nobody but an administrator reads it, and nobody writes through it.
    let anonymous = server.send(Method::GET, STATE, &[], None).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text()
    );
    let plain = basic("plain.user", "plain-password-1");
    let as_user = server
        .send(Method::GET, STATE, &[("authorization", &plain)], None)
        .await;
    assert_eq!(as_user.status, StatusCode::FORBIDDEN, "{}", as_user.text());
    let write = server
        .send(Method::POST, STATE, &[("appKey", &server.key)], Some("{}"))
        .await;
    assert_eq!(
        write.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        write.text()
    );

    let r = server.get(STATE).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let running: Value = serde_json::from_slice(&r.body).unwrap();
    let user_names: Vec<&str> = running["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(user_names.contains(&"State.User"), "{user_names:?}");
    assert!(running["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "State Group"));

    // A clean stop leaves the same document in state.json.
    let dir = server.shut_down().await;
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(snapshot, running);
}

/// As Tomcat under the real platform does (RFC 9112 §3.2): an HTTP/1.1 request without `Host`
/// is refused before anything else, even with a valid app key.
#[tokio::test]
async fn an_http11_request_without_host_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start().await;
    let call = |host: &'static str| {
        let (addr, key) = (server.addr, server.key.clone());
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser HTTP/1.1\r\n\
                 {host}appKey: {key}\r\naccept: application/json\r\ncontent-type: application/json\r\n\
                 content-length: 2\r\nconnection: close\r\n\r\n{{}}"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut answer = String::new();
            tcp.read_to_string(&mut answer).await.unwrap();
            answer
        }
    };
    let without = call("").await;
    assert!(without.starts_with("HTTP/1.1 400"), "{without}");
    let with = call("host: localhost\r\n").await;
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
    assert!(with.contains("Administrator"), "{with}");
    server.shut_down().await;
}
