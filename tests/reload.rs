//! Certificate hot reload: Kubernetes-style `..data` symlink swap, a bad new certificate, and
//! SIGHUP after overwriting plain files.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

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

fn write_version(certs: &Path, version: &str, cert: &str, key: &str) {
    let dir = certs.join(version);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

/// What the kubelet does: point `..data` at a new timestamped dir atomically, drop the old one.
fn swap_data(certs: &Path, new_version: &str, old_version: &str) {
    symlink(new_version, certs.join("..data_tmp")).unwrap();
    std::fs::rename(certs.join("..data_tmp"), certs.join("..data")).unwrap();
    std::fs::remove_dir_all(certs.join(old_version)).unwrap();
}

async fn served_leaf(gw: &Gateway) -> Option<Vec<u8>> {
    tls_probe(gw.gateway_addr, "localhost", &[b"http/1.1"])
        .await
        .ok()
        .map(|i| i.leaf_der)
}

/// Polls new connections (up to 20 s) until the served leaf is `want`.
async fn wait_for_leaf(gw: &Gateway, want: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if served_leaf(gw).await.as_deref() == Some(want) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hello_trusting(gw: &Gateway, cert_pem: &str) -> Resp {
    send_tls(
        gw.gateway_addr,
        "localhost",
        client_config(cert_pem.as_bytes(), &[b"http/1.1"]),
        get("localhost", "/hello"),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn kubernetes_symlink_swap_reloads_and_a_bad_certificate_is_refused() {
    let upstream = TestUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();

    let a = new_pair();
    write_version(&certs, "..2026_a", &a.cert_pem, &a.key_pem);
    symlink("..2026_a", certs.join("..data")).unwrap();
    symlink("..data/tls.crt", certs.join("tls.crt")).unwrap();
    symlink("..data/tls.key", certs.join("tls.key")).unwrap();

    let listener = file_tls_listener(&certs.join("tls.crt"), &certs.join("tls.key"));
    let gw = Gateway::start_in(tmp.path(), &config_toml(&listener, &upstream.url(), "", "")).await;
    assert_eq!(
        served_leaf(&gw).await.as_deref(),
        Some(&a.der[..]),
        "initial cert is not A"
    );
    assert_eq!(hello_trusting(&gw, &a.cert_pem).await.status, 200);

    // Swap to B.
    let b = new_pair();
    write_version(&certs, "..2026_b", &b.cert_pem, &b.key_pem);
    swap_data(&certs, "..2026_b", "..2026_a");
    assert!(
        wait_for_leaf(&gw, &b.der).await,
        "new connections did not get cert B within 20 s"
    );
    assert!(gw.try_exit_status().is_none(), "the gateway exited");
    assert_eq!(hello_trusting(&gw, &b.cert_pem).await.status, 200);
    assert!(
        gw.wait_log(Duration::from_secs(20), |j| j.message()
            == "reloaded TLS certificate")
            .await
            .is_some(),
        "no 'reloaded TLS certificate' log line"
    );

    // Swap to garbage: refused, B stays.
    write_version(
        &certs,
        "..2026_c",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        &b.key_pem,
    );
    swap_data(&certs, "..2026_c", "..2026_b");
    let failure = gw
        .wait_log(Duration::from_secs(20), |j| {
            j.message() == "TLS certificate reload failed; keeping the current certificate"
        })
        .await
        .expect("no reload-failure log line after swapping in a garbage certificate");
    assert!(
        failure.get("error").is_some(),
        "failure line has no error field: {failure:?}"
    );
    for _ in 0..3 {
        assert_eq!(
            served_leaf(&gw).await.as_deref(),
            Some(&b.der[..]),
            "after a bad reload the last good cert (B) is not served"
        );
    }
    assert_eq!(hello_trusting(&gw, &b.cert_pem).await.status, 200);

    // And a good one after the bad one is picked up again.
    let d = new_pair();
    write_version(&certs, "..2026_d", &d.cert_pem, &d.key_pem);
    swap_data(&certs, "..2026_d", "..2026_c");
    assert!(
        wait_for_leaf(&gw, &d.der).await,
        "cert D not picked up after a failed reload"
    );
}

#[tokio::test]
async fn sighup_reloads_overwritten_plain_files() {
    let upstream = TestUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("plain");
    std::fs::create_dir(&certs).unwrap();
    let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));

    let a = new_pair();
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let gw = Gateway::start_in(
        tmp.path(),
        &config_toml(&file_tls_listener(&cert, &key), &upstream.url(), "", ""),
    )
    .await;
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&a.der[..]));

    let b = new_pair();
    std::fs::write(&cert, &b.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    gw.signal("HUP");
    assert!(
        wait_for_leaf(&gw, &b.der).await,
        "cert B not served within 20 s of SIGHUP"
    );
    assert!(gw.try_exit_status().is_none(), "SIGHUP killed the gateway");
    assert_eq!(hello_trusting(&gw, &b.cert_pem).await.status, 200);

    // A second SIGHUP with nothing changed keeps serving B. Checked once the gateway has
    // finished handling it: the second configuration reload's line is out.
    gw.signal("HUP");
    let reloads = || {
        gw.json_logs()
            .iter()
            // "configuration reloaded", "configuration unchanged; nothing reloaded", or a
            // refusal: each SIGHUP ends in one of them.
            .filter(|j| j.message().starts_with("configuration"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reloads() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second SIGHUP was not handled: {:?}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        gw.try_exit_status().is_none(),
        "a second SIGHUP killed the gateway"
    );
    assert_eq!(served_leaf(&gw).await.as_deref(), Some(&b.der[..]));
}
