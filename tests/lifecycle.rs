//! The process and connection lifecycle claims of the README, each against the real binary:
//! the connection cap, the idle timeout, the exit code for a port in use, `dev --log-format`,
//! and `terminate_sessions_on_config_change` through a real reload. (Drain: tests/shutdown.rs.)
//!
//! Nothing here measures time: each claim is shown by what happens and in which order.

mod common;

use common::dev_env::{platform_client, ServedPlatform};
use common::*;
use scimgate::config::Secret;
use scimgate::platform::{NewUser, Platform, ThingWorx};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// limits.max_connections
// ---------------------------------------------------------------------------------------------

async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let r = http_get(admin, "/metrics").await.ok()?;
    r.text()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_a_fourth_client_waits_until_one_closes_and_admin_still_answers() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[limits]\nmax_connections = 3\n",
    ))
    .await;
    let host = gw.host_header();

    // Three keep-alive clients, each served once: the gateway holds all three slots.
    let mut held = Vec::new();
    for i in 1..=3 {
        let tcp = TcpStream::connect(gw.gateway_addr).await.unwrap();
        let mut sender = h1_handshake(tcp).await.unwrap();
        let r = Resp::collect(
            sender
                .send_request(get(&host, &format!("/hello?client={i}")))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "client {i}");
        held.push(sender);
    }

    // A fourth client connects (the kernel's backlog takes it) and sends its request.
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let fourth = tokio::spawn({
        let (host, events, addr) = (host.clone(), events.clone(), gw.gateway_addr);
        async move {
            let r = send_plain(addr, get(&host, "/hello?client=4")).await;
            events.lock().unwrap().push("client 4 answered".into());
            r
        }
    });

    // While it waits, the three held connections keep being served, several round trips
    // each, and the admin listener answers: the cap is on gateway connections only.
    for round in 0..5 {
        for (i, sender) in held.iter_mut().enumerate().skip(1) {
            // The client's connection task marks itself ready only once it has seen the last
            // answer end; sending before that is refused by the client, not the gateway.
            sender.ready().await.unwrap();
            let r = Resp::collect(
                sender
                    .send_request(get(&host, &format!("/hello?held={}&round={round}", i + 1)))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
        }
    }
    let health = http_get(gw.admin_addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200, "/healthz at the connection cap");
    assert_eq!(
        metric(gw.admin_addr, "scimgate_open_connections").await,
        Some(3.0),
        "open connections at the cap"
    );
    assert!(
        !upstream.uris().iter().any(|u| u == "/hello?client=4"),
        "the fourth client was served while three connections were open: {:?}",
        upstream.uris()
    );

    // One of the three closes; the waiting client is served.
    events.lock().unwrap().push("client 1 closed".into());
    drop(held.remove(0));
    let r = tokio::time::timeout(Duration::from_secs(30), fourth)
        .await
        .expect("the waiting client was not served after a connection closed")
        .unwrap()
        .expect("the waiting client's request failed");
    assert_eq!(r.status, 200);
    assert!(r.came_from_upstream());
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            "client 1 closed".to_string(),
            "client 4 answered".to_string()
        ],
        "the fourth client is answered only after one of the three closed"
    );
    // The upstream saw it after every request the held connections made while it waited.
    let uris = upstream.uris();
    let fourth_at = uris.iter().position(|u| u == "/hello?client=4").unwrap();
    let last_held = uris.iter().rposition(|u| u.contains("held=")).unwrap();
    assert!(fourth_at > last_held, "upstream arrival order: {uris:?}");
}

// ---------------------------------------------------------------------------------------------
// limits.idle_timeout
// ---------------------------------------------------------------------------------------------

/// Sends one request on a raw connection, reads the answer (`hello`), then reads until the
/// gateway closes the connection. Returns what was read; errors mean the connection broke.
async fn idle_client(addr: SocketAddr, host: String) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&seen).into_owned());
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_stays_open() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        // hyper's header_read_timeout also ends a keep-alive connection that sends nothing;
        // an hour keeps it from being what closes the idle connection here.
        "[limits]\nidle_timeout = \"1s\"\nheader_read_timeout = \"1h\"\n",
    ))
    .await;
    let host = gw.host_header();

    // The busy client: one connection, a request every 200 ms.
    let tcp = TcpStream::connect(gw.gateway_addr).await.unwrap();
    let mut busy = h1_handshake(tcp).await.unwrap();
    let hello = |n: usize| get(&host, &format!("/hello?busy={n}"));
    let r = Resp::collect(busy.send_request(hello(0)).await.unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // The idle client: one request, then silence until the gateway hangs up.
    let idle = tokio::spawn(idle_client(gw.gateway_addr, host.clone()));

    let mut sent = 1;
    let mut after_idle_closed = 0;
    while after_idle_closed < 10 {
        assert!(
            sent < 150,
            "the idle connection was not closed while the busy one sent {sent} requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Checked before the request, so every request counted below was sent after the idle
        // connection's end was seen.
        let idle_closed = idle.is_finished();
        busy.ready()
            .await
            .unwrap_or_else(|e| panic!("busy connection broken after {sent} requests: {e}"));
        let r = busy
            .send_request(hello(sent))
            .await
            .unwrap_or_else(|e| panic!("busy connection broken after {sent} requests: {e}"));
        assert_eq!(Resp::collect(r).await.unwrap().status, 200);
        sent += 1;
        if idle_closed {
            after_idle_closed += 1;
        }
    }
    let seen = idle
        .await
        .unwrap()
        .expect("the idle connection broke instead of being closed");
    assert!(
        seen.starts_with("HTTP/1.1 200") && seen.ends_with("hello"),
        "the idle client got its answer, then EOF: {seen:?}"
    );
    // 10 requests at 200 ms intervals went over the busy connection after the idle one was
    // closed: 2 s past an idle timeout of 1 s, on the same connection.
    assert!(sent >= 11);
}

// ---------------------------------------------------------------------------------------------
// Exit code 2 when the listen port is in use
// ---------------------------------------------------------------------------------------------

/// Waits for a child process to exit on its own (killing it after `within`).
fn wait_child(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn read_all(r: Option<impl std::io::Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

#[test]
fn a_listen_port_in_use_exits_2_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimgate.toml");
    std::fs::write(
        &path,
        config_toml(
            &format!("[[listeners]]\naddress = \"{address}\"\n\n"),
            "http://127.0.0.1:9",
            "",
            "",
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("SCIMGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, Duration::from_secs(60));
    let stderr = read_all(child.stderr.take());
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "exit status with {address} taken; stderr:\n{stderr}"
    );
    let line = stderr
        .lines()
        .filter_map(parse_json)
        .find(|j| j.str_field("level").as_deref() == Some("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line; stderr:\n{stderr}"));
    assert!(
        line.str_field("error")
            .is_some_and(|e| e.contains(&address.to_string())),
        "the error line names {address}: {line:?}"
    );
    drop(taken);
}

// ---------------------------------------------------------------------------------------------
// `scimgate dev --log-format`
// ---------------------------------------------------------------------------------------------

#[test]
fn dev_log_format_accepts_only_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    for (how, value) in [("flag", "xml"), ("flag", "JSON "), ("env", "yaml")] {
        let command = dev_command(dir.path());
        // dev_command passes `--log-format json`; a later flag or the variable (with the flag
        // removed) is what is checked here.
        let mut args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args.iter().position(|a| a == "--log-format").unwrap();
        args.drain(at..at + 2);
        let mut command = Command::new(bin());
        command
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if how == "flag" {
            command.args(["--log-format", value]);
        } else {
            command.env("SCIMGATE_LOG_FORMAT", value);
        }
        let mut child = command.spawn().unwrap();
        let status = wait_child(&mut child, Duration::from_secs(60));
        let stderr = read_all(child.stderr.take());
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "dev with log format {value:?} ({how}); stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(value.trim())
                && stderr.contains("--log-format")
                && stderr.contains("text")
                && stderr.contains("json"),
            "the error names the value, the flag and what is accepted: {stderr}"
        );
        // Refused before anything started.
        assert!(
            !dir.path().join("tls").exists(),
            "dev started with {value:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// provisioning.terminate_sessions_on_config_change through a real reload
// ---------------------------------------------------------------------------------------------

async fn sessions(tw: &ThingWorx) -> Vec<String> {
    let mut names: Vec<String> = tw
        .active_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.to_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn provisioning(terminate: bool, exclusions: &[&str]) -> String {
    let list: Vec<String> = exclusions.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[provisioning]\nuser_exclusions = [{}]\nterminate_sessions_on_config_change = {terminate}\n",
        list.join(", ")
    )
}

async fn sessions_across_a_reload(terminate: bool) -> (Vec<String>, Vec<String>, Gateway) {
    let platform = ServedPlatform::start().await;
    let (platform_addr, key) = (platform.addr, platform.key.clone());

    let toml = |exclusions: &[&str]| {
        config_toml(
            &plain_listener(),
            &format!("http://{platform_addr}"),
            "",
            &format!(
                "[platform]\napp_key = \"{key}\"\n\n{}",
                provisioning(terminate, exclusions)
            ),
        )
    };
    let gw = Gateway::start(&toml(&["carol"])).await;

    // Three users with a session each; carol is excluded from provisioning.
    let tw = platform.client();
    let password = "session-password-123";
    for user in ["alice", "bob", "carol"] {
        tw.create_user(&NewUser {
            name: user.to_string(),
            password: Some(Secret::new(password)),
            ..Default::default()
        })
        .await
        .unwrap();
        let as_user = platform_client(
            platform_addr,
            &format!("username = \"{user}\"\npassword = \"{password}\""),
        );
        assert_eq!(as_user.current_user().await.unwrap(), user);
    }
    let before = sessions(&tw).await;

    // The provisioning policy changes (one more exclusion) and the gateway is told.
    let path = gw.config_path.clone();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, toml(&["carol", "svc-backup"])).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    gw.signal("HUP");
    gw.wait_log(Duration::from_secs(30), |j| {
        j.message() == "configuration reloaded"
    })
    .await
    .unwrap_or_else(|| panic!("no reload line: {:?}", gw.logs()));
    let after = sessions(&tw).await;
    (before, after, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_policy_ends_every_session_but_excluded_users() {
    let (before, after, gw) = sessions_across_a_reload(true).await;
    for user in ["alice", "bob", "carol"] {
        assert!(before.contains(&user.to_string()), "{user}: {before:?}");
    }
    assert!(
        !after.contains(&"alice".to_string()) && !after.contains(&"bob".to_string()),
        "ordinary users' sessions survived the reload: {after:?}"
    );
    assert!(
        after.contains(&"carol".to_string()),
        "the excluded user's session was ended: {after:?}"
    );
    let ended = gw
        .json_logs()
        .into_iter()
        .find(|j| j.message() == "ended sessions after the provisioning change");
    assert_eq!(
        ended.and_then(|j| j.str_field("users")).as_deref(),
        Some("2"),
        "{:?}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_setting_off_a_reload_ends_no_session() {
    let (before, after, gw) = sessions_across_a_reload(false).await;
    for user in ["alice", "bob", "carol"] {
        assert!(before.contains(&user.to_string()), "{user}: {before:?}");
    }
    assert_eq!(after, before, "sessions changed across the reload");
    assert!(
        !gw.json_logs()
            .iter()
            .any(|j| j.message().contains("ended sessions")),
        "{:?}",
        gw.logs()
    );
}

/// The help's signal line says what SIGHUP does: the whole configuration and the certificates
/// (it once said certificates only).
#[test]
fn help_says_sighup_rereads_the_configuration_and_the_certificates() {
    let out = Command::new(bin())
        .arg("--help")
        .env_remove("SCIMGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let signals = help
        .split("Signals:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Signals line in --help: {help}"));
    assert!(
        signals.contains("SIGHUP")
            && signals.contains("configuration")
            && signals.contains("TLS certificates"),
        "--help on SIGHUP: {signals}"
    );
}
