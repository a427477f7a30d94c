//! SCIM-path benchmark: prints figures, asserts nothing about speed.
//!
//!   cargo bench --bench scim_path [-- --duration 5 --connections 8 --ops lookup,create,membership]
//!
//! With `SCIM_BENCH_SHOW_CALLS=1` in the environment it also lists each operation's native calls.
//!
//! Starts the release `scimgate dev` (development platform with the gateway in front of it) and,
//! for four operations identity providers repeat all day, measures:
//! - through scimgate: a `scimgate serve` process of its own in front of the platform, over
//!   HTTPS, with a JWT from the development issuer (verified against cached keys);
//! - directly: the native calls the operation needs, made straight to the platform with the
//!   gateway's app key.
//!
//! The native calls are not guessed: a second gateway is pointed at a recording proxy in front of
//! the platform, each operation is made once through it, and what reached the platform is replayed
//! (requests that overlapped in time are replayed concurrently, as the gateway made them). So the
//! ratio scimgate/direct is the translation's cost: TLS, auth, SCIM parsing and rendering, policy.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::scim::{enc, group_id_of, id_of};
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SCIM2: &str = "/Thingworx/SCIMProvider/SCIM/v2";
const USERS: usize = 200;
const GROUP: &str = "bench-group";

fn user_name(n: usize) -> String {
    format!("bench-user-{n:04}")
}

struct Args {
    duration: Duration,
    connections: usize,
    /// Which operations to run: lookup (filter and get), create, membership.
    ops: Vec<String>,
}

impl Args {
    fn runs(&self, op: &str) -> bool {
        self.ops.is_empty() || self.ops.iter().any(|o| o == op)
    }
}

fn args() -> Args {
    let mut a = Args {
        duration: Duration::from_secs(5),
        connections: 8,
        ops: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--duration", Some(v)) => {
                a.duration = Duration::from_secs(v);
                i += 1;
            }
            ("--connections", Some(v)) => {
                a.connections = v as usize;
                i += 1;
            }
            ("--ops", _) => {
                a.ops = argv
                    .get(i + 1)
                    .map(|v| v.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                i += 1;
            }
            // `cargo bench` passes `--bench`; options meant for scripts/bench.py are ignored.
            _ => {}
        }
        i += 1;
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

struct Dev {
    child: Child,
    data: PathBuf,
    platform: SocketAddr,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn listening(log: &Path, listener: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = if v.get("fields").is_some() {
            &v["fields"]
        } else {
            &v
        };
        let message = fields["message"].as_str().or(v["message"].as_str())?;
        (message == "listening" && fields["listener"] == json!(listener))
            .then(|| fields["address"].as_str()?.parse().ok())
            .flatten()
    })
}

fn wait_listening(log: &Path, listener: &str) -> SocketAddr {
    for _ in 0..400 {
        if let Some(a) = listening(log, listener) {
            return a;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no {listener} listener in {}:\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn start_dev(dir: &Path) -> Dev {
    let data = dir.join("dev");
    let log = dir.join("dev.log");
    let child = dev_command(&data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start scimgate dev");
    // Its own gateway is left idle: the one measured runs in a process of its own.
    wait_listening(&log, "gateway");
    let platform = wait_listening(&log, "platform");
    Dev {
        child,
        data,
        platform,
    }
}

/// A `scimgate serve` of its own in front of `upstream` (the platform, or the recorder), with the
/// development platform's app key: `listener_tls` and `auth` are TOML fragments.
fn start_gateway(
    dir: &Path,
    name: &str,
    dev: &Dev,
    upstream: SocketAddr,
    listener_tls: &str,
    auth: &str,
) -> (Child, SocketAddr) {
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    let config = dir.join(format!("{name}.toml"));
    let data = dev.data.display();
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n{listener_tls}\n\n\
             [upstream]\nurl = \"http://{upstream}\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n\
             [log]\nformat = \"json\"\n\n\
             [platform]\napp_key = \"file:{data}/gateway.appkey\"\n\n\
             [provisioning]\naudit_log = \"{dir}/{name}-audit.log\"\n\n{auth}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start a gateway");
    for _ in 0..400 {
        for file in [&out, &err] {
            if let Some(a) = listening(file, "gateway") {
                return (child, a);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the {name} gateway did not start:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Recording what reaches the platform
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct NativeCall {
    method: Method,
    path: String,
    content_type: Option<String>,
    accept: Option<String>,
    body: Bytes,
    /// What the platform answered when recorded: a replay fails when it answers otherwise (a
    /// create's existence check is a 404 by design, not a failure).
    status: StatusCode,
    started: Instant,
    ended: Instant,
}

type Recording = Arc<Mutex<Vec<NativeCall>>>;

type Native = Client<HttpConnector, Full<Bytes>>;

async fn start_recorder(platform: SocketAddr, recording: Recording) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client: Native = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let client = client.clone();
            let recording = recording.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    let recording = recording.clone();
                    async move {
                        let started = Instant::now();
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        let mut forward = Request::builder()
                            .method(parts.method.clone())
                            .uri(format!("http://{platform}{path}"));
                        for (k, v) in &parts.headers {
                            if k != "host" {
                                forward = forward.header(k, v);
                            }
                        }
                        let resp = client
                            .request(forward.body(Full::new(body.clone())).unwrap())
                            .await
                            .expect("platform reachable");
                        let (rparts, rbody) = resp.into_parts();
                        let rbody = rbody.collect().await?.to_bytes();
                        let header = |name: &str| {
                            parts
                                .headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        recording.lock().unwrap().push(NativeCall {
                            method: parts.method,
                            path,
                            content_type: header("content-type"),
                            accept: header("accept"),
                            body,
                            status: rparts.status,
                            started,
                            ended: Instant::now(),
                        });
                        Ok::<_, hyper::Error>(hyper::Response::from_parts(rparts, Full::new(rbody)))
                    }
                });
                let _ = server_http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// The recorded calls in waves: calls of one wave overlapped in time and are replayed together.
fn waves(calls: Vec<NativeCall>) -> Vec<Vec<NativeCall>> {
    let mut calls = calls;
    calls.sort_by_key(|c| c.started);
    let mut out: Vec<Vec<NativeCall>> = Vec::new();
    let mut wave_end: Option<Instant> = None;
    for c in calls {
        match (out.last_mut(), wave_end) {
            (Some(wave), Some(end)) if c.started < end => {
                wave_end = Some(end.max(c.ended));
                wave.push(c);
            }
            _ => {
                wave_end = Some(c.ended);
                out.push(vec![c]);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

struct Scim {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    token: String,
    host: String,
}

impl Scim {
    async fn connect(addr: SocketAddr, token: &str) -> Scim {
        let tls = tls_connect(addr, "localhost", insecure_client_config(&[b"http/1.1"]))
            .await
            .expect("TLS to the gateway");
        Scim {
            sender: h1_handshake(tls).await.unwrap(),
            token: token.to_string(),
            host: format!("localhost:{}", addr.port()),
        }
    }

    async fn call(
        &mut self,
        method: Method,
        rel: &str,
        body: Option<Value>,
    ) -> (StatusCode, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{SCIM2}{rel}"))
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/scim+json");
                full(b.to_string())
            }
            None => empty(),
        };
        self.sender.ready().await.unwrap();
        let resp = self
            .sender
            .send_request(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes)
    }
}

async fn native_call(
    client: &Native,
    platform: SocketAddr,
    app_key: &str,
    call: &NativeCall,
    rename: &[(String, String)],
) -> StatusCode {
    let mut path = call.path.clone();
    let mut body = String::from_utf8_lossy(&call.body).into_owned();
    for (from, to) in rename {
        path = path.replace(from, to);
        body = body.replace(from, to);
    }
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(format!("http://{platform}{path}"))
        .header("appKey", app_key);
    if let Some(ct) = &call.content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = &call.accept {
        req = req.header("accept", a);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

async fn replay(
    client: &Native,
    platform: SocketAddr,
    app_key: &str,
    plan: &[Vec<NativeCall>],
    rename: &[(String, String)],
) -> bool {
    let mut ok = true;
    for wave in plan {
        let results = futures_util::future::join_all(
            wave.iter()
                .map(|c| native_call(client, platform, app_key, c, rename)),
        )
        .await;
        ok &= results.iter().zip(wave).all(|(s, c)| *s == c.status);
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

struct Figures {
    ops: usize,
    failures: usize,
    latencies_ms: Vec<f64>,
    elapsed: Duration,
    /// CPU seconds used during the run by: this process (the load generator), the measured
    /// gateway, the development platform.
    cpu: [f64; 3],
}

/// The processes whose CPU time each run reports: the measured gateway and the platform.
static WATCHED: std::sync::OnceLock<[u32; 2]> = std::sync::OnceLock::new();

/// CPU seconds (user and system, all threads) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields of the line, 12th and 13th after the name.
    (field(11) + field(12)) / hz
}

fn cpu_now() -> [f64; 3] {
    let [gateway, platform] = WATCHED.get().copied().unwrap_or_default();
    [
        cpu_seconds(std::process::id()),
        cpu_seconds(gateway),
        cpu_seconds(platform),
    ]
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        let mut l = self.latencies_ms.clone();
        l.sort_by(|a, b| a.total_cmp(b));
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// Runs `op(worker, iteration)` on `workers` tasks for `duration`; the closure returns success.
async fn drive<F, Fut>(workers: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let cpu_before = cpu_now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0;
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if !op(w, i).await {
                    failures += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            (lat, failures)
        }));
    }
    let mut f = Figures {
        ops: 0,
        failures: 0,
        latencies_ms: Vec::new(),
        elapsed: Duration::ZERO,
        cpu: [0.0; 3],
    };
    for t in tasks {
        let (lat, failures) = t.await.unwrap();
        f.ops += lat.len();
        f.failures += failures;
        f.latencies_ms.extend(lat);
    }
    f.elapsed = started.elapsed();
    let cpu_after = cpu_now();
    for (i, used) in f.cpu.iter_mut().enumerate() {
        *used = cpu_after[i] - cpu_before[i];
    }
    f
}

fn print_row(name: &str, native_calls: usize, scim: &Figures, direct: &Figures) {
    println!(
        "  {name:<34} {:>3} {:>9.0} {:>8.2} {:>9.0} {:>8.2} {:>7.2} {:>5}",
        native_calls,
        scim.rate(),
        scim.p(0.99),
        direct.rate(),
        direct.p(0.99),
        scim.rate() / direct.rate(),
        scim.failures + direct.failures,
    );
    let per_op = |f: &Figures, i: usize| f.cpu[i] * 1e6 / f.ops.max(1) as f64;
    println!(
        "  {:<38} CPU µs per operation: load generator {:.0}, gateway {:.0}, platform {:.0}; direct: {:.0}, -, {:.0}",
        "",
        per_op(scim, 0),
        per_op(scim, 1),
        per_op(scim, 2),
        per_op(direct, 0),
        per_op(direct, 2),
    );
}

async fn delete_users(client: &Native, platform: SocketAddr, app_key: &str, prefix: &str) {
    let list = client
        .request(
            Request::builder()
                .method(Method::POST)
                .uri(format!(
                    "http://{platform}/Thingworx/Resources/EntityServices/Services/GetEntityList"
                ))
                .header("appKey", app_key)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .body(Full::new(Bytes::from(
                    json!({"type": "User", "maxItems": 100000, "nameMask": format!("{prefix}*"), "tags": ""})
                        .to_string(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = list.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let names: Vec<String> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    for name in names {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "http://{platform}/Thingworx/Resources/EntityServices/Services/DeleteUser"
            ))
            .header("appKey", app_key)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json!({"name": name}).to_string())))
            .unwrap();
        let _ = client.request(req).await.map(|r| r.into_body());
    }
}

fn new_user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Bench", "familyName": "User"},
        "emails": [{"value": format!("{name}@corp.example"), "type": "work"}],
        "active": true,
    })
}

fn membership(op: &str, user: &str) -> Value {
    let patch = match op {
        "add" => json!({"op": "add", "path": "members", "value": [{"value": id_of(user)}]}),
        _ => json!({"op": "remove", "path": format!("members[value eq \"{}\"]", id_of(user))}),
    };
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [patch]})
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let app_key = std::fs::read_to_string(dev.data.join("gateway.appkey"))
        .unwrap()
        .trim()
        .to_string();
    let token_out = Command::new(bin())
        .args(["token", "--data-dir"])
        .arg(&dev.data)
        .output()
        .unwrap();
    let jwt = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(jwt.split('.').count() == 3, "scimgate token gave no JWT");

    // The gateway measured: a process of its own, as a sidecar is, with TLS and the development
    // issuer's JWTs checked against its JWKS, in front of the development platform.
    use base64::Engine;
    let claims: Value = jwt
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("the token's claims");
    let jwks = wait_listening(&dir.path().join("dev.log"), "jwks");
    let jwt_auth = format!(
        "[[auth.jwt]]\nissuer = {}\naudiences = [{}]\njwks_url = \"http://{jwks}/jwks.json\"\n\
         algorithms = [\"ES256\"]\nadmin_scopes = [{}]\n",
        claims["iss"],
        claims["aud"],
        claims["scope"]
            .as_str()
            .or(claims["scp"].as_str())
            .map(|s| json!(s.split_whitespace().next().unwrap_or("")))
            .unwrap_or(json!("scim")),
    );
    let tls_dir = dir.path().join("measured-tls");
    let (mut measured_child, measured) = start_gateway(
        dir.path(),
        "measured",
        &dev,
        dev.platform,
        &format!(
            "tls = {{ self_signed = true, self_signed_dir = \"{}\" }}",
            tls_dir.display()
        ),
        &jwt_auth,
    );

    let _ = WATCHED.set([measured_child.id(), dev.child.id()]);

    // Users and a group to look up and to change membership of.
    let mut setup = Scim::connect(measured, &jwt).await;
    for n in 0..USERS {
        let (s, b) = setup
            .call(Method::POST, "/Users", Some(new_user(&user_name(n))))
            .await;
        assert!(s == StatusCode::CREATED, "setup user {n}: {s} {b:?}");
    }
    let (s, b) = setup
        .call(
            Method::POST,
            "/Groups",
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": GROUP})),
        )
        .await;
    assert!(s == StatusCode::CREATED, "setup group: {s} {b:?}");
    let group_id = group_id_of(GROUP);

    // What each operation sends to the platform.
    let recording: Recording = Arc::default();
    let recorder = start_recorder(dev.platform, recording.clone()).await;
    let static_auth = format!(
        "[scim]\nbearer_token = \"file:{}/scim.token\"\n",
        dev.data.display()
    );
    let (mut rec_child, rec_addr) =
        start_gateway(dir.path(), "recording", &dev, recorder, "", &static_auth);
    let static_token = std::fs::read_to_string(dev.data.join("scim.token"))
        .unwrap()
        .trim()
        .to_string();
    let tcp = tokio::net::TcpStream::connect(rec_addr).await.unwrap();
    let mut rec = Scim {
        sender: h1_handshake(tcp).await.unwrap(),
        token: static_token,
        host: rec_addr.to_string(),
    };
    let recorded_user = user_name(0);
    let recorded_new = "bench-recorded-new".to_string();
    let filter_path = format!(
        "/Users?filter={}",
        enc(&format!("userName eq \"{recorded_user}\""))
    );
    let mut plans: Vec<(&str, Vec<Vec<NativeCall>>)> = Vec::new();
    let ops: Vec<(&str, Method, String, Option<Value>)> = vec![
        (
            "GET /Users?filter=userName eq",
            Method::GET,
            filter_path.clone(),
            None,
        ),
        (
            "GET /Users/{id}",
            Method::GET,
            format!("/Users/{}", id_of(&recorded_user)),
            None,
        ),
        (
            "POST /Users",
            Method::POST,
            "/Users".into(),
            Some(new_user(&recorded_new)),
        ),
        (
            "PATCH /Groups/{id} add member",
            Method::PATCH,
            format!("/Groups/{group_id}"),
            Some(membership("add", &recorded_user)),
        ),
        (
            "PATCH /Groups/{id} remove member",
            Method::PATCH,
            format!("/Groups/{group_id}"),
            Some(membership("remove", &recorded_user)),
        ),
    ];
    for (name, method, rel, body) in ops {
        // Once to warm the recording gateway's caches, as the measured gateway's are warm.
        if method == Method::GET {
            rec.call(method.clone(), &rel, body.clone()).await;
        }
        recording.lock().unwrap().clear();
        let (s, b) = rec.call(method, &rel, body).await;
        assert!(s.is_success(), "recording {name}: {s} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls = std::mem::take(&mut *recording.lock().unwrap());
        if std::env::var_os("SCIM_BENCH_SHOW_CALLS").is_some() {
            for c in &calls {
                eprintln!("{name}: {} {}", c.method, c.path);
            }
        }
        plans.push((name, waves(calls)));
    }
    let _ = rec_child.kill();
    let _ = rec_child.wait();

    let native: Native = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    delete_users(&native, dev.platform, &app_key, "bench-recorded").await;

    println!(
        "SCIM path: {} connections, {}s per run, {} users on the development platform",
        args.connections,
        args.duration.as_secs(),
        USERS
    );
    println!("  through scimgate: HTTPS, JWT (ES256, keys cached); direct: the same native calls over HTTP with the app key");
    println!(
        "  {:<34} {:>3} {:>9} {:>8} {:>9} {:>8} {:>7} {:>5}",
        "operation", "nc", "scim/s", "p99 ms", "native/s", "p99 ms", "ratio", "fail"
    );

    let plan_of = |n: &str| -> Arc<Vec<Vec<NativeCall>>> {
        Arc::new(
            plans
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, p)| p.clone())
                .unwrap(),
        )
    };
    let calls = |p: &[Vec<NativeCall>]| p.iter().map(Vec::len).sum::<usize>();
    let workers = args.connections;
    let mut connections = Vec::new();
    for _ in 0..workers {
        connections.push(Arc::new(tokio::sync::Mutex::new(
            Scim::connect(measured, &jwt).await,
        )));
    }
    let conns = Arc::new(connections);
    let native = Arc::new(native);
    let key = Arc::new(app_key.clone());
    let platform = dev.platform;

    // Lookups: filter and get, both spread over the users.
    let lookups = if args.runs("lookup") { 2 } else { 0 };
    for (name, rel_of) in [
        (
            "GET /Users?filter=userName eq",
            Arc::new(|n: usize| {
                format!(
                    "/Users?filter={}",
                    enc(&format!("userName eq \"{}\"", user_name(n)))
                )
            }) as Arc<dyn Fn(usize) -> String + Send + Sync>,
        ),
        (
            "GET /Users/{id}",
            Arc::new(|n: usize| format!("/Users/{}", id_of(&user_name(n)))),
        ),
    ]
    .into_iter()
    .take(lookups)
    {
        let plan = plan_of(name);
        let (n2, k2, p2) = (native.clone(), key.clone(), plan.clone());
        let direct = drive(workers, args.duration, move |w, i| {
            let (n2, k2, p2) = (n2.clone(), k2.clone(), p2.clone());
            async move {
                let rename = vec![(user_name(0), user_name((w * 31 + i) % USERS))];
                replay(&n2, platform, &k2, &p2, &rename).await
            }
        })
        .await;
        let c2 = conns.clone();
        let rel_of2 = rel_of.clone();
        let scim = drive(workers, args.duration, move |w, i| {
            let (c2, rel) = (c2.clone(), rel_of2((w * 31 + i) % USERS));
            async move {
                let mut c = c2[w].lock().await;
                c.call(Method::GET, &rel, None).await.0 == StatusCode::OK
            }
        })
        .await;
        print_row(name, calls(&plan), &scim, &direct);
    }

    // Creates: every run starts from the same platform state.
    if args.runs("create") {
        let name = "POST /Users";
        let plan = plan_of(name);
        let (n2, k2, p2) = (native.clone(), key.clone(), plan.clone());
        let direct = drive(workers, args.duration, move |w, i| {
            let (n2, k2, p2) = (n2.clone(), k2.clone(), p2.clone());
            async move {
                let rename = vec![(
                    "bench-recorded-new".to_string(),
                    format!("bench-native-{w}-{i}"),
                )];
                replay(&n2, platform, &k2, &p2, &rename).await
            }
        })
        .await;
        delete_users(&native, platform, &app_key, "bench-native-").await;
        let c2 = conns.clone();
        let scim = drive(workers, args.duration, move |w, i| {
            let c2 = c2.clone();
            async move {
                let mut c = c2[w].lock().await;
                c.call(
                    Method::POST,
                    "/Users",
                    Some(new_user(&format!("bench-scim-{w}-{i}"))),
                )
                .await
                .0 == StatusCode::CREATED
            }
        })
        .await;
        delete_users(&native, platform, &app_key, "bench-scim-").await;
        print_row(name, calls(&plan), &scim, &direct);
    }

    // Membership: each worker adds and removes its own user, alternately.
    if args.runs("membership") {
        let add = plan_of("PATCH /Groups/{id} add member");
        let remove = plan_of("PATCH /Groups/{id} remove member");
        let (n2, k2, a2, r2) = (native.clone(), key.clone(), add.clone(), remove.clone());
        let direct = drive(workers, args.duration, move |w, i| {
            let (n2, k2) = (n2.clone(), k2.clone());
            let plan = if i % 2 == 0 { a2.clone() } else { r2.clone() };
            async move {
                let rename = vec![(user_name(0), user_name(w + 1))];
                replay(&n2, platform, &k2, &plan, &rename).await
            }
        })
        .await;
        let c2 = conns.clone();
        let gid = group_id.clone();
        let scim = drive(workers, args.duration, move |w, i| {
            let (c2, gid) = (c2.clone(), gid.clone());
            async move {
                let op = if i % 2 == 0 { "add" } else { "remove" };
                let mut c = c2[w].lock().await;
                c.call(
                    Method::PATCH,
                    &format!("/Groups/{gid}"),
                    Some(membership(op, &user_name(w + 1))),
                )
                .await
                .0 == StatusCode::OK
            }
        })
        .await;
        print_row(
            "PATCH /Groups/{id} members add|remove",
            (calls(&add) + calls(&remove)) / 2,
            &scim,
            &direct,
        );
    }
    println!(
        "  nc: native calls the operation needs; ratio: scim/s ÷ native/s (1.00 = no overhead)"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &measured_child.id().to_string()])
        .status();
    let _ = measured_child.wait();
    drop(dev);
}
