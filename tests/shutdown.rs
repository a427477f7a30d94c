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

// ---------------------------------------------------------------------------------------------
// shutdown.drain_deadline: what is still running at the deadline is cut
// ---------------------------------------------------------------------------------------------

/// The `drain deadline reached` warning, once the process has written it.
async fn deadline_line(gw: &Gateway) -> Json {
    gw.wait_log(Duration::from_secs(30), |j| {
        j.message().starts_with("drain deadline reached")
    })
    .await
    .unwrap_or_else(|| panic!("no drain-deadline line: {:?}", gw.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_drain_deadline_is_cut_and_the_process_exits_0() {
    let upstream = TestUpstream::start().await;
    // The upstream answers in ten minutes and request_timeout is an hour: only the deadline
    // can end this request.
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "request_timeout = \"1h\"\n",
        "[shutdown]\ndrain_deadline = \"1s\"\n",
    ))
    .await;
    let (addr, host) = (gw.gateway_addr, gw.host_header());
    let slow = tokio::spawn(async move { send_plain(addr, get(&host, "/slow?ms=600000")).await });
    assert!(
        upstream.wait_for("/slow", Duration::from_secs(20)).await,
        "the slow request never reached the upstream"
    );
    gw.signal("TERM");

    let status = gw
        .wait_exit(Duration::from_secs(120))
        .await
        .expect("the gateway did not exit: the drain deadline did not cut the slow request");
    assert!(status.success(), "exit status: {status}");
    let line = deadline_line(&gw).await;
    assert_eq!(
        line.str_field("open_connections").as_deref(),
        Some("1"),
        "{line:?}"
    );

    let answer = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the client still waits after the gateway exited")
        .unwrap();
    match answer {
        Err(_) => {}
        Ok(r) => panic!(
            "the cut request got a normal answer: {} {:?}",
            r.status,
            r.text()
        ),
    }
}

/// A minimal HTTP/2 client on raw frames, so the test sees exactly which frames the gateway
/// sends (hyper's client hides GOAWAY). It answers SETTINGS and PING as a client must.
struct RawH2 {
    out: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    frames: tokio::sync::mpsc::UnboundedReceiver<Frame>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

impl RawH2 {
    async fn connect(addr: std::net::SocketAddr) -> RawH2 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&hello).await.unwrap();
        let (out, mut to_send) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let (seen, frames) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = bytes::BytesMut::new();
            loop {
                tokio::select! {
                    next = to_send.recv() => match next {
                        Some(bytes) => if tcp.write_all(&bytes).await.is_err() { return },
                        None => return,
                    },
                    read = tcp.read_buf(&mut buf) => {
                        if !matches!(read, Ok(n) if n > 0) {
                            return; // EOF or reset: the channel closes.
                        }
                        while buf.len() >= 9 {
                            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                            if buf.len() < 9 + len {
                                break;
                            }
                            let head = buf.split_to(9);
                            let f = Frame {
                                kind: head[3],
                                flags: head[4],
                                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                                payload: buf.split_to(len).to_vec(),
                            };
                            let reply = match (f.kind, f.flags & ACK) {
                                (SETTINGS, 0) => Some(frame(SETTINGS, ACK, 0, &[])),
                                (PING, 0) => Some(frame(PING, ACK, 0, &f.payload)),
                                _ => None,
                            };
                            if let Some(reply) = reply {
                                if tcp.write_all(&reply).await.is_err() {
                                    return;
                                }
                            }
                            if seen.send(f).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        RawH2 { out, frames }
    }

    /// Opens stream `stream` with `GET path` (HPACK: indexed :method GET and :scheme http,
    /// literal :path and :authority).
    fn get(&self, stream: u32, authority: &str, path: &str) {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend([0x01, authority.len() as u8]);
        block.extend_from_slice(authority.as_bytes());
        // END_STREAM | END_HEADERS
        let _ = self.out.send(frame(HEADERS, 0x5, stream, &block));
    }

    /// The next frame, or `None` once the connection is closed.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(60), self.frames.recv())
            .await
            .expect("no HTTP/2 frame and no close within 60 s")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_goaway_on_sigterm_and_new_streams_are_not_served() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "request_timeout = \"1h\"\n",
        "[shutdown]\ndrain_deadline = \"4s\"\n",
    ))
    .await;
    let host = gw.host_header();
    let mut h2 = RawH2::connect(gw.gateway_addr).await;
    let mut frames = Vec::new();

    // Stream 1 is served (HTTP/2 with prior knowledge works here)...
    h2.get(1, &host, "/hello");
    loop {
        let f = h2
            .next()
            .await
            .expect("connection closed before stream 1's answer");
        let done = f.stream == 1 && f.flags & END_STREAM != 0;
        frames.push(f);
        if done {
            break;
        }
    }
    // ...stream 3 is in flight at the signal (the upstream answers in ten minutes).
    h2.get(3, &host, "/slow?ms=600000");
    assert!(
        upstream.wait_for("/slow", Duration::from_secs(20)).await,
        "the slow request never reached the upstream"
    );
    gw.signal("TERM");

    // GOAWAY arrives; hyper first announces it with the highest stream id, then, after a PING
    // round trip, with the last stream it will serve.
    let last_served = loop {
        let f = h2.next().await.expect("connection closed without a GOAWAY");
        let goaway = (f.kind == GOAWAY).then(|| {
            u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                & 0x7fff_ffff
        });
        frames.push(f);
        if let Some(last) = goaway.filter(|l| *l < 0x7fff_ffff) {
            break last;
        }
    };
    assert_eq!(last_served, 3, "GOAWAY's last stream: the in-flight one");

    // A stream opened after the GOAWAY is not served; the in-flight one is cut at the deadline.
    h2.get(5, &host, "/hello?after=goaway");
    while let Some(f) = h2.next().await {
        frames.push(f);
    }
    let status = gw
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the gateway did not exit");
    assert!(status.success(), "exit status: {status}");
    let line = deadline_line(&gw).await;
    assert_eq!(
        line.str_field("open_connections").as_deref(),
        Some("1"),
        "{line:?}"
    );

    let on = |stream: u32| {
        frames
            .iter()
            .filter(|f| f.stream == stream)
            .map(|f| (f.kind, f.flags))
            .collect::<Vec<_>>()
    };
    assert!(
        on(5).iter().all(|(kind, _)| *kind == RST_STREAM),
        "stream 5, opened after GOAWAY, got an answer: {:?}",
        on(5)
    );
    assert!(
        !upstream.uris().iter().any(|u| u.contains("after=goaway")),
        "a stream opened after GOAWAY reached the upstream"
    );
    assert!(
        !on(3)
            .iter()
            .any(|(kind, flags)| matches!(*kind, HEADERS | DATA) && flags & END_STREAM != 0),
        "the in-flight stream was answered in full, not cut: {:?}",
        on(3)
    );
}

/// Sends `text` over the tunnel and returns the echo.
async fn echo<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    text: &str,
) -> Result<String, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(text.into())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(m)) if m.is_ping() || m.is_pong() => continue,
            Some(Ok(m)) => return Err(format!("unexpected {m:?}").into()),
            Some(Err(e)) => return Err(BoxError::from(e)),
            None => return Err("closed".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_open_at_sigterm_works_while_draining_and_is_closed_at_the_deadline() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[shutdown]\ndrain_deadline = \"5s\"\n",
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.gateway_addr)
        .await
        .unwrap();
    let url = format!("ws://{}/ws", gw.gateway_addr);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(echo(&mut ws, "before").await.unwrap(), "before");

    gw.signal("TERM");
    gw.wait_log(Duration::from_secs(20), |j| {
        j.message().starts_with("draining")
    })
    .await
    .expect("no draining line after SIGTERM");
    // The drain leaves the tunnel alone until the deadline.
    assert_eq!(
        echo(&mut ws, "while draining")
            .await
            .expect("the tunnel broke at SIGTERM"),
        "while draining"
    );

    let status = gw
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the gateway did not exit: the open tunnel held it past the deadline");
    assert!(status.success(), "exit status: {status}");
    let line = deadline_line(&gw).await;
    assert_eq!(
        line.str_field("open_tunnels").as_deref(),
        Some("1"),
        "{line:?}"
    );
    // The gateway is gone, and the tunnel with it.
    let after = tokio::time::timeout(Duration::from_secs(20), echo(&mut ws, "after the deadline"))
        .await
        .expect("the tunnel neither answered nor closed after the gateway exited");
    assert!(
        after.is_err(),
        "the tunnel still echoes after the deadline: {after:?}"
    );
}
