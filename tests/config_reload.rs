//! Whole-configuration reload: on SIGHUP and on a change of the file, validated first, swapped
//! atomically (no request fails while it happens), and refused whole when the file is bad.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn config(upstream: &str, token: &str) -> String {
    config_toml(
        &plain_listener(),
        upstream,
        "",
        &format!("[scim]\nbearer_token = \"{token}\"\n"),
    )
}

/// The SCIM status for a token: 503 (accepted; no platform configured) or 401 (refused).
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

async fn wait_for_status(gw: &Gateway, token: &str, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if scim_status(gw, token).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn sighup_swaps_the_configuration_under_load_and_a_bad_file_changes_nothing() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A)).await;
    assert_eq!(scim_status(&gw, TOKEN_A).await, 503);

    // Load through the reload: every pass-through request must succeed.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (failures, done, stop) = (failures.clone(), done.clone(), stop.clone());
        let addr = gw.gateway_addr;
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match http_get(addr, "/hello").await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    std::fs::write(&gw.config_path, config(&upstream.url(), TOKEN_B)).unwrap();
    gw.signal("HUP");
    assert!(wait_for_status(&gw, TOKEN_B, 503).await, "{:?}", gw.logs());
    assert_eq!(scim_status(&gw, TOKEN_A).await, 401);

    // A broken file: refused whole, the running configuration stays.
    std::fs::write(&gw.config_path, "[limits]\nbogus = 1\n").unwrap();
    gw.signal("HUP");
    let refused = gw
        .wait_log(Duration::from_secs(20), |j| {
            j.str_field("message")
                .is_some_and(|m| m.contains("configuration reload refused"))
        })
        .await;
    assert!(refused.is_some(), "{:?}", gw.logs());
    assert_eq!(scim_status(&gw, TOKEN_B).await, 503);

    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert!(done.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );

    // The file watcher may see the same edits the signal announced: at least one of each.
    let metrics = http_get(gw.admin_addr, "/metrics").await.unwrap().text();
    let count = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("scimgate_reloads_total{result=\"ok\"}") >= 1,
        "{metrics}"
    );
    assert!(
        count("scimgate_reloads_total{result=\"refused\"}") >= 1,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config(&upstream.url(), TOKEN_A)).await;
    assert_eq!(scim_status(&gw, TOKEN_A).await, 503);
    write_atomically(&gw.config_path, &config(&upstream.url(), TOKEN_B));
    assert!(wait_for_status(&gw, TOKEN_B, 503).await, "{:?}", gw.logs());
    assert_eq!(scim_status(&gw, TOKEN_A).await, 401);
}
