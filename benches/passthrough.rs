//! Pass-through benchmark: prints figures, asserts nothing about speed.
//!
//!   cargo bench --bench passthrough
//!
//! Starts the release `scimgate` binary (plain listener) in front of the test upstream and
//! measures: streaming throughput and the gateway's peak memory for large bodies both ways, and
//! small-request throughput and latency over keep-alive connections, directly against the
//! upstream and through the gateway, so the gateway's own cost is the difference.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use http::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const STREAM_MIB: u64 = 256;
const SMALL_REQUESTS: usize = 20_000;
const CONNECTIONS: usize = 32;

#[tokio::main]
async fn main() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "request_timeout = \"60s\"",
        "",
    ))
    .await;
    let upstream_addr: SocketAddr = upstream
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("upstream address");
    // Let the process settle before the memory baseline.
    for _ in 0..10 {
        let _ = http_get(gw.gateway_addr, "/hello").await;
    }
    let (baseline_kib, _) = rss_kib(gw.pid);
    println!(
        "gateway RSS at rest: {:.1} MiB",
        baseline_kib as f64 / 1024.0
    );

    let total = STREAM_MIB * MIB;
    let started = Instant::now();
    let resp = send_plain(
        gw.gateway_addr,
        request(
            Method::POST,
            &gw.gateway_addr.to_string(),
            "/sink",
            data_body(total),
        ),
    )
    .await
    .expect("upload");
    assert_eq!(resp.text().trim(), total.to_string(), "upload incomplete");
    report_stream(
        "upload   (client → gateway → upstream)",
        total,
        started.elapsed(),
    );

    let started = Instant::now();
    let resp = http_get(gw.gateway_addr, &format!("/source?bytes={total}"))
        .await
        .expect("download");
    assert_eq!(resp.body.len() as u64, total, "download incomplete");
    report_stream(
        "download (upstream → gateway → client)",
        total,
        started.elapsed(),
    );
    drop(resp);

    let (_, peak_kib) = rss_kib(gw.pid);
    println!(
        "gateway peak RSS after {STREAM_MIB} MiB each way: {:.1} MiB (+{:.1} MiB over rest)",
        peak_kib as f64 / 1024.0,
        peak_kib.saturating_sub(baseline_kib) as f64 / 1024.0
    );

    let direct = small_requests(upstream_addr).await;
    report_small("direct to upstream", &direct);
    let through = small_requests(gw.gateway_addr).await;
    report_small("through the gateway", &through);
    let added_p50 =
        percentile(&through.latencies, 50.0).saturating_sub(percentile(&direct.latencies, 50.0));
    println!(
        "gateway's added median latency: {} µs",
        added_p50.as_micros()
    );
}

fn report_stream(label: &str, bytes: u64, took: Duration) {
    println!(
        "{label}: {} MiB in {:.2} s = {:.0} MiB/s",
        bytes / MIB,
        took.as_secs_f64(),
        (bytes / MIB) as f64 / took.as_secs_f64()
    );
}

struct SmallRun {
    took: Duration,
    latencies: Vec<Duration>,
}

/// `SMALL_REQUESTS` GETs of /hello over `CONNECTIONS` keep-alive HTTP/1.1 connections.
async fn small_requests(addr: SocketAddr) -> SmallRun {
    let per_connection = SMALL_REQUESTS / CONNECTIONS;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut sender = h1_handshake(tcp).await.expect("handshake");
            let mut latencies = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let t = Instant::now();
                let resp = sender
                    .send_request(get(&addr.to_string(), "/hello"))
                    .await
                    .expect("request");
                let resp = Resp::collect(resp).await.expect("body");
                assert_eq!(resp.status, 200);
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    latencies.sort();
    SmallRun {
        took: started.elapsed(),
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

fn report_small(label: &str, run: &SmallRun) {
    println!(
        "{label}: {} requests on {CONNECTIONS} connections in {:.2} s = {:.0} req/s; p50 {} µs, p99 {} µs",
        run.latencies.len(),
        run.took.as_secs_f64(),
        run.latencies.len() as f64 / run.took.as_secs_f64(),
        percentile(&run.latencies, 50.0).as_micros(),
        percentile(&run.latencies, 99.0).as_micros()
    );
}
