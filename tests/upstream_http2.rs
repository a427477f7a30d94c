//! An https platform that offers HTTP/2 by ALPN is spoken to in HTTP/2 (the CA and client
//! certificate cases are in `proxy.rs`).

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// An https upstream (certificate for 127.0.0.1 signed by a fresh CA) that answers every request
/// with the HTTP version it arrived in. Returns its address and the CA's PEM.
async fn h2_upstream() -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(
            &server_key,
            &rcgen::Issuer::from_params(&ca_params, &ca_key),
        )
        .unwrap();

    let key = PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(full(version)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn https_upstream_is_reached_over_http2() {
    let (upstream, ca_pem) = h2_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &format!("https://127.0.0.1:{}", upstream.port()),
        &format!("ca_bundle = \"{}\"", ca.display()),
        "",
    ))
    .await;
    for _ in 0..3 {
        let resp = http_get(gw.gateway_addr, "/Thingworx/Things")
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.text(), "HTTP/2.0");
    }
}
