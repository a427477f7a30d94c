//! A raw HTTP/1.1 platform that answers each request head from a script: the test decides the
//! bytes sent back and whether the connection closes after them, so it can behave in ways no
//! well-behaved server library would (close without `Connection: close`, end a body by closing).
//! Used by the pass-through tests and, through `#[path]`, by the upstream pool's unit tests.
//! Request bodies are not read: the scripts are for requests without one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the platform does with one request.
pub struct Answer {
    /// Written as it is.
    pub bytes: String,
    /// Close the connection right after, without saying so.
    pub close: bool,
}

/// Starts the platform on an ephemeral loopback port. `script` gets each request's method and
/// target. Returns the address and a count of the connections accepted.
pub async fn scripted_platform<F>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(&str, &str) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 4096];
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).to_string();
                    seen.drain(..end + 4);
                    let mut request_line = head.split(' ');
                    let method = request_line.next().unwrap_or("");
                    let target = request_line.next().unwrap_or("/");
                    let answer = script(method, target);
                    if socket.write_all(answer.bytes.as_bytes()).await.is_err() || answer.close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}
