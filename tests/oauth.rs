//! OAuth for SCIM calls, end to end: the real gateway binary (plain HTTP listener) in front of the
//! in-process development platform, with tokens minted here with aws-lc-rs, a local JWKS server
//! and a local RFC 7662 introspection endpoint. The probe is `GET .../SCIM/Users`: 200 when the
//! credentials are accepted, a SCIM 1.1 error otherwise.

mod common;

use common::dev_env::ServedPlatform;
mod oauth_support;

use common::{config_toml, plain_listener, poll_status, Gateway, Resp};
use oauth_support::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERS: &str = "/Thingworx/SCIMProvider/SCIM/Users";
const ISS: &str = "https://idp.test/";
const AUD: &str = "api://scimgate";
const SCOPE: &str = "SCIM.Provision";
/// Keeps the failure throttle out of the way of tests that are not about it.
const NO_THROTTLE: &str = "max_failures_per_minute = 1000\n";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The development platform with the gateway in front of it.
struct Env {
    gw: Gateway,
    _platform: ServedPlatform,
    /// Every credential sent, to check none of them reaches the logs.
    secrets: Mutex<Vec<String>>,
    /// Requests sent to the gateway listener: each has an access line once it is logged.
    calls: std::sync::atomic::AtomicUsize,
}

/// `extra`: the `[scim]`/`[auth]` tables (appended after `[platform]`).
async fn start_env(extra: &str) -> Env {
    start_env_with(extra, &[]).await
}

async fn start_env_with(extra: &str, env: &[(&str, &str)]) -> Env {
    let platform = ServedPlatform::start().await;
    let extra = format!("[platform]\napp_key = \"{}\"\n\n{extra}\n", platform.key);
    let toml = config_toml(&plain_listener(), &platform.url(), "", &extra);
    let gw = Gateway::start_with_env(&toml, env).await;
    Env {
        gw,
        _platform: platform,
        secrets: Mutex::new(Vec::new()),
        calls: std::sync::atomic::AtomicUsize::new(0),
    }
}

/// The access lines among `logs`, in order.
fn access_lines(logs: &[common::Json]) -> Vec<&common::Json> {
    logs.iter()
        .filter(|j| j.message() == "access" && j.str_field("status").is_some())
        .collect()
}

/// `[auth]` with its plain keys, then one `[[auth.jwt]]` provider trusting `jwks_url`.
fn jwt_config(jwks_url: &str, provider_extra: &str) -> String {
    jwt_config_with("", jwks_url, "60s", provider_extra)
}

/// The same with more `[auth]` keys (`auth_extra`) and another `leeway`.
fn jwt_config_with(auth_extra: &str, jwks_url: &str, leeway: &str, provider_extra: &str) -> String {
    format!(
        "[auth]\n{NO_THROTTLE}{auth_extra}\n[[auth.jwt]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\n\
         jwks_url = \"{jwks_url}\"\nalgorithms = [\"RS256\", \"PS256\", \"ES256\"]\n\
         leeway = \"{leeway}\"\nrequired_claims = {{ tid = \"tenant-1\" }}\n\
         admin_scopes = [\"{SCOPE}\"]\n{provider_extra}\n"
    )
}

impl Env {
    /// Remembers a credential so that the log check looks for it.
    fn secret(&self, s: &str) {
        if s.len() >= 8 {
            self.secrets.lock().unwrap().push(s.to_string());
        }
    }

    /// `GET path` with exactly this `Authorization` header (or none).
    async fn call(&self, path: &str, authorization: Option<&str>) -> Resp {
        let mut req = common::get(&self.gw.host_header(), path);
        req.headers_mut()
            .insert("accept", "application/json".parse().unwrap());
        if let Some(a) = authorization {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
            let credential = a.split_once(' ').map(|(_, c)| c).unwrap_or(a).trim();
            self.secret(credential);
            if let Some(b) = a.strip_prefix("Basic ") {
                if let Ok(plain) =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim())
                {
                    let plain = String::from_utf8_lossy(&plain).into_owned();
                    if let Some((_, password)) = plain.split_once(':') {
                        self.secret(password);
                    }
                }
            }
            // A JWT's signature alone must not show up either.
            if let Some(sig) = credential.rsplit('.').next() {
                if credential.matches('.').count() == 2 && sig.len() >= 16 {
                    self.secret(sig);
                }
            }
        }
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match tokio::time::timeout(
            Duration::from_secs(60),
            common::send_plain(self.gw.gateway_addr, req),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("GET {path}: {e}"),
            Err(_) => panic!("GET {path}: no answer within 60 s"),
        }
    }

    async fn bearer(&self, token: &str) -> Resp {
        self.call(USERS, Some(&format!("Bearer {token}"))).await
    }

    async fn basic(&self, user: &str, password: &str) -> Resp {
        let b = b64(format!("{user}:{password}").as_bytes());
        self.call(USERS, Some(&format!("Basic {b}"))).await
    }

    /// Waits until `/readyz` is 200 (JWKS loaded, platform reached).
    async fn ready(&self) {
        let (ok, seen) =
            poll_status(self.gw.admin_addr, "/readyz", 200, Duration::from_secs(30)).await;
        let body = readyz(self.gw.admin_addr).await.1;
        assert!(
            ok,
            "/readyz never 200 with the JWKS server up: {seen:?}, last body {body}"
        );
    }

    /// Records a finding for every remembered credential present in the gateway's output.
    async fn check_logs(&self, f: &mut Findings) {
        // Look only once every request's access line is out: the lines logged while handling a
        // request (refusal reasons included) are written before it, so none can arrive later.
        let calls = self.calls.load(std::sync::atomic::Ordering::SeqCst);
        let logged = self
            .gw
            .wait_log(Duration::from_secs(30), |_| {
                access_lines(&self.gw.json_logs()).len() >= calls
            })
            .await;
        if logged.is_none() {
            f.add(format!(
                "{calls} requests sent but only {} access lines written",
                access_lines(&self.gw.json_logs()).len()
            ));
        }
        let output = self.gw.all_output();
        for s in self.secrets.lock().unwrap().iter() {
            if let Some(line) = output.iter().find(|l| l.contains(s.as_str())) {
                f.add(format!(
                    "credential {:?}… appears in the gateway's output: {line}",
                    &s[..s.len().min(24)]
                ));
            }
        }
    }
}

async fn readyz(admin: SocketAddr) -> (u16, String) {
    match common::http_get(admin, "/readyz").await {
        Ok(r) => (r.status.as_u16(), r.text()),
        Err(e) => (0, format!("error: {e}")),
    }
}

/// What the WWW-Authenticate challenge must say.
#[derive(Clone, Copy)]
enum Challenge {
    /// `Bearer realm="scimgate"` with no `error=`.
    Bare,
    /// `error="<this>"`.
    Error(&'static str),
    /// `Bearer realm="scimgate"`, any error (or none).
    Any,
}

/// Every deviation found, reported together at the end of a test.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn add(&mut self, s: String) {
        self.0.push(s);
    }

    fn check(&mut self, ok: bool, s: impl FnOnce() -> String) {
        if !ok {
            self.0.push(s());
        }
    }

    /// A 200 listing.
    fn accepted(&mut self, what: &str, r: &Resp) {
        if r.status != 200 {
            self.add(format!(
                "{what}: expected 200, got {} {} (www-authenticate {:?})",
                r.status,
                r.text(),
                r.header("www-authenticate")
            ));
            return;
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        self.check(body.get("totalResults").is_some(), || {
            format!("{what}: 200 but not a SCIM listing: {}", r.text())
        });
    }

    /// A refusal: `status`, the challenge (401/403), and the SCIM 1.1 error shape.
    fn refused(&mut self, what: &str, r: &Resp, status: u16, challenge: Challenge) {
        if r.status.as_u16() != status {
            self.add(format!(
                "{what}: expected {status}, got {} {} (www-authenticate {:?})",
                r.status,
                r.text(),
                r.header("www-authenticate")
            ));
            return;
        }
        if status == 401 || status == 403 {
            let challenges: Vec<String> = r
                .headers
                .get_all("www-authenticate")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let bearer = challenges
                .iter()
                .find(|c| c.starts_with("Bearer realm=\"scimgate\""));
            match (bearer, challenge) {
                (None, _) => self.add(format!(
                    "{what}: {status} without a `Bearer realm=\"scimgate\"` challenge: {challenges:?}"
                )),
                (Some(c), Challenge::Bare) => self.check(!c.contains("error="), || {
                    format!("{what}: challenge should carry no error: {c}")
                }),
                (Some(c), Challenge::Error(e)) => {
                    self.check(c.contains(&format!("error=\"{e}\"")), || {
                        format!("{what}: challenge should say error=\"{e}\": {c}")
                    })
                }
                (Some(_), Challenge::Any) => {}
            }
        }
        let ct = r.header("content-type").unwrap_or_default();
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let shaped = ct.starts_with("application/json")
            && body["Errors"][0]["code"] == json!(status.to_string())
            && body["Errors"][0]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty());
        self.check(shaped, || {
            format!(
                "{what}: not a SCIM 1.1 error (content-type {ct:?}): {}",
                r.text()
            )
        });
    }

    fn assert_none(self, gw: &Gateway) {
        if !self.0.is_empty() {
            let logs = gw.logs();
            let tail = &logs[logs.len().saturating_sub(40)..];
            panic!(
                "{} finding(s):\n- {}\n\nlast gateway log lines:\n{}",
                self.0.len(),
                self.0.join("\n- "),
                tail.join("\n")
            );
        }
    }
}

/// Claims a valid administrator token carries.
fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "entra-provisioning",
        "tid": "tenant-1",
        "scp": SCOPE,
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 600,
    })
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jwt_tokens_are_verified_and_every_forgery_is_refused() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    // The attacker: its own key, published under its own kid and under ours.
    let evil = SigningKey::rsa("evil-1");
    let attacker = JwksServer::start(json!({"keys": [
        evil.public_jwk(),
        evil.public_jwk_with_kid("rsa-1"),
    ]}))
    .await;
    let env = start_env(&jwt_config(
        &jwks_server.url(),
        "refresh_interval = \"1h\"\nmin_refetch_interval = \"1s\"\n",
    ))
    .await;
    env.ready().await;
    let mut f = Findings::default();

    let (status, body) = readyz(env.gw.admin_addr).await;
    f.check(body.contains("\"keys_loaded\":true"), || {
        format!("/readyz once the keys are loaded: {status} {body} (expected \"keys_loaded\":true)")
    });

    // Valid tokens.
    f.accepted("RS256", &env.bearer(&rsa.token("RS256", &claims())).await);
    f.accepted("PS256", &env.bearer(&rsa.token("PS256", &claims())).await);
    f.accepted("ES256", &env.bearer(&ec.token("ES256", &claims())).await);
    f.accepted(
        "aud as an array holding ours",
        &env.bearer(&rsa.token("RS256", &with(claims(), "aud", json!(["api://other", AUD]))))
            .await,
    );
    f.accepted(
        "admin role in `roles` instead of `scp`",
        &env.bearer(&rsa.token(
            "RS256",
            &with(without(claims(), "scp"), "roles", json!([SCOPE])),
        ))
        .await,
    );
    f.accepted(
        "issued now",
        &env.bearer(&rsa.token("RS256", &with(claims(), "iat", json!(now()))))
            .await,
    );
    f.accepted(
        "issued 30 s in the future, within the 60 s leeway",
        &env.bearer(&rsa.token("RS256", &with(claims(), "iat", json!(now() + 30))))
            .await,
    );
    f.accepted(
        "no iat",
        &env.bearer(&rsa.token("RS256", &without(claims(), "iat")))
            .await,
    );
    f.accepted(
        "expired 30 s ago, within the 60 s leeway",
        &env.bearer(&rsa.token("RS256", &with(claims(), "exp", json!(now() - 30))))
            .await,
    );

    // Unknown kid: refused after exactly one refetch. Wait past min_refetch_interval first so
    // that the start-up fetch cannot hold the refetch back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = jwks_server.fetches();
    let stranger = SigningKey::rsa("rsa-unknown");
    let r = env.bearer(&stranger.token("RS256", &claims())).await;
    f.refused("unknown kid", &r, 401, Challenge::Error("invalid_token"));
    let after = jwks_server.fetches();
    f.check(after == before + 1, || {
        format!("unknown kid: expected exactly one JWKS refetch, fetches went {before} -> {after}")
    });

    // Forgeries and invalid claims, each 401 invalid_token.
    let mut forged: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, token: String| forged.push((what.to_string(), token));
    for alg in ["none", "None", "NONE"] {
        add(
            &format!("alg {alg:?}, unsigned"),
            unsigned_token(
                &json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"}),
                &claims(),
            ),
        );
    }
    add(
        "alg none without kid, unsigned",
        unsigned_token(&json!({"alg": "none"}), &claims()),
    );
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    let pem = rsa.spki_pem();
    let confusion_secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", pem.clone().into_bytes()),
        (
            "SPKI PEM without final newline",
            pem.trim_end().as_bytes().to_vec(),
        ),
        ("SPKI DER", rsa.spki_der()),
        ("PKCS#1 DER", rsa.pkcs1_der()),
        ("modulus bytes", rsa.modulus()),
        ("JWK JSON", rsa.public_jwk().to_string().into_bytes()),
    ];
    for (name, secret) in &confusion_secrets {
        add(
            &format!("HS256 keyed with the RSA public key ({name})"),
            hs256_token(&hs_header, &claims(), secret),
        );
    }
    add(
        "wrong signature (other key, our kid)",
        evil.token_kid("RS256", "rsa-1", &claims()),
    );
    let good = rsa.token("RS256", &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_claims = with(claims(), "sub", json!("someone-else"));
    add(
        "payload changed after signing",
        format!(
            "{}.{}.{}",
            parts[0],
            b64url(tampered_claims.to_string().as_bytes()),
            parts[2]
        ),
    );
    add(
        "signature of another token",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            rsa.token("RS256", &with(claims(), "sub", json!("x")))
                .rsplit('.')
                .next()
                .unwrap()
        ),
    );
    add(
        "RS512 (not in the allow-list) with our key",
        rsa.token("RS512", &claims()),
    );
    add(
        "ES256 signature under a header claiming RS256",
        ec.token_with_header(
            "ES256",
            &json!({"alg": "RS256", "typ": "JWT", "kid": "ec-1"}),
            &claims(),
        ),
    );
    add(
        "RS256 header naming the EC key",
        rsa.token_kid("RS256", "ec-1", &claims()),
    );
    add(
        "expired 120 s ago (beyond the 60 s leeway)",
        rsa.token("RS256", &with(claims(), "exp", json!(now() - 120))),
    );
    add(
        "nbf 300 s in the future",
        rsa.token("RS256", &with(claims(), "nbf", json!(now() + 300))),
    );
    add(
        "iat 300 s in the future (beyond the 60 s leeway)",
        rsa.token("RS256", &with(claims(), "iat", json!(now() + 300))),
    );
    add(
        "iat a day in the future, with a matching exp",
        rsa.token(
            "RS256",
            &with(
                with(claims(), "iat", json!(now() + 86_400)),
                "exp",
                json!(now() + 90_000),
            ),
        ),
    );
    add(
        "iat as a string",
        rsa.token("RS256", &with(claims(), "iat", json!(now().to_string()))),
    );
    add(
        "wrong iss",
        rsa.token("RS256", &with(claims(), "iss", json!("https://evil.test/"))),
    );
    add("no iss", rsa.token("RS256", &without(claims(), "iss")));
    add(
        "wrong aud",
        rsa.token("RS256", &with(claims(), "aud", json!("api://other"))),
    );
    add(
        "aud array without ours",
        rsa.token(
            "RS256",
            &with(claims(), "aud", json!(["api://other", "api://third"])),
        ),
    );
    add("no aud", rsa.token("RS256", &without(claims(), "aud")));
    add("no exp", rsa.token("RS256", &without(claims(), "exp")));
    add(
        "exp as a string",
        rsa.token(
            "RS256",
            &with(claims(), "exp", json!((now() + 600).to_string())),
        ),
    );
    add(
        "required claim tid mismatch",
        rsa.token("RS256", &with(claims(), "tid", json!("tenant-2"))),
    );
    add(
        "required claim tid missing",
        rsa.token("RS256", &without(claims(), "tid")),
    );
    let attacker_url = attacker.url();
    for kid in [
        "../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "file:///etc/passwd".to_string(),
        attacker_url.clone(),
        "http://evil/".to_string(),
    ] {
        add(
            &format!("kid {kid:?} (attacker key)"),
            evil.token_kid("RS256", &kid, &claims()),
        );
    }
    for header_name in ["jku", "x5u"] {
        for kid in ["rsa-1", "evil-1"] {
            add(
                &format!("{header_name} pointing to the attacker JWKS, kid {kid}"),
                evil.token_with_header(
                    "RS256",
                    &json!({"alg": "RS256", "typ": "JWT", "kid": kid, header_name: attacker_url}),
                    &claims(),
                ),
            );
        }
    }
    for kid in ["rsa-1", "evil-1"] {
        add(
            &format!("embedded attacker jwk, kid {kid}"),
            evil.token_with_header(
                "RS256",
                &json!({"alg": "RS256", "typ": "JWT", "kid": kid,
                        "jwk": evil.public_jwk_with_kid(kid)}),
                &claims(),
            ),
        );
    }
    add(
        "no kid, attacker key",
        evil.token_with_header("RS256", &json!({"alg": "RS256", "typ": "JWT"}), &claims()),
    );
    add("three garbage parts", "abc.def.ghi".to_string());
    for (what, token) in &forged {
        let r = env.bearer(token).await;
        f.refused(what, &r, 401, Challenge::Error("invalid_token"));
    }
    let attacker_fetches = attacker.fetches();
    f.check(attacker_fetches == 0, || {
        format!(
            "the gateway fetched from the attacker's server {attacker_fetches} time(s): {:?}",
            attacker.requests()
        )
    });

    // Request-level refusals.
    f.refused(
        "no Authorization header",
        &env.call(USERS, None).await,
        401,
        Challenge::Bare,
    );
    f.refused(
        "Authorization: \"Bearer \"",
        &env.call(USERS, Some("Bearer ")).await,
        401,
        Challenge::Any,
    );
    f.refused(
        "Authorization: \"Bearer\"",
        &env.call(USERS, Some("Bearer")).await,
        401,
        Challenge::Any,
    );
    let query_token = rsa.token("RS256", &claims());
    env.secret(&query_token);
    f.refused(
        "valid token in ?access_token= instead of the header",
        &env.call(&format!("{USERS}?access_token={query_token}"), None)
            .await,
        401,
        Challenge::Error("invalid_request"),
    );

    // Valid but without administrator rights.
    f.refused(
        "scp without the admin scope",
        &env.bearer(&rsa.token("RS256", &with(claims(), "scp", json!("User.Read"))))
            .await,
        403,
        Challenge::Error("insufficient_scope"),
    );
    f.refused(
        "neither scp nor roles",
        &env.bearer(&rsa.token("RS256", &without(claims(), "scp")))
            .await,
        403,
        Challenge::Error("insufficient_scope"),
    );
    f.refused(
        "roles without the admin role",
        &env.bearer(&rsa.token(
            "RS256",
            &with(without(claims(), "scp"), "roles", json!(["Reader"])),
        ))
        .await,
        403,
        Challenge::Error("insufficient_scope"),
    );

    // After all that, the real thing still works.
    f.accepted(
        "RS256 after the refusals",
        &env.bearer(&rsa.token("RS256", &claims())).await,
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

#[tokio::test]
async fn key_rotation_refetches_once_and_random_kids_are_rate_limited() {
    let old = SigningKey::rsa("2024-old");
    let new = SigningKey::rsa("2025-new");
    let jwks_server = JwksServer::start(jwks(&[&old])).await;
    let env = start_env(&jwt_config(
        &jwks_server.url(),
        "refresh_interval = \"1h\"\nmin_refetch_interval = \"4s\"\n",
    ))
    .await;
    env.ready().await;
    let mut f = Findings::default();
    let old_token = old.token("RS256", &claims());
    f.accepted("old key", &env.bearer(&old_token).await);
    // Verified signatures are remembered; a second call with the same token still passes.
    f.accepted("old key, again", &env.bearer(&old_token).await);

    // Past min_refetch_interval since the start-up fetch, the IdP rotates.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    jwks_server.set_keys(jwks(&[&new]));
    let before = jwks_server.fetches();
    f.accepted(
        "new kid after rotation",
        &env.bearer(&new.token("RS256", &claims())).await,
    );
    let after_rotation = jwks_server.fetches();
    f.check(after_rotation == before + 1, || {
        format!("rotation: expected one refetch, fetches went {before} -> {after_rotation}")
    });
    // The remembered signature does not outlive the key that made it: the IdP no longer serves
    // the old key, so the very token accepted before is now refused.
    let r = env.bearer(&old_token).await;
    f.refused(
        "old token after its key left the JWKS",
        &r,
        401,
        Challenge::Error("invalid_token"),
    );

    // A flood of random kids, all at once, within min_refetch_interval.
    let tokens: Vec<String> = (0..50)
        .map(|_| new.token_kid("RS256", &random_hex(8), &claims()))
        .collect();
    let answers = futures_util::future::join_all(tokens.iter().map(|t| env.bearer(t))).await;
    let refused = answers.iter().filter(|r| r.status == 401).count();
    f.check(refused == 50, || {
        format!(
            "random kids: expected 50 × 401, got statuses {:?}",
            answers
                .iter()
                .map(|r| r.status.as_u16())
                .collect::<Vec<_>>()
        )
    });
    // At most one refetch per min_refetch_interval: the rotation's refetch was that one, so the
    // flood (every request answered, above) caused none.
    let after_flood = jwks_server.fetches();
    f.check(after_flood == after_rotation, || {
        format!(
            "50 random kids within min_refetch_interval (4 s) caused {} JWKS fetches (none allowed)",
            after_flood - after_rotation
        )
    });
    f.accepted(
        "new key after the flood",
        &env.bearer(&new.token("RS256", &claims())).await,
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

#[tokio::test]
async fn refresh_interval_brings_a_rotated_key_without_an_unknown_kid() {
    let old = SigningKey::rsa("2024-old");
    let new = SigningKey::rsa("2025-new");
    let fast_idp = JwksServer::start(jwks(&[&old])).await;
    let slow_idp = JwksServer::start(jwks(&[&old])).await;
    // min_refetch_interval of an hour: after the start-up fetch an unknown kid never causes a
    // fetch, so only the background refresh can bring the new key.
    let fast = start_env(&jwt_config(
        &fast_idp.url(),
        "refresh_interval = \"1s\"\nmin_refetch_interval = \"1h\"\n",
    ))
    .await;
    let slow = start_env(&jwt_config(
        &slow_idp.url(),
        "refresh_interval = \"1h\"\nmin_refetch_interval = \"1h\"\n",
    ))
    .await;
    fast.ready().await;
    slow.ready().await;
    let mut f = Findings::default();
    f.accepted(
        "old key, refresh 1s",
        &fast.bearer(&old.token("RS256", &claims())).await,
    );
    f.accepted(
        "old key, refresh 1h",
        &slow.bearer(&old.token("RS256", &claims())).await,
    );

    fast_idp.set_keys(jwks(&[&new]));
    slow_idp.set_keys(jwks(&[&new]));
    let (fast_before, slow_before) = (fast_idp.fetches(), slow_idp.fetches());
    // Two background fetches after the rotation: the first one's answer has been taken in by
    // the time the second starts (the refresh loop fetches, then sleeps).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fast_idp.fetches() < fast_before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.check(fast_idp.fetches() >= fast_before + 2, || {
        format!(
            "refresh_interval = 1s: {} background JWKS fetches in 20 s after the rotation",
            fast_idp.fetches() - fast_before
        )
    });
    f.accepted(
        "rotated key, refresh 1s",
        &fast.bearer(&new.token("RS256", &claims())).await,
    );
    // The same rotation, an hour's refresh: the new key is unknown and may not be fetched.
    let r = slow.bearer(&new.token("RS256", &claims())).await;
    f.refused(
        "rotated key, refresh 1h",
        &r,
        401,
        Challenge::Error("invalid_token"),
    );
    f.check(slow_idp.fetches() == slow_before, || {
        format!(
            "refresh_interval = 1h, min_refetch_interval = 1h: {} JWKS fetches after start-up",
            slow_idp.fetches() - slow_before
        )
    });
    fast.check_logs(&mut f).await;
    f.assert_none(&fast.gw);
}

#[tokio::test]
async fn leeway_admits_expiry_and_not_before_only_within_it() {
    let rsa = SigningKey::rsa("rsa-1");
    let jwks_server = JwksServer::start(jwks(&[&rsa])).await;
    let wide = start_env(&jwt_config_with("", &jwks_server.url(), "60s", "")).await;
    let narrow = start_env(&jwt_config_with("", &jwks_server.url(), "5s", "")).await;
    wide.ready().await;
    narrow.ready().await;
    let mut f = Findings::default();
    let expired = rsa.token("RS256", &with(claims(), "exp", json!(now() - 30)));
    let early = rsa.token("RS256", &with(claims(), "nbf", json!(now() + 30)));
    f.accepted("expired 30 s ago, leeway 60s", &wide.bearer(&expired).await);
    f.accepted("valid in 30 s, leeway 60s", &wide.bearer(&early).await);
    f.refused(
        "expired 30 s ago, leeway 5s",
        &narrow.bearer(&expired).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.refused(
        "valid in 30 s, leeway 5s",
        &narrow.bearer(&early).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.accepted(
        "a current token, leeway 5s",
        &narrow.bearer(&rsa.token("RS256", &claims())).await,
    );
    f.assert_none(&narrow.gw);
}

#[tokio::test]
async fn ca_bundle_trusts_an_idp_with_a_private_ca() {
    let (ca_pem, acceptor) = private_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let rsa = SigningKey::rsa("rsa-1");
    let jwks_server = JwksServer::start_tls(jwks(&[&rsa]), acceptor.clone()).await;
    let idp = IntrospectionServer::start_tls("gw", "gw-secret", acceptor).await;
    assert!(jwks_server.url().starts_with("https://") && idp.url().starts_with("https://"));
    let auth = |ca_bundle: &str| {
        format!(
            "{}\n[auth.introspection]\nendpoint = \"{}\"\nclient_id = \"gw\"\n\
             client_secret = \"gw-secret\"\nclient_ids = [\"scim-client\"]\n",
            jwt_config_with(ca_bundle, &jwks_server.url(), "60s", ""),
            idp.url()
        )
    };
    let active =
        json!({"active": true, "client_id": "scim-client", "exp": now() + 600, "sub": "ping"});
    let mut f = Findings::default();

    let trusting = start_env(&auth(&format!("ca_bundle = \"{}\"\n", ca_path.display()))).await;
    trusting.ready().await;
    f.accepted(
        "JWT, JWKS over https, ca_bundle = the IdP's CA",
        &trusting.bearer(&rsa.token("RS256", &claims())).await,
    );
    let a = opaque();
    idp.answer(&a, active.clone());
    f.accepted(
        "opaque token, introspection over https, ca_bundle = the IdP's CA",
        &trusting.bearer(&a).await,
    );
    f.check(idp.calls_for(&a) == 1, || {
        format!("introspection calls with ca_bundle: {}", idp.calls_for(&a))
    });
    f.check(
        jwks_server.tls_failures() == 0 && idp.tls_failures() == 0,
        || {
            format!(
                "TLS handshakes failed with ca_bundle: JWKS {}, introspection {}",
                jwks_server.tls_failures(),
                idp.tls_failures()
            )
        },
    );
    f.assert_none(&trusting.gw);

    // Without it (system roots only), the same IdP is not trusted.
    let mut f = Findings::default();
    let distrusting = start_env(&auth("")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while jwks_server.tls_failures() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.check(jwks_server.tls_failures() > 0, || {
        "without ca_bundle the gateway never tried the JWKS over https".to_string()
    });
    let (status, body) = readyz(distrusting.gw.admin_addr).await;
    f.check(
        status == 503 && body.contains("\"keys_loaded\":false"),
        || format!("/readyz without the IdP's CA: {status} {body}"),
    );
    f.refused(
        "JWT without ca_bundle (no keys could be loaded)",
        &distrusting.bearer(&rsa.token("RS256", &claims())).await,
        401,
        Challenge::Error("invalid_token"),
    );
    let b = opaque();
    idp.answer(&b, active);
    f.refused(
        "opaque token without ca_bundle (introspection unreachable)",
        &distrusting.bearer(&b).await,
        503,
        Challenge::Any,
    );
    f.check(idp.calls_for(&b) == 0 && idp.tls_failures() > 0, || {
        format!(
            "without ca_bundle: {} introspection requests reached the IdP, {} handshakes failed",
            idp.calls_for(&b),
            idp.tls_failures()
        )
    });
    f.assert_none(&distrusting.gw);
}

#[tokio::test]
async fn last_good_key_set_is_kept_when_the_idp_goes_down() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let jwks_server = JwksServer::start(jwks(&[&rsa, &ec])).await;
    let env = start_env(&jwt_config(
        &jwks_server.url(),
        "refresh_interval = \"2s\"\nmin_refetch_interval = \"1s\"\n",
    ))
    .await;
    env.ready().await;
    let mut f = Findings::default();
    f.accepted(
        "RS256 with the IdP up",
        &env.bearer(&rsa.token("RS256", &claims())).await,
    );

    jwks_server.shutdown();
    f.accepted(
        "RS256 just after the IdP went down",
        &env.bearer(&rsa.token("RS256", &claims())).await,
    );
    // An unknown kid makes the gateway try the IdP, which fails; so do the background refreshes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stranger = SigningKey::rsa("rsa-unknown");
    let r = env.bearer(&stranger.token("RS256", &claims())).await;
    f.check(r.status != 200, || {
        format!("unknown kid with the IdP down was accepted: {}", r.text())
    });
    tokio::time::sleep(Duration::from_millis(4500)).await;
    f.accepted(
        "RS256 after failed refetch and refreshes",
        &env.bearer(&rsa.token("RS256", &claims())).await,
    );
    f.accepted(
        "ES256 after failed refetch and refreshes",
        &env.bearer(&ec.token("ES256", &claims())).await,
    );
    let (status, body) = readyz(env.gw.admin_addr).await;
    f.check(status == 200, || {
        format!("/readyz with the last good keys kept: {status} {body}")
    });
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

#[tokio::test]
async fn readiness_waits_for_the_jwks() {
    let rsa = SigningKey::rsa("rsa-1");
    // A port with nothing on it (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let env = start_env(&jwt_config(
        &format!("http://{addr}/jwks.json"),
        "refresh_interval = \"1h\"\nmin_refetch_interval = \"1s\"\n",
    ))
    .await;

    // 503, and it says why, even once the platform has been reached.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = readyz(env.gw.admin_addr).await;
    while !last.1.contains("\"upstream_reached\":true") && Instant::now() < deadline {
        assert_ne!(last.0, 200, "/readyz 200 without JWKS keys: {}", last.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = readyz(env.gw.admin_addr).await;
    }
    assert_eq!(last.0, 503, "/readyz with the JWKS down: {}", last.1);
    assert!(
        last.1.contains("\"keys_loaded\":false"),
        "/readyz with the JWKS down should say \"keys_loaded\":false: {}",
        last.1
    );
    let r = env.bearer(&rsa.token("RS256", &claims())).await;
    assert_ne!(r.status, 200, "a token was accepted with no keys loaded");

    // The IdP comes up on that port.
    let jwks_server = match JwksServer::start_on(addr, jwks(&[&rsa])).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("port {port} could not be reused ({e}); only the 503 case was checked");
            return;
        }
    };
    let (ok, seen) = poll_status(env.gw.admin_addr, "/readyz", 200, Duration::from_secs(60)).await;
    let body = readyz(env.gw.admin_addr).await.1;
    assert!(
        ok,
        "/readyz not 200 within 60 s of the JWKS server coming up ({} fetches): last {:?}, body {body}",
        jwks_server.fetches(),
        seen.iter().rev().take(5).collect::<Vec<_>>()
    );
    let mut f = Findings::default();
    f.accepted(
        "RS256 once the keys are loaded",
        &env.bearer(&rsa.token("RS256", &claims())).await,
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

// ---------------------------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------------------------

fn opaque() -> String {
    format!("opaque-{}", random_hex(20))
}

#[tokio::test]
async fn opaque_tokens_are_introspected_cached_and_refused_when_the_endpoint_is_down() {
    let idp = IntrospectionServer::start("gw", "gw-secret").await;
    let env = start_env(&format!(
        "[auth]\n{NO_THROTTLE}\n[auth.introspection]\nendpoint = \"{}\"\nclient_id = \"gw\"\n\
         client_secret = \"gw-secret\"\nclient_ids = [\"scim-client\"]\ncache_max = \"5m\"\n\
         negative_cache = \"1s\"\n",
        idp.url()
    ))
    .await;
    env.secret("gw-secret");
    let mut f = Findings::default();
    let active = |exp: i64| json!({"active": true, "client_id": "scim-client", "scope": "scim", "exp": exp, "sub": "ping"});

    let a = opaque();
    idp.answer(&a, active(now() + 600));
    f.accepted("active token", &env.bearer(&a).await);
    f.check(idp.calls_for(&a) == 1, || {
        format!(
            "active token: {} introspection calls, expected 1",
            idp.calls_for(&a)
        )
    });
    f.accepted("active token again", &env.bearer(&a).await);
    f.check(idp.calls_for(&a) == 1, || {
        format!(
            "active token again: the positive result was not cached ({} calls)",
            idp.calls_for(&a)
        )
    });

    let inactive = opaque();
    idp.answer(&inactive, json!({"active": false}));
    f.refused(
        "inactive token",
        &env.bearer(&inactive).await,
        401,
        Challenge::Error("invalid_token"),
    );
    let inactive_calls = idp.calls_for(&inactive);
    f.check(inactive_calls == 1, || {
        format!("inactive token: {inactive_calls} introspection calls, expected 1")
    });

    let unknown = opaque();
    f.refused(
        "token the endpoint does not know",
        &env.bearer(&unknown).await,
        401,
        Challenge::Error("invalid_token"),
    );

    let other_client = opaque();
    idp.answer(
        &other_client,
        json!({"active": true, "client_id": "someone-else", "exp": now() + 600}),
    );
    f.refused(
        "active token of a client not in client_ids",
        &env.bearer(&other_client).await,
        401,
        Challenge::Error("invalid_token"),
    );

    // A token with 2 s to live: cached at most that long.
    let short = opaque();
    idp.answer(&short, active(now() + 2));
    f.accepted("short-lived token", &env.bearer(&short).await);
    let short_calls = idp.calls_for(&short);

    // Past negative_cache (1 s) and past the short token's expiry.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    f.refused(
        "inactive token after negative_cache",
        &env.bearer(&inactive).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.check(idp.calls_for(&inactive) > inactive_calls, || {
        format!(
            "inactive token: the negative result was cached beyond negative_cache (1 s): \
             still {inactive_calls} call(s) after 3.5 s"
        )
    });
    let r = env.bearer(&short).await;
    f.check(
        r.status != 200 || idp.calls_for(&short) > short_calls,
        || {
            format!(
                "short-lived token (exp +2 s) accepted 3.5 s later from the cache \
             without a new introspection: {}",
                r.text()
            )
        },
    );

    // What the endpoint received.
    let calls = idp.calls();
    let expected_auth = format!("Basic {}", b64(b"gw:gw-secret"));
    f.check(!calls.is_empty(), || {
        "no introspection call at all".to_string()
    });
    for c in &calls {
        let form = c.form();
        let ok = c.method == "POST"
            && c.path == "/introspect"
            && c.header("authorization").as_deref() == Some(expected_auth.as_str())
            && c.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
            && form.get("token_type_hint").map(String::as_str) == Some("access_token")
            && form.get("token").is_some_and(|t| t.starts_with("opaque-"));
        f.check(ok, || {
            format!(
                "introspection request: expected POST /introspect, Basic gw:gw-secret, a form with \
                 token and token_type_hint=access_token; got {} {} authorization {:?} \
                 content-type {:?} body {:?}",
                c.method,
                c.path,
                c.header("authorization").map(|_| "<present>"),
                c.header("content-type"),
                String::from_utf8_lossy(&c.body)
            )
        });
    }

    // Endpoint down: refuse with 503, never accept; a cached positive result still serves.
    idp.shutdown();
    let fresh = opaque();
    idp.answer(&fresh, active(now() + 600));
    f.refused(
        "uncached token with the introspection endpoint down",
        &env.bearer(&fresh).await,
        503,
        Challenge::Any,
    );
    f.accepted(
        "cached token with the introspection endpoint down",
        &env.bearer(&a).await,
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

// ---------------------------------------------------------------------------------------------
// Static bearer and Basic
// ---------------------------------------------------------------------------------------------

const STATIC: &str = "static-bearer-0123456789abcdef-XYZ";
const BASIC_PASSWORD: &str = "s3cret-password-for-basic";

#[tokio::test]
async fn introspection_cache_max_bounds_how_long_an_answer_is_reused() {
    let idp = IntrospectionServer::start("gw", "gw-secret").await;
    let config = |cache_max: &str| {
        format!(
            "[auth]\n{NO_THROTTLE}\n[auth.introspection]\nendpoint = \"{}\"\nclient_id = \"gw\"\n\
             client_secret = \"gw-secret\"\nclient_ids = [\"scim-client\"]\ncache_max = \"{cache_max}\"\n",
            idp.url()
        )
    };
    // The token lives an hour: only cache_max limits how long its answer is reused.
    let active =
        json!({"active": true, "client_id": "scim-client", "exp": now() + 3600, "sub": "ping"});
    let mut f = Findings::default();

    let one_second = start_env(&config("1s")).await;
    let t = opaque();
    idp.answer(&t, active.clone());
    f.accepted("first use, cache_max 1s", &one_second.bearer(&t).await);
    f.accepted(
        "second use at once, cache_max 1s",
        &one_second.bearer(&t).await,
    );
    f.check(idp.calls_for(&t) == 1, || {
        format!(
            "within cache_max = 1s: {} introspection calls, expected 1",
            idp.calls_for(&t)
        )
    });
    tokio::time::sleep(Duration::from_millis(1300)).await;
    f.accepted(
        "use after 1.3 s, cache_max 1s",
        &one_second.bearer(&t).await,
    );
    f.check(idp.calls_for(&t) == 2, || {
        format!(
            "past cache_max = 1s: {} introspection calls, expected 2",
            idp.calls_for(&t)
        )
    });

    let minimal = start_env(&config("1ms")).await;
    let u = opaque();
    idp.answer(&u, active);
    for i in 0..3 {
        f.accepted(
            &format!("use {i}, cache_max 1ms"),
            &minimal.bearer(&u).await,
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.check(idp.calls_for(&u) == 3, || {
        format!(
            "cache_max = 1ms: {} introspection calls for 3 uses",
            idp.calls_for(&u)
        )
    });
    f.assert_none(&minimal.gw);
}

#[tokio::test]
async fn static_bearer_and_basic_each_only_when_configured() {
    let env = start_env_with(
        &format!(
            "[scim]\nbearer_token = \"{STATIC}\"\n\n[auth]\n{NO_THROTTLE}\n[auth.basic]\n\
             username = \"pingfed\"\npassword = \"env:SCIMGATE_TEST_BASIC_PASSWORD\"\n"
        ),
        &[("SCIMGATE_TEST_BASIC_PASSWORD", BASIC_PASSWORD)],
    )
    .await;
    let mut f = Findings::default();
    env.secret(BASIC_PASSWORD);
    f.accepted("static bearer", &env.bearer(STATIC).await);
    f.refused(
        "static bearer plus one character",
        &env.bearer(&format!("{STATIC}x")).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.refused(
        "prefix of the static bearer",
        &env.bearer(&STATIC[..STATIC.len() - 1]).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.refused(
        "static bearer as Basic password",
        &env.basic("pingfed", STATIC).await,
        401,
        Challenge::Any,
    );
    f.accepted("Basic", &env.basic("pingfed", BASIC_PASSWORD).await);
    f.refused(
        "Basic, wrong password",
        &env.basic("pingfed", "s3cret-password-for-basiX").await,
        401,
        Challenge::Any,
    );
    f.refused(
        "Basic, wrong user",
        &env.basic("admin", BASIC_PASSWORD).await,
        401,
        Challenge::Any,
    );
    f.refused(
        "Basic, not base64",
        &env.call(USERS, Some("Basic !!!not-base64!!!")).await,
        401,
        Challenge::Any,
    );
    f.refused(
        "Basic, no colon",
        &env.call(USERS, Some(&format!("Basic {}", b64(b"pingfed"))))
            .await,
        401,
        Challenge::Any,
    );
    f.refused(
        "Basic password as bearer",
        &env.bearer(BASIC_PASSWORD).await,
        401,
        Challenge::Error("invalid_token"),
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);

    // [auth] bearer_token, no Basic configured.
    let env = start_env(&format!(
        "[auth]\n{NO_THROTTLE}bearer_token = \"{STATIC}-2\"\n"
    ))
    .await;
    let mut f = Findings::default();
    f.accepted(
        "auth.bearer_token",
        &env.bearer(&format!("{STATIC}-2")).await,
    );
    f.refused(
        "wrong bearer with auth.bearer_token",
        &env.bearer(STATIC).await,
        401,
        Challenge::Error("invalid_token"),
    );
    f.refused(
        "Basic when Basic is not configured",
        &env.basic("pingfed", BASIC_PASSWORD).await,
        401,
        Challenge::Any,
    );
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);

    // Only one of scim.bearer_token and auth.bearer_token.
    let out = common::run_check(&config_toml(
        &plain_listener(),
        "http://127.0.0.1:9",
        "",
        &format!("[scim]\nbearer_token = \"{STATIC}\"\n\n[auth]\nbearer_token = \"{STATIC}-2\"\n"),
    ));
    assert_eq!(
        out.status.code(),
        Some(1),
        "scimgate check with both scim.bearer_token and auth.bearer_token: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Slowing down repeated failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn repeated_failures_are_slowed_down_not_let_through() {
    let env = start_env(&format!(
        "[scim]\nbearer_token = \"{STATIC}\"\n\n[auth]\nmax_failures_per_minute = 3\n"
    ))
    .await;
    let mut f = Findings::default();
    // 3 allowed, then 3 beyond the allowance: each one still answered, and refused.
    for i in 0..6 {
        let r = env.bearer(&format!("wrong-token-number-{i}-abcdef")).await;
        f.refused(
            &format!("failure #{}", i + 1),
            &r,
            401,
            Challenge::Error("invalid_token"),
        );
    }
    // How long each refusal waits is the throttle's unit test (src/auth); here, that the
    // slowing down starts with the first failure past the allowance, seen in the order of the
    // log: it is announced after the third refusal's access line and before the fourth's.
    let keywords = [
        "throttl",
        "slow",
        "delay",
        "too many",
        "rate limit",
        "rate-limit",
        "rate_limit",
    ];
    let about_slowing = |j: &common::Json| {
        let text = format!("{j:?}").to_lowercase();
        j.message() != "access" && keywords.iter().any(|k| text.contains(k))
    };
    let logged = env
        .gw
        .wait_log(Duration::from_secs(30), |_| {
            access_lines(&env.gw.json_logs()).len() >= 6
        })
        .await;
    f.check(logged.is_some(), || {
        "the six refusals' access lines were not written".to_string()
    });
    let logs = env.gw.json_logs();
    match logs.iter().position(about_slowing) {
        None => f.add(format!(
            "no log line about slowing down after 6 failures with max_failures_per_minute = 3 \
             (looked for {keywords:?})"
        )),
        Some(at) => {
            let refusals_before = access_lines(&logs[..at])
                .iter()
                .filter(|j| j.str_field("status").as_deref() == Some("401"))
                .count();
            f.check(refusals_before == 3, || {
                format!(
                    "the slowing down was announced after {refusals_before} refusals, not after \
                     the allowance of 3: {:?}",
                    logs[at]
                )
            });
        }
    }
    f.accepted("right token after the failures", &env.bearer(STATIC).await);
    env.check_logs(&mut f).await;
    f.assert_none(&env.gw);
}

// ---------------------------------------------------------------------------------------------
// `scimgate dev` + `scimgate token`
// ---------------------------------------------------------------------------------------------

struct Dev {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- scimgate dev stderr -----");
            for l in self.stderr.lock().map(|v| v.clone()).unwrap_or_default() {
                eprintln!("{l}");
            }
        }
    }
}

impl Dev {
    fn start(data_dir: &Path) -> Dev {
        let mut child = common::dev_command(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stream = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Dev { child, stderr }
    }

    async fn address(&mut self, listener: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.stderr.lock().unwrap().iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "listening" && v["listener"] == listener)
                    .then(|| v["address"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(a) = found {
                return a;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("scimgate dev exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "no {listener} listener announced"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn scimgate_token_authenticates_against_scimgate_dev() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(data.path());
    let gateway = dev.address("gateway").await;
    let admin = dev.address("admin").await;
    let (ready, seen) = poll_status(admin, "/readyz", 200, Duration::from_secs(30)).await;
    assert!(ready, "scimgate dev never ready: {seen:?}");

    let out = Command::new(common::bin())
        .args(["token", "--data-dir"])
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scimgate token --data-dir: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        token.split('.').count(),
        3,
        "scimgate token should print a JWT, printed {token:?}"
    );

    let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
    let tls = common::client_config(&cert, &[b"http/1.1"]);
    let host = format!("localhost:{}", gateway.port());
    let call = |auth: Option<String>| {
        let mut req = common::get(&host, USERS);
        req.headers_mut()
            .insert("accept", "application/json".parse().unwrap());
        if let Some(a) = auth {
            req.headers_mut()
                .insert("authorization", a.parse().unwrap());
        }
        common::send_tls(gateway, "localhost", tls.clone(), req)
    };
    let mut f = Findings::default();
    f.refused(
        "scimgate dev, no token",
        &call(None).await.unwrap(),
        401,
        Challenge::Bare,
    );
    f.accepted(
        "scimgate dev, token from `scimgate token`",
        &call(Some(format!("Bearer {token}"))).await.unwrap(),
    );
    let sig = token.rsplit('.').next().unwrap_or_default().to_string();
    let leaked = dev
        .stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(&token) || (sig.len() >= 16 && l.contains(&sig)));
    f.check(!leaked, || "scimgate dev logged the token".to_string());
    if !f.0.is_empty() {
        panic!(
            "{} finding(s):\n- {}\n\nscimgate dev stderr (tail):\n{}",
            f.0.len(),
            f.0.join("\n- "),
            {
                let logs = dev.stderr.lock().unwrap().clone();
                logs[logs.len().saturating_sub(30)..].join("\n")
            }
        );
    }
}
