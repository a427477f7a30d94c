//! The development platform's native REST API spoken directly (raw HTTP with an app key), for
//! suites that judge the platform's state without trusting the crate's own platform client.

use super::dev_env::{DevEnv, DevEnvSpec};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;

pub struct Native {
    pub addr: SocketAddr,
    pub key: String,
}

impl Native {
    /// A call that must be answered: status, body as JSON (`Null` when it is not), body text.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        self.try_send(method.clone(), path, body, true)
            .await
            .unwrap_or_else(|e| panic!("native {method} {path}: {e}"))
    }

    /// A call that may go unanswered; `with_key` false sends no credentials.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        with_key: bool,
    ) -> Result<(u16, Value, String), hyper::Error> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if with_key {
            req = req.header("appKey", &self.key);
        }
        let req = req
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        ))
    }
}

/// The shared environment, with the platform read (and faulted) through raw native calls.
pub struct NativeEnv {
    base: DevEnv,
    pub tw: Native,
}

impl std::ops::Deref for NativeEnv {
    type Target = DevEnv;
    fn deref(&self) -> &DevEnv {
        &self.base
    }
}

impl NativeEnv {
    pub async fn start(spec: DevEnvSpec<'_>) -> NativeEnv {
        let base = DevEnv::start(spec).await;
        let tw = Native {
            addr: base.platform_addr,
            key: base.key.clone(),
        };
        NativeEnv { base, tw }
    }
}
