//! `scimgate dev`: one process with the development platform and the gateway in front of it.
//! A native call goes through the gateway's TLS pass-through, the process stops cleanly on
//! SIGTERM, and a second start on the same data directory finds everything it left.

mod common;

use common::*;
use http::Method;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let writer = sink.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            writer.lock().unwrap().push(line);
        }
    });
    sink
}

impl Dev {
    fn start(data_dir: &Path) -> Dev {
        Dev::spawn(dev_command(data_dir))
    }

    fn spawn(mut command: Command) -> Dev {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect_lines(child.stderr.take().unwrap());
        let stdout = collect_lines(child.stdout.take().unwrap());
        Dev {
            child,
            stderr,
            stdout,
        }
    }

    /// The address a `listening` log line gives for `listener`, waiting up to 60 s.
    async fn address(&mut self, listener: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.stderr.lock().unwrap().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                (v["message"] == "listening" && v["listener"] == listener)
                    .then(|| v["address"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(a) = found {
                return a;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "scimgate dev exited with {status}: {:?}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {listener} listener announced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "scimgate dev did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn native_call(host: &str, path: &str, app_key: &str, body: &str) -> http::Request<Body> {
    let mut req = request(Method::POST, host, path, full(body.to_string()));
    let h = req.headers_mut();
    h.insert("appKey", app_key.parse().unwrap());
    h.insert("accept", "application/json".parse().unwrap());
    h.insert("content-type", "application/json".parse().unwrap());
    req
}

/// `CreateUser` through the gateway's pass-through, asserting the platform's 200.
async fn create_user_natively(
    gateway: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    app_key: &str,
    name: &str,
) {
    let created = send_tls(
        gateway,
        "localhost",
        tls,
        native_call(
            &format!("localhost:{}", gateway.port()),
            "/Thingworx/Resources/EntityServices/Services/CreateUser",
            app_key,
            &serde_json::json!({"name": name, "password": "a-long-password-1"}).to_string(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 200, "{}", created.text());
}

#[tokio::test]
async fn dev_serves_the_platform_through_the_gateway_and_keeps_its_state() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(data.path());
    let gateway = dev.address("gateway").await;
    let platform = dev.address("platform").await;
    let admin = dev.address("admin").await;

    let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
    let key = std::fs::read_to_string(data.path().join("gateway.appkey")).unwrap();
    let tls = client_config(&cert, &[b"http/1.1"]);
    let host = format!("localhost:{}", gateway.port());

    let list = send_tls(
        gateway,
        "localhost",
        tls.clone(),
        native_call(
            &host,
            "/Thingworx/Resources/EntityServices/Services/GetEntityList",
            &key,
            r#"{"type":"User"}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.text().contains("Administrator"), "{}", list.text());

    create_user_natively(gateway, tls.clone(), &key, "made-through-dev").await;

    // A plain web page passes through too, and the SCIM paths are the gateway's.
    let home = send_tls(gateway, "localhost", tls.clone(), get(&host, "/Thingworx"))
        .await
        .unwrap();
    assert_eq!(home.status, 200);
    // SCIM is the gateway's: refused without the token, served with it.
    let scim = send_tls(
        gateway,
        "localhost",
        tls.clone(),
        get(&host, "/Thingworx/SCIMProvider/SCIM/Users"),
    )
    .await
    .unwrap();
    assert_eq!(scim.status, 401);
    let token = std::fs::read_to_string(data.path().join("scim.token")).unwrap();
    let mut authed = get(&host, "/Thingworx/SCIMProvider/SCIM/Users");
    authed.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let scim = send_tls(gateway, "localhost", tls.clone(), authed)
        .await
        .unwrap();
    assert_eq!(scim.status, 200, "{}", scim.text());
    assert!(scim.text().contains("made-through-dev"), "{}", scim.text());

    assert_eq!(http_get(admin, "/readyz").await.unwrap().status, 200);
    let banner = dev.stdout.lock().unwrap().join("\n");
    assert!(banner.contains("curl --cacert"), "{banner}");
    assert!(banner.contains(&platform.port().to_string()), "{banner}");
    // The token command names the running binary: `cargo run` puts no `scimgate` on the PATH.
    assert!(banner.contains("/scimgate token --data-dir"), "{banner}");
    assert!(
        !banner.contains(key.trim()),
        "the banner printed the app key"
    );
    assert!(
        !dev.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(key.trim())),
        "a log line holds the app key"
    );
    assert!(dev.stop().success());

    // Same data directory: same key, and the user created above is still there.
    let mut dev = Dev::start(data.path());
    let gateway = dev.address("gateway").await;
    let again = std::fs::read_to_string(data.path().join("gateway.appkey")).unwrap();
    assert_eq!(again, key);
    let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
    let host = format!("localhost:{}", gateway.port());
    let list = send_tls(
        gateway,
        "localhost",
        client_config(&cert, &[b"http/1.1"]),
        native_call(
            &host,
            "/Thingworx/Resources/EntityServices/Services/GetEntityList",
            &key,
            r#"{"type":"User"}"#,
        ),
    )
    .await
    .unwrap();
    assert!(list.text().contains("made-through-dev"), "{}", list.text());
    assert!(dev.stop().success());
}

/// On one CPU (a CPU set of one, or a container's quota of one) the gateway runs a
/// single-threaded runtime: everything it does must still work there, the platform beside it
/// included, down to the clean stop.
#[tokio::test]
async fn on_one_cpu_the_gateway_runs_single_threaded_and_serves_everything() {
    // .ci/run installs util-linux: a missing taskset is a broken machine, not a skip.
    assert!(
        Command::new("taskset").arg("-V").output().is_ok(),
        "taskset (util-linux) is not installed"
    );
    let data = tempfile::tempdir().unwrap();
    let dev_args: Vec<std::ffi::OsString> = dev_command(data.path())
        .get_args()
        .map(|a| a.to_os_string())
        .collect();
    let mut one_cpu = Command::new("taskset");
    one_cpu
        .args(["-c", "0", bin()])
        .args(dev_args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let mut dev = Dev::spawn(one_cpu);
    let gateway = dev.address("gateway").await;
    let runtime = dev.stderr.lock().unwrap().iter().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == "async runtime").then(|| v["runtime"].clone())
    });
    assert_eq!(runtime, Some(serde_json::json!("current_thread")));

    let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
    let key = std::fs::read_to_string(data.path().join("gateway.appkey")).unwrap();
    let token = std::fs::read_to_string(data.path().join("scim.token")).unwrap();
    let host = format!("localhost:{}", gateway.port());
    let tls = client_config(&cert, &[b"http/1.1"]);
    create_user_natively(gateway, tls.clone(), &key, "one-cpu-user").await;
    let mut scim = get(
        &host,
        "/Thingworx/SCIMProvider/SCIM/v2/Users?filter=userName%20eq%20%22one-cpu-user%22",
    );
    scim.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let found = send_tls(gateway, "localhost", tls, scim).await.unwrap();
    assert_eq!(found.status, 200, "{}", found.text());
    assert!(
        found.text().contains("\"totalResults\":1"),
        "{}",
        found.text()
    );
    assert!(dev.stop().success());
}

/// Issue 18: the development platform acknowledges a write only once its journal line is
/// durable. A burst of creates from four connections straight to the platform listener, the
/// process killed with SIGKILL in the middle of it, a restart on the same data directory: every
/// create that was answered 200 is there.
#[tokio::test]
async fn no_acknowledged_create_is_lost_when_dev_is_killed_mid_burst() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(data.path());
    let platform = dev.address("platform").await;
    let key = std::fs::read_to_string(data.path().join("gateway.appkey")).unwrap();
    let key = key.trim().to_string();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let host = platform.to_string();
    let mut burst = Vec::new();
    for worker in 0..4 {
        let (acknowledged, key, host) = (acknowledged.clone(), key.clone(), host.clone());
        burst.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("burst-{worker}-{i:05}");
                let body = serde_json::json!({"name": name, "description": "burst"}).to_string();
                let req = native_call(
                    &host,
                    "/Thingworx/Resources/EntityServices/Services/CreateUser",
                    &key,
                    &body,
                );
                match send_plain(platform, req).await {
                    Ok(r) if r.status == 200 => acknowledged.lock().unwrap().push(name),
                    Ok(r) => panic!("create {name}: {} {}", r.status, r.text()),
                    // The process is gone: this create was never acknowledged.
                    Err(_) => return,
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    for task in burst {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut dev = Dev::start(data.path());
    let platform = dev.address("platform").await;
    let list = send_plain(
        platform,
        native_call(
            &platform.to_string(),
            "/Thingworx/Resources/EntityServices/Services/GetEntityList",
            &key,
            r#"{"type":"User","maxItems":100000,"nameMask":"burst-*"}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(list.status, 200, "{}", list.text());
    let listed: serde_json::Value = serde_json::from_str(&list.text()).unwrap();
    let present: std::collections::HashSet<String> = listed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !present.contains(*n))
        .collect();
    println!(
        "{} creates acknowledged before SIGKILL, {} users after the restart",
        acknowledged.len(),
        present.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(dev.stop().success());
}

/// Issue 18: `--platform-latency` delays every native request as a remote platform would, on a
/// timer. Only a lower bound is checked (a loaded machine may take longer, never less); that
/// no flag means no delay is checked without timing, in the development platform's own tests.
#[tokio::test]
async fn platform_latency_delays_every_native_request() {
    let data = tempfile::tempdir().unwrap();
    let mut command = dev_command(data.path());
    command.args([
        "--platform-latency",
        "60ms",
        "--platform-latency-jitter",
        "10ms",
    ]);
    let mut dev = Dev::spawn(command);
    let platform = dev.address("platform").await;
    let gateway = dev.address("gateway").await;
    let key = std::fs::read_to_string(data.path().join("gateway.appkey")).unwrap();
    let key = key.trim().to_string();
    let list = r#"{"type":"User","maxItems":10}"#;
    let path = "/Thingworx/Resources/EntityServices/Services/GetEntityList";

    let started = Instant::now();
    let direct = send_plain(
        platform,
        native_call(&platform.to_string(), path, &key, list),
    )
    .await
    .unwrap();
    let direct_took = started.elapsed();
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert!(direct_took >= Duration::from_millis(50), "{direct_took:?}");

    let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
    let tls = client_config(&cert, &[b"http/1.1"]);
    let host = format!("localhost:{}", gateway.port());
    let started = Instant::now();
    let proxied = send_tls(
        gateway,
        "localhost",
        tls,
        native_call(&host, path, &key, list),
    )
    .await
    .unwrap();
    let proxied_took = started.elapsed();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert!(
        proxied_took >= Duration::from_millis(50),
        "{proxied_took:?}"
    );
    assert!(dev.stop().success());
}
