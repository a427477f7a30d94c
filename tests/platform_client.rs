//! The ThingWorx client against the development platform, over real HTTP on loopback: every
//! operation, the error mapping, awkward names, and the concurrency bound (against a counting
//! fake platform).

mod common;

use common::dev_env::ServedPlatform;
use common::full;
use futures_util::StreamExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use scimgate::config::{self, Overrides, Secret};
use scimgate::platform::{
    EntityKind, Extensions, Member, NewGroup, NewUser, Platform, PlatformError, ThingWorx,
};
use scimgate::tag::Tag;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type DevServer = ServedPlatform;

async fn dev_server() -> DevServer {
    ServedPlatform::start_with(None, false, |platform| {
        for vocabulary in ["A", "C"] {
            platform.ensure_vocabulary(vocabulary, true).unwrap();
        }
    })
    .await
}

/// A client as the gateway builds one, from configuration text.
fn client_with(addr: SocketAddr, platform_toml: &str, upstream_extra: &str) -> ThingWorx {
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{addr}\"\n{upstream_extra}\n[platform]\n{platform_toml}\n"
    );
    let config = config::parse(&text, std::path::Path::new("."), &Overrides::default()).unwrap();
    let client = scimgate::proxy::build_upstream_client(&config.upstream).unwrap();
    ThingWorx::new(client, &config.upstream, config.platform.as_ref().unwrap()).unwrap()
}

fn client(server: &DevServer) -> ThingWorx {
    client_with(server.addr, &format!("app_key = \"{}\"", server.key), "")
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap()
}

#[tokio::test]
async fn credentials_are_checked_and_bad_ones_are_unauthorized() {
    let server = dev_server().await;
    assert_eq!(
        client(&server).current_user().await.unwrap(),
        "Administrator"
    );

    let wrong = client_with(server.addr, "app_key = \"not-a-key\"", "");
    assert!(matches!(
        wrong.current_user().await,
        Err(PlatformError::Unauthorized { status: 401, .. })
    ));

    let password =
        std::fs::read_to_string(server.dir.path().join("administrator.password")).unwrap();
    let basic = client_with(
        server.addr,
        &format!("username = \"Administrator\"\npassword = \"{password}\""),
        "",
    );
    assert_eq!(basic.current_user().await.unwrap(), "Administrator");
}

#[tokio::test]
async fn user_lifecycle() {
    let server = dev_server().await;
    let tw = client(&server);
    let builtins: Vec<String> = tw
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    for name in ["Administrator", "SuperUser", "System"] {
        assert!(
            builtins.iter().any(|n| n == name),
            "{name} missing from {builtins:?}"
        );
    }

    tw.create_group(&NewGroup {
        name: "Engineering".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tw.create_user(&NewUser {
        name: "jdoe@corp.com".into(),
        description: "Provisioned by SCIM".into(),
        tags: vec![tag("Applications:SCIM")],
        home_mashup: Some("Home".into()),
        mobile_mashup: Some("MobileHome".into()),
        groups: vec!["Engineering".into()],
        ..Default::default()
    })
    .await
    .unwrap();

    let user = tw.get_user("JDoe@Corp.com").await.unwrap();
    assert_eq!(user.name, "jdoe@corp.com");
    assert_eq!(user.description, "Provisioned by SCIM");
    assert_eq!(user.home_mashup, "Home");
    assert_eq!(user.mobile_mashup, "MobileHome");
    assert_eq!(user.tags, vec![tag("Applications:SCIM")]);
    let groups: Vec<String> = tw
        .user_groups("jdoe@corp.com")
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, vec!["Engineering".to_string()]);

    assert!(matches!(
        tw.create_user(&NewUser {
            name: "JDOE@corp.com".into(),
            ..Default::default()
        })
        .await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));

    assert!(tw.is_user_enabled("jdoe@corp.com").await.unwrap());
    tw.set_user_enabled("jdoe@corp.com", false).await.unwrap();
    assert!(!tw.is_user_enabled("jdoe@corp.com").await.unwrap());
    tw.set_user_enabled("jdoe@corp.com", true).await.unwrap();
    assert!(tw.is_user_enabled("jdoe@corp.com").await.unwrap());

    tw.set_user_description("jdoe@corp.com", "changed")
        .await
        .unwrap();
    tw.set_user_tags("jdoe@corp.com", &[tag("A:B"), tag("C:D")])
        .await
        .unwrap();
    tw.set_user_project("jdoe@corp.com", "MyProject")
        .await
        .unwrap();
    tw.set_user_home_mashup("jdoe@corp.com", "Home2")
        .await
        .unwrap();
    tw.set_user_mobile_mashup("jdoe@corp.com", "Mobile2")
        .await
        .unwrap();
    let user = tw.get_user("jdoe@corp.com").await.unwrap();
    assert_eq!(user.description, "changed");
    assert_eq!(user.tags, vec![tag("A:B"), tag("C:D")]);
    assert_eq!(user.project, "MyProject");
    assert_eq!(user.home_mashup, "Home2");
    assert_eq!(user.mobile_mashup, "Mobile2");

    let mut ext = Extensions::new();
    ext.insert("firstName".into(), "Jane".into());
    ext.insert("lastName".into(), "Doe".into());
    ext.insert("emailAddress".into(), "jane.doe@corp.com".into());
    tw.set_user_extensions("jdoe@corp.com", &ext).await.unwrap();
    let read = tw.user_extensions("jdoe@corp.com").await.unwrap();
    for (k, v) in &ext {
        assert_eq!(read.get(k), Some(v), "{k}");
    }
    assert_eq!(read.get("title").map(String::as_str), Some(""));
    let mut unknown = Extensions::new();
    unknown.insert("noSuchProperty".into(), "x".into());
    assert!(tw
        .set_user_extensions("jdoe@corp.com", &unknown)
        .await
        .is_err());

    tw.assign_password("jdoe@corp.com", &Secret::new("a-new-password-123"))
        .await
        .unwrap();
    let as_jdoe = client_with(
        server.addr,
        "username = \"jdoe@corp.com\"\npassword = \"a-new-password-123\"",
        "",
    );
    assert_eq!(as_jdoe.current_user().await.unwrap(), "jdoe@corp.com");

    tw.delete_user("jdoe@corp.com").await.unwrap();
    assert!(matches!(
        tw.get_user("jdoe@corp.com").await,
        Err(PlatformError::NotFound(_))
    ));
    assert!(matches!(
        tw.delete_user("jdoe@corp.com").await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));
    assert!(matches!(
        tw.is_user_enabled("nobody").await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));
}

#[tokio::test]
async fn awkward_names_round_trip() {
    let server = dev_server().await;
    let tw = client(&server);
    for name in [
        "Jörg Müller@corp.example",
        "ann o'neil (contractor)",
        "名前@例え.jp",
        "50% off",
    ] {
        tw.create_user(&NewUser {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let upper = name.to_uppercase();
        assert_eq!(tw.get_user(&upper).await.unwrap().name, name, "{name}");
        assert!(tw.is_user_enabled(name).await.unwrap());
        tw.create_group(&NewGroup {
            name: format!("G {name}"),
            ..Default::default()
        })
        .await
        .unwrap();
        tw.add_group_member(&format!("g {upper}"), &Member::user(upper.clone()))
            .await
            .unwrap();
        let members = tw.group_members(&format!("G {name}")).await.unwrap();
        assert!(
            members.iter().any(|m| m.is(&Member::user(name))),
            "{name}: {members:?}"
        );
    }
    assert!(matches!(
        tw.create_user(&NewUser {
            name: "a/b".into(),
            ..Default::default()
        })
        .await,
        Err(PlatformError::Rejected(_))
    ));
}

#[tokio::test]
async fn group_lifecycle_and_membership() {
    let server = dev_server().await;
    let tw = client(&server);
    let builtins: Vec<String> = tw
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    for name in ["Administrators", "Users", "Designers"] {
        assert!(
            builtins.iter().any(|n| n == name),
            "{name} missing from {builtins:?}"
        );
    }
    tw.create_group(&NewGroup {
        name: "Engineering".into(),
        description: "eng".into(),
        project: Some("P1".into()),
        tags: vec![tag("Applications:SCIM")],
    })
    .await
    .unwrap();
    tw.create_group(&NewGroup {
        name: "Contractors".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(matches!(
        tw.create_group(&NewGroup {
            name: "engineering".into(),
            ..Default::default()
        })
        .await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));
    let g = tw.get_group("ENGINEERING").await.unwrap();
    assert_eq!(
        (g.name.as_str(), g.description.as_str(), g.project.as_str()),
        ("Engineering", "eng", "P1")
    );
    assert_eq!(g.tags, vec![tag("Applications:SCIM")]);

    tw.set_group_description("Engineering", "Engineers")
        .await
        .unwrap();
    tw.set_group_project("Engineering", "P2").await.unwrap();
    tw.set_group_tags("Engineering", &[]).await.unwrap();
    let g = tw.get_group("Engineering").await.unwrap();
    assert_eq!(
        (g.description.as_str(), g.project.as_str()),
        ("Engineers", "P2")
    );
    assert!(g.tags.is_empty());

    tw.create_user(&NewUser {
        name: "alice".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tw.add_group_member("Engineering", &Member::user("Alice"))
        .await
        .unwrap();
    tw.add_group_member("Engineering", &Member::user("alice"))
        .await
        .unwrap();
    tw.add_group_member("Engineering", &Member::group("contractors"))
        .await
        .unwrap();
    let members = tw.group_members("Engineering").await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().any(|m| m.is(&Member::user("alice"))));
    assert!(members.iter().any(|m| m.is(&Member::group("Contractors"))));
    assert!(matches!(
        tw.add_group_member("Engineering", &Member::user("nobody"))
            .await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));

    tw.remove_group_member("Engineering", &Member::user("ALICE"))
        .await
        .unwrap();
    tw.remove_group_member("Engineering", &Member::user("alice"))
        .await
        .unwrap();
    let members = tw.group_members("Engineering").await.unwrap();
    assert_eq!(members, vec![Member::group("Contractors")]);

    tw.delete_group("Contractors").await.unwrap();
    assert!(tw.group_members("Engineering").await.unwrap().is_empty());
    assert!(matches!(
        tw.get_group("Contractors").await,
        Err(PlatformError::NotFound(_))
    ));
    assert!(matches!(
        tw.group_members("Contractors").await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));
}

#[tokio::test]
async fn sessions_are_listed_and_terminated() {
    let server = dev_server().await;
    let tw = client(&server);
    tw.create_user(&NewUser {
        name: "bob".into(),
        password: Some(Secret::new("bob-password-123")),
        ..Default::default()
    })
    .await
    .unwrap();
    // A Basic-authenticated request is a login: it opens a session, as a browser's would.
    let as_bob = client_with(
        server.addr,
        "username = \"bob\"\npassword = \"bob-password-123\"",
        "",
    );
    as_bob.current_user().await.unwrap();
    let active: Vec<String> = tw
        .active_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(active.iter().any(|n| n == "bob"), "{active:?}");

    tw.terminate_sessions("BOB").await.unwrap();
    let active: Vec<String> = tw
        .active_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(!active.iter().any(|n| n == "bob"), "{active:?}");
    assert!(matches!(
        tw.terminate_sessions("nobody").await,
        Err(PlatformError::Unexpected {
            status: Some(500),
            ..
        })
    ));
}

/// A fake platform that answers `GetCurrentUser` slowly and records how many calls overlap.
async fn counting_platform(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let peak_out = peak.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(hyper::Response::new(full(
                            r#"{"rows":[{"result":"Administrator"}]}"#,
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, peak_out)
}

#[tokio::test]
async fn projects_and_mashups_are_found_by_name_in_any_case() {
    let server = dev_server().await;
    let c = client(&server);
    for (kind, name, exists) in [
        (EntityKind::Project, "MyProject", true),
        (EntityKind::Project, "myproject", true),
        (EntityKind::Project, "NoSuchProject", false),
        // A mashup's name is not a project's.
        (EntityKind::Project, "Home", false),
        (EntityKind::Mashup, "HOME", true),
        (EntityKind::Mashup, "MobileHome", true),
        // Neither a prefix nor a mask matches more than the name itself.
        (EntityKind::Mashup, "Mobile", false),
        (EntityKind::Mashup, "*", false),
        (EntityKind::Mashup, "Main Menü", false),
    ] {
        assert_eq!(
            c.entity_exists(kind, name).await.unwrap(),
            exists,
            "{kind:?} {name}"
        );
    }
    let wrong = client_with(server.addr, "app_key = \"not-a-key\"", "");
    assert!(matches!(
        wrong.entity_exists(EntityKind::Project, "MyProject").await,
        Err(PlatformError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn concurrency_toward_the_platform_is_bounded() {
    let (addr, peak) = counting_platform(Duration::from_millis(100)).await;
    let tw = Arc::new(client_with(
        addr,
        "app_key = \"k\"\nmax_concurrency = 3",
        "",
    ));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let tw = tw.clone();
            tokio::spawn(async move { tw.current_user().await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), "Administrator");
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "peak concurrent platform calls"
    );
}

#[tokio::test]
async fn slow_platform_is_a_timeout_and_absent_one_is_unavailable() {
    let (addr, _) = counting_platform(Duration::from_secs(5)).await;
    let tw = client_with(addr, "app_key = \"k\"", "request_timeout = \"300ms\"");
    assert!(matches!(
        tw.current_user().await,
        Err(PlatformError::Timeout(_))
    ));

    let dead = common::dead_addr().await;
    let tw = client_with(
        dead,
        "app_key = \"k\"\nretries = 2",
        "connect_timeout = \"1s\"",
    );
    assert!(matches!(
        tw.current_user().await,
        Err(PlatformError::Unavailable(_))
    ));
    // Creates are never repeated, and fail the same way.
    assert!(matches!(
        tw.create_user(&NewUser {
            name: "x".into(),
            ..Default::default()
        })
        .await,
        Err(PlatformError::Unavailable(_))
    ));
}

/// A fake platform that records each request's target and `Host`, and answers `GetCurrentUser`
/// with `answer` sent in `pieces` separately written chunks.
async fn recording_platform(
    answer: &'static str,
    pieces: usize,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen_out = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get(hyper::header::HOST)
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push((req.uri().to_string(), host));
                    async move {
                        let size = answer.len().div_ceil(pieces);
                        let chunks: Vec<Result<_, Infallible>> = answer
                            .as_bytes()
                            .chunks(size)
                            .map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::from(c))))
                            .collect();
                        let body = http_body_util::StreamBody::new(
                            futures_util::stream::iter(chunks).then(|c| async move {
                                tokio::task::yield_now().await;
                                c
                            }),
                        );
                        Ok::<_, Infallible>(hyper::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen_out)
}

/// What reaches the platform is what a real one (Tomcat) requires of an HTTP/1.1 client: an
/// origin-form target and a `Host` naming the configured authority, on every call, over a fresh
/// connection and a reused one; and an answer that arrives in pieces is read whole.
#[tokio::test]
async fn native_calls_carry_the_platform_host_and_an_origin_form_target() {
    let answer = r#"{"dataShape":{"fieldDefinitions":{}},"rows":[{"result":"Administrator"}]}"#;
    for pieces in [1, 7] {
        let (addr, seen) = recording_platform(answer, pieces).await;
        let tw = client_with(addr, "app_key = \"k\"", "");
        for _ in 0..3 {
            assert_eq!(tw.current_user().await.unwrap(), "Administrator");
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        for (target, host) in seen {
            assert_eq!(
                target,
                "/Thingworx/Resources/CurrentSessionInfo/Services/GetCurrentUser"
            );
            assert_eq!(host, addr.to_string());
        }
    }
}

/// An answer past the client's limit (64 MiB) is refused as it arrives, not held whole.
#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mib = bytes::Bytes::from(vec![b' '; 1 << 20]);
                    let chunks = (0..65)
                        .map(move |_| Ok::<_, Infallible>(hyper::body::Frame::data(mib.clone())));
                    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                    Ok::<_, Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let tw = client_with(addr, "app_key = \"k\"", "");
    match tw.current_user().await {
        Err(PlatformError::NoAnswer(message)) => {
            assert!(message.contains("over"), "{message}")
        }
        other => panic!("expected the answer refused, got {other:?}"),
    }
}
