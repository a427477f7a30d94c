//! Graceful shutdown on SIGTERM and SIGINT: readiness goes 503, the gateway listener stops
//! taking connections, in-flight requests complete, the process exits 0.

mod common;

use common::*;
use std::time::{Duration, Instant};

async fn drain_on(signal: &str) {
    let upstream = TestUpstream::start().await;
    let toml = config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[shutdown]\ndrain_deadline = \"20s\"\n",
    );
    let gw = Gateway::start(&toml).await;
    let (addr, host) = (gw.gateway_addr, gw.host_header());

    let (ready, seen) = poll_status(gw.admin_addr, "/readyz", 200, Duration::from_secs(20)).await;
    assert!(ready, "/readyz never 200 with the upstream up: {seen:?}");

    // One request in flight...
    let slow = tokio::spawn({
        let host = host.clone();
        async move { send_plain(addr, get(&host, "/slow?ms=3000")).await }
    });
    assert!(
        upstream.wait_for("/slow", Duration::from_secs(20)).await,
        "the slow request never reached the upstream"
    );

    // ...when the signal comes.
    gw.signal(signal);

    // Readiness flips to 503 while draining.
    let (draining, seen) =
        poll_status(gw.admin_addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(
        draining,
        "/readyz never answered 503 during the drain after SIG{signal}: {seen:?}"
    );

    // New connections to the gateway listener are refused or closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = Vec::new();
    let refused = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(20),
            send_plain(addr, get(&host, "/hello")),
        )
        .await;
        match attempt {
            Ok(Err(_)) => break true,
            Ok(Ok(r)) => answers.push(format!(
                "{} came_from_upstream={}",
                r.status,
                r.came_from_upstream()
            )),
            Err(_) => answers.push("hung for 20 s".to_string()),
        }
        if slow.is_finished() || Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused,
        "new connections were still served during the drain after SIG{signal}: {answers:?}"
    );

    // The in-flight request completes.
    let r = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the in-flight request did not finish within 30 s")
        .unwrap()
        .unwrap_or_else(|e| panic!("the in-flight request failed during the drain: {e}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");

    // And the process exits cleanly.
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the gateway did not exit within 30 s of the signal");
    assert!(status.success(), "exit status after SIG{signal}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    drain_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_in_flight_requests_and_exits_0() {
    drain_on("INT").await;
}

#[tokio::test]
async fn idle_gateway_exits_0_on_sigterm() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", "")).await;
    // An idle keep-alive connection must not hold the shutdown until the drain deadline.
    let tcp = tokio::net::TcpStream::connect(gw.gateway_addr)
        .await
        .unwrap();
    let mut sender = h1_handshake(tcp).await.unwrap();
    let r = Resp::collect(
        sender
            .send_request(get(&gw.host_header(), "/hello"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the gateway did not exit within 30 s of SIGTERM");
    assert!(status.success(), "exit status: {status}");
}
