//! A reload happens once per change: the counters on `/metrics` rise by exactly one per new
//! content (configuration or certificate), whatever the burst of file events, and stay put over
//! several seconds when a file is read, touched, rewritten with the same bytes, or SIGHUP comes
//! with nothing changed.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

const RELOADS_OK: &str = "scimgate_reloads_total{result=\"ok\"}";
const CERT_RELOADS_OK: &str = "scimgate_certificate_reloads_total{result=\"ok\"}";

fn config(upstream: &str, token: &str, extra: &str) -> String {
    config_toml(
        &plain_listener(),
        upstream,
        "",
        &format!("[scim]\nbearer_token = \"{token}\"\n{extra}"),
    )
}

async fn counter(gw: &Gateway, series: &str) -> u64 {
    let metrics = http_get(gw.admin_addr, "/metrics").await.unwrap().text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 20 s) for `series` to reach `want`.
async fn wait_counter(gw: &Gateway, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = counter(gw, series).await;
        if got >= want {
            assert_eq!(got, want, "{series} overshot\n{}", gw.logs().join("\n"));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {got}, wanted {want}\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `series` every 400 ms for about 4 s: it must be `want` every time.
async fn stays(gw: &Gateway, series: &str, want: u64) {
    for _ in 0..10 {
        let got = counter(gw, series).await;
        assert_eq!(
            got,
            want,
            "{series} moved to {got}\n{}",
            gw.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn log_lines(gw: &Gateway, message: &str) -> usize {
    gw.json_logs()
        .iter()
        .filter(|j| j.str_field("message").as_deref() == Some(message))
        .count()
}

async fn scim_status(gw: &Gateway, token: &str) -> u16 {
    let mut req = get(&gw.host_header(), "/Thingworx/SCIMProvider/SCIM/Users");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    send_plain(gw.gateway_addr, req)
        .await
        .unwrap()
        .status
        .as_u16()
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn one_edit_is_one_reload_and_the_counter_then_stays() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A, "")).await;
    assert_eq!(counter(&gw, RELOADS_OK).await, 0);

    replace(&gw.config_path, &config(&upstream.url(), TOKEN_B, ""));
    wait_counter(&gw, RELOADS_OK, 1).await;
    stays(&gw, RELOADS_OK, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);
    assert_eq!(scim_status(&gw, TOKEN_A).await, 401);
    assert_eq!(log_lines(&gw, "configuration reloaded"), 1);
    // The reload's own read of the file must not wake the watcher again.
    assert_eq!(
        log_lines(&gw, "configuration unchanged; nothing reloaded"),
        0
    );
}

#[tokio::test]
async fn reading_touching_or_rewriting_the_same_bytes_is_no_reload() {
    let upstream = TestUpstream::start().await;
    let text = config(&upstream.url(), TOKEN_A, "");
    let gw = Gateway::start(&text).await;

    for _ in 0..5 {
        let read = std::fs::read_to_string(&gw.config_path).unwrap();
        assert_eq!(read, text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stays(&gw, RELOADS_OK, 0).await;
    // Reads wake nothing at all; not even a comparison is logged.
    assert_eq!(
        log_lines(&gw, "configuration unchanged; nothing reloaded"),
        0
    );

    let touched = std::process::Command::new("touch")
        .arg(&gw.config_path)
        .status()
        .unwrap();
    assert!(touched.success());
    std::fs::write(&gw.config_path, &text).unwrap();
    replace(&gw.config_path, &text);
    stays(&gw, RELOADS_OK, 0).await;
    assert_eq!(log_lines(&gw, "configuration reloaded"), 0);
    assert_eq!(
        counter(&gw, "scimgate_reloads_total{result=\"failed\"}").await,
        0
    );
    assert_eq!(
        counter(&gw, "scimgate_reloads_total{result=\"refused\"}").await,
        0
    );
}

#[tokio::test]
async fn sighup_applies_a_change_once_and_nothing_when_nothing_changed() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A, "")).await;

    gw.signal("HUP");
    assert!(gw
        .wait_log(Duration::from_secs(20), |j| j.message()
            == "configuration unchanged; nothing reloaded")
        .await
        .is_some());
    stays(&gw, RELOADS_OK, 0).await;

    // The watcher and the signal both see this change; it is applied once.
    replace(&gw.config_path, &config(&upstream.url(), TOKEN_B, ""));
    gw.signal("HUP");
    wait_counter(&gw, RELOADS_OK, 1).await;
    stays(&gw, RELOADS_OK, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);

    gw.signal("HUP");
    stays(&gw, RELOADS_OK, 1).await;
}

#[tokio::test]
async fn without_the_watcher_only_sighup_reloads_and_once() {
    let upstream = TestUpstream::start().await;
    let no_watch = "\n[reload]\nwatch = false\n";
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A, no_watch)).await;

    replace(&gw.config_path, &config(&upstream.url(), TOKEN_B, no_watch));
    stays(&gw, RELOADS_OK, 0).await;
    assert_eq!(scim_status(&gw, TOKEN_A).await, 503);

    gw.signal("HUP");
    wait_counter(&gw, RELOADS_OK, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);
    gw.signal("HUP");
    stays(&gw, RELOADS_OK, 1).await;
}

#[tokio::test]
async fn a_burst_of_writes_is_one_reload_of_the_last_content() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A, "")).await;

    // Written in place, as some editors do, each one different, the last one B.
    let tokens = [
        "cccccccccccccccccccccccccccccccc",
        "dddddddddddddddddddddddddddddddd",
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        "ffffffffffffffffffffffffffffffff",
        TOKEN_B,
    ];
    for token in tokens {
        std::fs::write(&gw.config_path, config(&upstream.url(), token, "")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_counter(&gw, RELOADS_OK, 1).await;
    stays(&gw, RELOADS_OK, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);
    assert_eq!(scim_status(&gw, tokens[0]).await, 401);
}

/// What the kubelet does to a mounted ConfigMap: new timestamped directory, `..data` swapped
/// atomically, old directory removed. Each step is a separate burst here (a kubelet under load
/// can be that slow), so only the content comparison keeps it to one reload.
async fn swap_data(dir: &Path, new_version: &str, old_version: &str, text: &str) {
    let pause = Duration::from_millis(700);
    std::fs::create_dir(dir.join(new_version)).unwrap();
    std::fs::write(dir.join(new_version).join("scimgate.toml"), text).unwrap();
    tokio::time::sleep(pause).await;
    symlink(new_version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    tokio::time::sleep(pause).await;
    std::fs::remove_dir_all(dir.join(old_version)).unwrap();
}

#[tokio::test]
async fn a_kubernetes_configmap_swap_is_one_reload() {
    let upstream = TestUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("..2026_a")).unwrap();
    std::fs::write(dir.join("..2026_a/scimgate.toml"), "").unwrap();
    symlink("..2026_a", dir.join("..data")).unwrap();
    symlink("..data/scimgate.toml", dir.join("scimgate.toml")).unwrap();
    // Writes through the symlinks into ..2026_a.
    let gw = Gateway::start_in(dir, &config(&upstream.url(), TOKEN_A, "")).await;

    let b = config(&upstream.url(), TOKEN_B, "");
    swap_data(dir, "..2026_b", "..2026_a", &b).await;
    wait_counter(&gw, RELOADS_OK, 1).await;
    stays(&gw, RELOADS_OK, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);
}

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn new_pair() -> Pair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().to_vec(),
    }
}

async fn served_leaf(gw: &Gateway) -> Option<Vec<u8>> {
    tls_probe(gw.gateway_addr, "localhost", &[b"http/1.1"])
        .await
        .ok()
        .map(|i| i.leaf_der)
}

#[tokio::test]
async fn a_replaced_certificate_is_one_certificate_reload() {
    let upstream = TestUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    let a = new_pair();
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let gw = Gateway::start_in(
        tmp.path(),
        &config_toml(&file_tls_listener(&cert, &key), &upstream.url(), "", ""),
    )
    .await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&a.der[..]));

    // Reading the files, rewriting the same bytes and SIGHUP change nothing.
    for _ in 0..3 {
        std::fs::read(&cert).unwrap();
        std::fs::read(&key).unwrap();
    }
    std::fs::write(&cert, &a.cert_pem).unwrap();
    gw.signal("HUP");
    stays(&gw, CERT_RELOADS_OK, 0).await;

    // Cert and key written in place one after the other: one reload, to the new pair.
    let b = new_pair();
    std::fs::write(&cert, &b.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    wait_counter(&gw, CERT_RELOADS_OK, 1).await;
    stays(&gw, CERT_RELOADS_OK, 1).await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&b.der[..]));
    assert_eq!(log_lines(&gw, "reloaded TLS certificate"), 1);
    assert_eq!(
        counter(&gw, "scimgate_certificate_reloads_total{result=\"failed\"}").await,
        0
    );
    gw.signal("HUP");
    stays(&gw, CERT_RELOADS_OK, 1).await;
}

#[tokio::test]
async fn a_bad_file_is_refused_once_however_often_it_is_looked_at() {
    const REFUSED: &str = "scimgate_reloads_total{result=\"refused\"}";
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A, "")).await;

    let bad = "[limits]\nbogus = 1\n";
    replace(&gw.config_path, bad);
    wait_counter(&gw, REFUSED, 1).await;
    std::fs::write(&gw.config_path, bad).unwrap();
    gw.signal("HUP");
    stays(&gw, REFUSED, 1).await;
    assert_eq!(scim_status(&gw, TOKEN_A).await, 503);

    replace(&gw.config_path, &config(&upstream.url(), TOKEN_B, ""));
    wait_counter(&gw, RELOADS_OK, 1).await;
    stays(&gw, RELOADS_OK, 1).await;
    assert_eq!(counter(&gw, REFUSED).await, 1);
}

/// SIGHUP alone reloads the certificate: with the watcher off, a replaced pair is not served
/// until the signal, and is served after it. A connection opened before the swap keeps the
/// certificate it was made with and goes on serving requests; new ones get the new certificate.
#[tokio::test]
async fn without_the_watcher_sighup_alone_swaps_the_certificate_and_open_connections_keep_theirs() {
    let upstream = TestUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    let a = new_pair();
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let gw = Gateway::start_in(
        tmp.path(),
        &config_toml(
            &file_tls_listener(&cert, &key),
            &upstream.url(),
            "",
            "[reload]\nwatch = false\n",
        ),
    )
    .await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&a.der[..]));

    // A keep-alive connection made with the old certificate.
    let stream = tls_connect(
        gw.gateway_addr,
        "localhost",
        client_config(a.cert_pem.as_bytes(), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls_info(&stream).leaf_der, a.der);
    let mut open = h1_handshake(stream).await.unwrap();
    let r = Resp::collect(open.send_request(get("localhost", "/hello")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let b = new_pair();
    std::fs::write(&cert, &b.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    // Nothing watches the files: the old pair is served until the signal.
    stays(&gw, CERT_RELOADS_OK, 0).await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&a.der[..]));

    gw.signal("HUP");
    wait_counter(&gw, CERT_RELOADS_OK, 1).await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&b.der[..]));

    // The connection made before the swap still works, on its own certificate.
    open.ready().await.unwrap();
    let r = Resp::collect(open.send_request(get("localhost", "/hello")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "the open connection was not kept across the swap"
    );
}
