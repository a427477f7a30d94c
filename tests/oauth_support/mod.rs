//! Helpers for `tests/oauth.rs`: real signing keys and JWTs (aws-lc-rs), a JWKS server that
//! counts fetches and can rotate its keys or go down, and an RFC 7662 introspection endpoint.
#![allow(dead_code)]

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA512, RSA_PSS_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `base64url(header).base64url(claims)`: the JWS signing input.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// An unsigned token (`alg: none` style): the signature part is empty.
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!("{}.", signing_input(header, claims))
}

/// A token MACed with `secret` under HS256 whatever the header says.
pub fn hs256_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key with its `kid`.
pub struct SigningKey {
    pub kid: String,
    pair: Pair,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        SigningKey {
            kid: kid.to_string(),
            pair: Pair::Rsa(pair),
        }
    }

    pub fn ec(kid: &str) -> SigningKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        SigningKey {
            kid: kid.to_string(),
            pair: Pair::Ec(pair),
        }
    }

    /// The same key under another `kid`.
    pub fn public_jwk_with_kid(&self, kid: &str) -> Value {
        let mut jwk = self.public_jwk();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// The public JWK (no `alg`, as Entra ID publishes them, so RS256 and PS256 both apply).
    pub fn public_jwk(&self) -> Value {
        match &self.pair {
            Pair::Rsa(p) => {
                let pk = p.public_key();
                json!({
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "n": b64url(pk.modulus().big_endian_without_leading_zero()),
                    "e": b64url(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Pair::Ec(p) => {
                let point = p.public_key().as_ref();
                assert_eq!(point.len(), 65, "uncompressed P-256 point");
                json!({
                    "kty": "EC",
                    "use": "sig",
                    "crv": "P-256",
                    "kid": self.kid,
                    "x": b64url(&point[1..33]),
                    "y": b64url(&point[33..65]),
                })
            }
        }
    }

    /// X.509 SubjectPublicKeyInfo DER of the public key.
    pub fn spki_der(&self) -> Vec<u8> {
        let der: PublicKeyX509Der<'static> = match &self.pair {
            Pair::Rsa(p) => p.public_key().as_der().unwrap(),
            Pair::Ec(p) => p.public_key().as_der().unwrap(),
        };
        der.as_ref().to_vec()
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM of the public key, 64-column lines, final newline.
    pub fn spki_pem(&self) -> String {
        let b = b64(&self.spki_der());
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// RSA only: PKCS#1 `RSAPublicKey` DER.
    pub fn pkcs1_der(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(p) => p.public_key().as_ref().to_vec(),
            Pair::Ec(_) => panic!("not an RSA key"),
        }
    }

    /// RSA only: the modulus bytes.
    pub fn modulus(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(p) => p
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
            Pair::Ec(_) => panic!("not an RSA key"),
        }
    }

    /// Signs `input` under `alg` (RS256, RS512, PS256 for RSA keys; ES256 for EC keys).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.pair, alg) {
            (Pair::Rsa(p), "RS256" | "PS256" | "RS512") => {
                let mut sig = vec![0u8; p.public_modulus_len()];
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                    "RS256" => &RSA_PKCS1_SHA256,
                    "RS512" => &RSA_PKCS1_SHA512,
                    _ => &RSA_PSS_SHA256,
                };
                p.sign(padding, &rng, input, &mut sig).unwrap();
                sig
            }
            (Pair::Ec(p), "ES256") => p.sign(&rng, input).unwrap().as_ref().to_vec(),
            _ => panic!("cannot sign {alg} with this key"),
        }
    }

    /// A token whose header is exactly `header`, signed under `alg` with this key.
    pub fn token_with_header(&self, alg: &str, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let sig = self.sign(alg, input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// A token with header `{"alg", "typ":"JWT", "kid": this key's kid}`.
    pub fn token(&self, alg: &str, claims: &Value) -> String {
        self.token_kid(alg, &self.kid.clone(), claims)
    }

    /// A token signed with this key but naming `kid`.
    pub fn token_kid(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        self.token_with_header(alg, &header, claims)
    }
}

pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()})
}

// ---------------------------------------------------------------------------------------------
// A small HTTP server that can be shut down with its open connections
// ---------------------------------------------------------------------------------------------

/// What a test server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// `application/x-www-form-urlencoded` fields of the body.
    pub fn form(&self) -> HashMap<String, String> {
        let text = String::from_utf8_lossy(&self.body).replace('+', " ");
        text.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (dec(k), dec(v))
            })
            .collect()
    }
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

pub struct HttpServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    scheme: &'static str,
    tls_failures: Arc<AtomicUsize>,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr, handler: Handler) -> std::io::Result<HttpServer> {
        HttpServer::bind_with(addr, handler, None).await
    }

    /// Serves HTTPS with `tls` when given (counting failed handshakes), plain HTTP otherwise.
    pub async fn bind_with(
        addr: SocketAddr,
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<HttpServer> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls_failures = Arc::new(AtomicUsize::new(0));
        let failures = tls_failures.clone();
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stop_accept = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop_accept.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let handler = handler.clone();
                let stop_conn = stop_accept.clone();
                let tls = tls.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().map(str::to_string),
                                headers: parts.headers,
                                body,
                            };
                            let (status, text) = handler(&seen);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(text)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    tokio::select! {
                        _ = async {
                            match tls {
                                None => {
                                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                                }
                                Some(acceptor) => match acceptor.accept(stream).await {
                                    Ok(tls) => {
                                        let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                    }
                                    Err(_) => {
                                        failures.fetch_add(1, Ordering::SeqCst);
                                    }
                                },
                            }
                        } => {}
                        _ = stop_conn.cancelled() => {}
                    }
                });
            }
        });
        Ok(HttpServer {
            addr,
            stop,
            scheme,
            tls_failures,
        })
    }

    /// TLS handshakes that failed (HTTPS only).
    pub fn tls_failures(&self) -> usize {
        self.tls_failures.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// JWKS server
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct JwksState {
    body: Mutex<String>,
    fetches: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

/// Serves `/jwks.json` (and counts every request, whatever the path).
pub struct JwksServer {
    server: HttpServer,
    state: Arc<JwksState>,
}

impl JwksServer {
    pub async fn start(keys: Value) -> JwksServer {
        JwksServer::start_on("127.0.0.1:0".parse().unwrap(), keys)
            .await
            .unwrap()
    }

    pub async fn start_on(addr: SocketAddr, keys: Value) -> std::io::Result<JwksServer> {
        JwksServer::start_with(addr, keys, None).await
    }

    /// Over HTTPS with `tls` (see [`private_ca`]).
    pub async fn start_tls(keys: Value, tls: tokio_rustls::TlsAcceptor) -> JwksServer {
        JwksServer::start_with("127.0.0.1:0".parse().unwrap(), keys, Some(tls))
            .await
            .unwrap()
    }

    async fn start_with(
        addr: SocketAddr,
        keys: Value,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<JwksServer> {
        let state = Arc::new(JwksState::default());
        *state.body.lock().unwrap() = keys.to_string();
        let st = state.clone();
        let handler: Handler = Arc::new(move |seen: &Seen| {
            st.fetches.fetch_add(1, Ordering::SeqCst);
            st.requests
                .lock()
                .unwrap()
                .push(format!("{} {}", seen.method, seen.path));
            (200, st.body.lock().unwrap().clone())
        });
        let server = HttpServer::bind_with(addr, handler, tls).await?;
        Ok(JwksServer { server, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn url(&self) -> String {
        format!("{}://{}/jwks.json", self.server.scheme, self.server.addr)
    }

    pub fn tls_failures(&self) -> usize {
        self.server.tls_failures()
    }

    /// Replaces the key set served from now on.
    pub fn set_keys(&self, keys: Value) {
        *self.state.body.lock().unwrap() = keys.to_string();
    }

    /// Requests received so far (any path).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// Introspection endpoint
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct IntrospectionState {
    answers: Mutex<HashMap<String, Value>>,
    calls: Mutex<Vec<Seen>>,
}

/// An RFC 7662 endpoint at `/introspect`: answers per token (`{"active":false}` for unknown
/// ones) when the caller authenticates with HTTP Basic `client_id:client_secret`, else 401.
pub struct IntrospectionServer {
    server: HttpServer,
    state: Arc<IntrospectionState>,
}

impl IntrospectionServer {
    pub async fn start(client_id: &str, client_secret: &str) -> IntrospectionServer {
        IntrospectionServer::start_with(client_id, client_secret, None).await
    }

    /// Over HTTPS with `tls` (see [`private_ca`]).
    pub async fn start_tls(
        client_id: &str,
        client_secret: &str,
        tls: tokio_rustls::TlsAcceptor,
    ) -> IntrospectionServer {
        IntrospectionServer::start_with(client_id, client_secret, Some(tls)).await
    }

    async fn start_with(
        client_id: &str,
        client_secret: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> IntrospectionServer {
        let state = Arc::new(IntrospectionState::default());
        let st = state.clone();
        let expected = format!(
            "Basic {}",
            b64(format!("{client_id}:{client_secret}").as_bytes())
        );
        let handler: Handler = Arc::new(move |seen: &Seen| {
            st.calls.lock().unwrap().push(seen.clone());
            if seen.header("authorization").as_deref() != Some(expected.as_str()) {
                return (401, r#"{"error":"invalid_client"}"#.to_string());
            }
            let token = seen.form().get("token").cloned().unwrap_or_default();
            let answer = st
                .answers
                .lock()
                .unwrap()
                .get(&token)
                .cloned()
                .unwrap_or_else(|| json!({"active": false}));
            (200, answer.to_string())
        });
        let server = HttpServer::bind_with("127.0.0.1:0".parse().unwrap(), handler, tls)
            .await
            .unwrap();
        IntrospectionServer { server, state }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/introspect", self.server.scheme, self.server.addr)
    }

    pub fn tls_failures(&self) -> usize {
        self.server.tls_failures()
    }

    pub fn answer(&self, token: &str, response: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_string(), response);
    }

    pub fn calls(&self) -> Vec<Seen> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls that asked about `token`.
    pub fn calls_for(&self, token: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.form().get("token").map(String::as_str) == Some(token))
            .count()
    }

    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// A private CA
// ---------------------------------------------------------------------------------------------

/// A fresh CA (returned as PEM, for `auth.ca_bundle`) and a TLS acceptor serving a certificate
/// it signed for 127.0.0.1 — an IdP no system trust store knows.
pub fn private_ca() -> (String, tokio_rustls::TlsAcceptor) {
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
    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![server.der().clone()], key)
    .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
