//! Development platform write cost against its size: prints figures, asserts nothing.
//!
//!   cargo bench --bench devplatform_writes [-- --sizes 1000,20000 --creates 1000 --connections 4]
//!
//! Starts the development platform in this process on a fresh data directory (under `TMPDIR`,
//! so on the disk that holds it: the figure includes each write's fsync), fills it with users
//! through the native API (`CreateUser` without a password, so no password hashing is timed)
//! up to each size, then times `--creates` more creates from `--connections` connections and
//! prints creates per second and the median and 99th-percentile latency at that size, with the
//! sizes of the snapshot and the journal and the process's resident memory.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use http::Method;
use scimgate::dev::platform::DevPlatform;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

async fn create(addr: SocketAddr, key: &str, name: &str) -> Duration {
    let body = serde_json::json!({"name": name, "description": "bench"}).to_string();
    let mut req = request(
        Method::POST,
        &addr.to_string(),
        "/Thingworx/Resources/EntityServices/Services/CreateUser",
        full(body),
    );
    let h = req.headers_mut();
    h.insert("appKey", key.parse().expect("app key header"));
    h.insert("accept", "application/json".parse().expect("header"));
    h.insert("content-type", "application/json".parse().expect("header"));
    let started = Instant::now();
    let resp = send_plain(addr, req).await.expect("create answered");
    assert_eq!(resp.status, 200, "create {name}: {}", resp.text());
    started.elapsed()
}

/// `count` creates named `prefix-<n>` from `connections` concurrent workers; their latencies.
async fn creates(
    addr: SocketAddr,
    key: &str,
    prefix: &str,
    count: usize,
    connections: usize,
) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (next, key, prefix) = (next.clone(), key.to_string(), prefix.to_string());
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return times;
                }
                times.push(create(addr, &key, &format!("{prefix}-{i:06}")).await);
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all
}

fn size_of(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = arg(&args, "--sizes", "1000,20000")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let measured: usize = arg(&args, "--creates", "1000").parse().unwrap_or(1000);
    let connections: usize = arg(&args, "--connections", "4").parse().unwrap_or(4);

    let dir = tempfile::tempdir().expect("temp dir");
    let platform = DevPlatform::open(dir.path()).expect("platform");
    let key = platform
        .ensure_app_key("bench", "Administrator")
        .expect("app key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    tokio::spawn(platform.serve(listener, stop.clone()));
    println!(
        "development platform writes: data in {}, {connections} connections, {measured} creates timed per size",
        dir.path().display()
    );

    let mut users = 0;
    for size in sizes {
        if size > users {
            creates(addr, &key, &format!("fill{size}"), size - users, 8).await;
            users = size;
        }
        let started = Instant::now();
        let mut times = creates(addr, &key, &format!("timed{size}"), measured, connections).await;
        let elapsed = started.elapsed();
        users += measured;
        times.sort();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        let (rss, _) = rss_kib(std::process::id());
        println!(
            "  at {size:>6} users: {:>7.0} creates/s, p50 {:>6.2} ms, p99 {:>6.2} ms; snapshot {} KiB, journal {} KiB, RSS {} MiB",
            measured as f64 / elapsed.as_secs_f64(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            size_of(&dir.path().join("state.json")) / 1024,
            size_of(&dir.path().join("state.journal")) / 1024,
            rss / 1024,
        );
    }
    stop.cancel();
}
