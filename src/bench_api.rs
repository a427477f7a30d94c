//! Entry points for `benches/micro.rs` and nothing else: not an API, no stability promised.
//!
//! The benchmark goes through here rather than through the real modules so that their public
//! surface can be narrowed later without touching it. Each function does what one request does
//! on the hot path (bytes in, bytes or a verdict out), so the figures mean per-request cost.

use crate::auth::jwt::{self, JwtProvider};
use crate::config::{JwtAlgorithm, JwtProviderConfig};
use crate::platform::MemberKind;
use crate::provisioning::{GroupRecord, GroupRef, MemberRef, UserRecord};
use crate::scim::filter::{self, Dialect};
use crate::scim::{v1, v2};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn parse_filter_v1(text: &str) -> Result<(), String> {
    filter::parse(text, Dialect::V1)
        .map(drop)
        .map_err(|e| e.message)
}

pub fn parse_filter_v2(text: &str) -> Result<(), String> {
    filter::parse(text, Dialect::V2)
        .map(drop)
        .map_err(|e| e.message)
}

// ---------------------------------------------------------------------------------------------
// SCIM codecs

const BASE: &str = "https://gw.corp.com/Thingworx/SCIMProvider/SCIM/v2";

/// Records shaped like an Entra-provisioned directory: every mapped slot filled, as the
/// attribute mapping of a typical tenant does.
pub struct ScimFixture {
    user: UserRecord,
    group: GroupRecord,
    page: Vec<UserRecord>,
    page_v2: Value,
    current_v2: Value,
}

fn sample_user(n: usize) -> UserRecord {
    let login = format!("user{n:04}@corp.com");
    let attributes: BTreeMap<String, String> = [
        ("name.givenName", format!("Given{n}")),
        ("name.familyName", format!("Family{n}")),
        ("name.formatted", format!("Given{n} Family{n}")),
        ("displayName", format!("Given{n} Family{n}")),
        ("title", "Senior Process Engineer".to_string()),
        ("preferredLanguage", "en-US".to_string()),
        ("emails.work", login.clone()),
        (
            "emails.other",
            format!("g{n}@home.example, g{n}@alt.example"),
        ),
        ("phoneNumbers.work", "+1 617 555 0100".to_string()),
        ("phoneNumbers.mobile", "+1 617 555 0199".to_string()),
        (
            "addresses.work.streetAddress",
            "121 Seaport Blvd".to_string(),
        ),
        ("addresses.work.locality", "Boston".to_string()),
        ("addresses.work.region", "MA".to_string()),
        ("addresses.work.postalCode", "02210".to_string()),
        ("addresses.work.country", "US".to_string()),
        ("enterprise.employeeNumber", format!("E{n:06}")),
        ("enterprise.department", "Manufacturing IT".to_string()),
        ("enterprise.costCenter", "CC-4410".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    UserRecord {
        id: crate::provisioning::id_for(&login),
        user_name: login,
        external_id: Some(format!("6f1c2a4e-0b7d-4c3e-9a51-{n:012}")),
        active: true,
        attributes,
        groups: ["Operators", "Plant-Boston", "Engineering"]
            .iter()
            .map(|g| GroupRef {
                id: crate::provisioning::group_id_for(g),
                display: g.to_string(),
            })
            .collect(),
        last_modified: None,
    }
}

fn location(kind: &str, id: &str) -> String {
    format!("{BASE}/{kind}/{id}")
}

impl ScimFixture {
    pub fn new(group_members: usize, page_size: usize) -> Self {
        let user = sample_user(1);
        let members = (0..group_members)
            .map(|n| {
                let name = format!("user{n:04}@corp.com");
                MemberRef {
                    id: crate::provisioning::id_for(&name),
                    display: Some(name),
                    kind: Some(MemberKind::User),
                }
            })
            .collect();
        let group = GroupRecord {
            id: crate::provisioning::group_id_for("Operators"),
            platform_name: "Operators".into(),
            display_name: "Operators".into(),
            external_id: Some("3b9f8c1d-52e4-4d7a-8f0e-1c2b3a4d5e6f".into()),
            members,
            last_modified: None,
        };
        let page: Vec<UserRecord> = (0..page_size).map(sample_user).collect();
        let page_v2 = v2::list(page_size, 1, render_page_v2(&page));
        let current_v2 = v2::render_user(&user, &location("Users", &user.id));
        Self {
            user,
            group,
            page,
            page_v2,
            current_v2,
        }
    }

    pub fn user_v2(&self) -> String {
        v2::render_user(&self.user, &location("Users", &self.user.id)).to_string()
    }

    pub fn user_v1(&self) -> String {
        v1::render_user(&self.user, &location("Users", &self.user.id)).to_string()
    }

    pub fn group_v2(&self) -> String {
        v2::render_group(&self.group, &location("Groups", &self.group.id)).to_string()
    }

    pub fn group_v1(&self) -> String {
        v1::render_group(&self.group, &location("Groups", &self.group.id)).to_string()
    }

    /// A `GET /Users` page: every record rendered, wrapped and written out.
    pub fn list_page_v2(&self) -> String {
        v2::list(self.page.len(), 1, render_page_v2(&self.page)).to_string()
    }

    /// Only the last step of [`Self::list_page_v2`]: the rendered page written out.
    pub fn write_page_v2(&self) -> String {
        self.page_v2.to_string()
    }

    /// A POST/PUT body as received: JSON text to a change.
    pub fn parse_user_v2(&self, body: &[u8]) -> Result<(), String> {
        let body: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        v2::parse_user(&body, v1::Mode::Create)
            .map(drop)
            .map_err(|e| e.detail)
    }

    /// A PatchOp body as received, applied to this fixture's user as currently rendered.
    pub fn patch_user_v2(&self, body: &[u8]) -> Result<(), String> {
        let body: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        v2::patch_user(&self.current_v2, &body)
            .map(drop)
            .map_err(|e| e.detail)
    }
}

fn render_page_v2(page: &[UserRecord]) -> Vec<Value> {
    page.iter()
        .map(|u| v2::render_user(u, &location("Users", &u.id)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// JWT

const ISSUER: &str = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
const AUDIENCE: &str = "api://scimgate";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ROLE: &str = "SCIM.Provision";
const EC_KID: &str = "bench-es256";
const RSA_KID: &str = "bench-rs256";

#[derive(Debug, Clone, Copy)]
pub enum Alg {
    Es256,
    Rs256,
}

#[derive(Debug, Clone, Copy)]
pub enum Signature {
    Valid,
    /// One bit of the signature flipped: the refusal path, with the key found by `kid`.
    Tampered,
}

/// A JWT provider whose key set is already cached, and tokens for it.
pub struct JwtFixture {
    provider: Arc<JwtProvider>,
    runtime: tokio::runtime::Runtime,
    tokens: [String; 4],
    /// Distinct valid tokens per algorithm, more than the verifier remembers, so cycling
    /// through them measures a first verification every time.
    unseen: [Vec<String>; 2],
}

/// One more than the signatures the verifier remembers before starting over.
const UNSEEN_TOKENS: usize = 4097;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_token(
    alg: Alg,
    claims: &Value,
    sign: impl Fn(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<[String; 2], String> {
    let (name, kid) = match alg {
        Alg::Es256 => ("ES256", EC_KID),
        Alg::Rs256 => ("RS256", RSA_KID),
    };
    let header = json!({"alg": name, "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut signature = sign(input.as_bytes())?;
    let valid = format!("{input}.{}", b64url(&signature));
    // The last byte, so the signature stays in range and verification does all its work.
    if let Some(last) = signature.last_mut() {
        *last ^= 1;
    }
    let tampered = format!("{input}.{}", b64url(&signature));
    Ok([valid, tampered])
}

impl JwtFixture {
    /// Makes fresh keys and serves their JWKS on loopback just long enough for the provider to
    /// fetch it: a fetch is the only way into the provider's key cache.
    pub fn new() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| format!("EC key: {e}"))?;
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| format!("RSA key: {e}"))?;
        let point = ec.public_key().as_ref();
        if point.len() != 65 {
            return Err("the EC public key is not an uncompressed P-256 point".into());
        }
        let rsa_public = rsa.public_key();
        let jwks = json!({"keys": [
            {"kty": "EC", "use": "sig", "crv": "P-256", "kid": EC_KID,
             "x": b64url(&point[1..33]), "y": b64url(&point[33..65])},
            {"kty": "RSA", "use": "sig", "kid": RSA_KID,
             "n": b64url(rsa_public.modulus().big_endian_without_leading_zero()),
             "e": b64url(rsa_public.exponent().big_endian_without_leading_zero())},
        ]});

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // An Entra ID app-only access token's claims.
        let claims = json!({
            "aud": AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 86_400,
            "aio": "k2BgYDi0mP3xW9Hc8uVyQvL2bA==", "azp": "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            "azpacr": "1", "idp": ISSUER, "oid": "9d8c7b6a-5f4e-3d2c-1b0a-fedcba987654",
            "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR0ZbzV3TrJxKsOkKXtWBgOJxAAA.", "roles": [ROLE],
            "sub": "9d8c7b6a-5f4e-3d2c-1b0a-fedcba987654", "tid": TENANT,
            "uti": "AbCdEfGhIjKlMnOpQrStUv", "ver": "2.0",
        });
        let es_sign = |input: &[u8]| {
            ec.sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| format!("ES256 signing: {e}"))
        };
        let rs_sign = |input: &[u8]| {
            let mut sig = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&RSA_PKCS1_SHA256, &rng, input, &mut sig)
                .map_err(|e| format!("RS256 signing: {e}"))?;
            Ok(sig)
        };
        let [es_valid, es_tampered] = sign_token(Alg::Es256, &claims, es_sign)?;
        let [rs_valid, rs_tampered] = sign_token(Alg::Rs256, &claims, rs_sign)?;
        let mut unseen: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for n in 0..UNSEEN_TOKENS {
            let mut distinct = claims.clone();
            distinct["uti"] = json!(format!("bench-{n}"));
            let [es, _] = sign_token(Alg::Es256, &distinct, es_sign)?;
            let [rs, _] = sign_token(Alg::Rs256, &distinct, rs_sign)?;
            unseen[0].push(es);
            unseen[1].push(rs);
        }

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let provider = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("JWKS listener: {e}"))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("JWKS listener: {e}"))?;
            let server = tokio::spawn(crate::dev::issuer::serve_jwks(listener, jwks));
            let jwks_url = format!("http://{addr}/jwks.json")
                .parse()
                .map_err(|e| format!("JWKS URL: {e}"))?;
            // Long intervals: nothing is fetched again while the benchmark runs.
            let config = JwtProviderConfig {
                issuer: ISSUER.into(),
                audiences: vec![AUDIENCE.into()],
                jwks_url: Some(jwks_url),
                algorithms: vec![JwtAlgorithm::ES256, JwtAlgorithm::RS256],
                leeway: Duration::from_secs(60),
                required_claims: vec![("tid".into(), TENANT.into())],
                admin_scopes: vec![ROLE.into()],
                hs_secret: None,
                refresh_interval: Duration::from_secs(86_400),
                min_refetch_interval: Duration::from_secs(86_400),
            };
            let client = crate::proxy::client_with_roots(
                rustls::RootCertStore::empty(),
                Duration::from_secs(5),
            )
            .map_err(|e| format!("JWKS client: {e}"))?;
            let provider = JwtProvider::new(config, client);
            provider.spawn_refresh();
            let loaded = tokio::time::timeout(Duration::from_secs(10), async {
                while !provider.keys_loaded() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            server.abort();
            loaded.map_err(|_| "the JWKS was not fetched within 10 s".to_string())?;
            Ok::<_, String>(provider)
        })?;
        Ok(Self {
            provider,
            runtime,
            tokens: [es_valid, es_tampered, rs_valid, rs_tampered],
            unseen,
        })
    }

    pub fn token(&self, alg: Alg, signature: Signature) -> &str {
        let index = match (alg, signature) {
            (Alg::Es256, Signature::Valid) => 0,
            (Alg::Es256, Signature::Tampered) => 1,
            (Alg::Rs256, Signature::Valid) => 2,
            (Alg::Rs256, Signature::Tampered) => 3,
        };
        &self.tokens[index]
    }

    /// What a request's bearer token goes through: split and decoded, then verified with the
    /// cached key and its claims checked.
    /// The `n`th of a cycle of distinct valid tokens, none verified since the cycle last came
    /// round (the verifier remembers fewer than the cycle holds).
    pub fn unseen_token(&self, alg: Alg, n: usize) -> &str {
        let list = match alg {
            Alg::Es256 => &self.unseen[0],
            Alg::Rs256 => &self.unseen[1],
        };
        list.get(n % list.len().max(1)).map_or("", String::as_str)
    }

    pub fn verify(&self, token: &str) -> Result<(), String> {
        let token = jwt::decode(token).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(self.provider.verify(token))
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
