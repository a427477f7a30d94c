//! WebSocket upgrade through the gateway, to the upstream's echo endpoint.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no WebSocket message within 20 s")
            .expect("WebSocket closed")
            .expect("WebSocket error");
        if msg.is_ping() || msg.is_pong() {
            continue;
        }
        return msg;
    }
}

async fn echo_round_trips<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text("hello over the gateway".into()))
        .await
        .unwrap();
    assert_eq!(
        next_message(ws).await,
        Message::Text("hello over the gateway".into())
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::Binary(binary.clone())).await.unwrap();
    assert_eq!(next_message(ws).await, Message::Binary(binary));

    for i in 0..20 {
        ws.send(Message::Text(format!("msg {i}"))).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(next_message(ws).await, Message::Text(format!("msg {i}")));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_echo_over_plain_listener() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(&plain_listener(), &upstream.url(), "", "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.gateway_addr)
        .await
        .unwrap();
    let url = format!("ws://{}/ws", gw.gateway_addr);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo_round_trips(&mut ws).await;
    assert!(upstream.saw_path_prefix("/ws"));
}

#[tokio::test]
async fn websocket_echo_over_tls_listener() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &self_signed_listener("@DIR@"),
        &upstream.url(),
        "",
        "",
    ))
    .await;
    let cert = std::fs::read(gw.dir.join("cert.pem")).unwrap();
    let tls = tls_connect(
        gw.gateway_addr,
        "localhost",
        client_config(&cert, &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let url = format!("wss://localhost:{}/ws", gw.gateway_addr.port());
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    echo_round_trips(&mut ws).await;
}
