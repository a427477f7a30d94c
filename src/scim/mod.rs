//! The SCIM service under the platform's SCIM base path: routing, authentication, the
//! subsystem's enabled/started state, query handling (filter, sort, paging, attributes), and
//! the version codecs. Provisioning decisions are made in `crate::provisioning`.

pub mod discovery;
pub mod error;
pub mod filter;
mod listing;
pub mod mapping;
mod operations;
mod query;
pub mod urn;
pub mod v1;
pub mod v2;

use crate::auth::{AuthError, Authenticator};
use crate::body::{full, read_limited, Body, BodyError};
use crate::config::ScimSettings;
use crate::provisioning::{Actor, Provisioner};
use error::{render, ScimError, Version};
use filter::Dialect;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use query::Query;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The SCIM subsystem's switch, as on the platform: `enabled` fixed by configuration, `started`
/// flipped by an operator on the admin listener.
#[derive(Debug)]
pub struct ScimState {
    enabled: AtomicBool,
    started: AtomicBool,
}

impl ScimState {
    pub fn new(enabled: bool, auto_start: bool) -> Arc<Self> {
        Arc::new(Self {
            enabled: AtomicBool::new(enabled),
            started: AtomicBool::new(enabled && auto_start),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// From a configuration reload; the started switch stays as the operator left it.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Returns false when SCIM is disabled by configuration and cannot be started.
    pub fn set_started(&self, started: bool) -> bool {
        if !self.enabled() {
            return false;
        }
        self.started.store(started, Ordering::SeqCst);
        true
    }
}

/// Where the request came from and how the client addressed the gateway.
pub struct RequestInfo {
    pub client: IpAddr,
    /// `scheme://host[:port]` as the client sees the gateway.
    pub origin: String,
}

pub struct ScimService {
    base_path: String,
    settings: ScimSettings,
    state: Arc<ScimState>,
    auth: Arc<Authenticator>,
    provisioner: Option<Arc<Provisioner>>,
    max_body_bytes: u64,
    body_read_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Users,
    Groups,
}

enum Endpoint {
    Resources(Resource, Option<String>),
    Search(Option<Resource>),
    ServiceProviderConfig,
    ResourceTypes(Option<String>),
    Schemas(Option<String>),
    Bulk,
    Me,
}

/// Preconditions from `If-Match`/`If-None-Match` (SCIM 2.0 ETags).
#[derive(Default, Clone)]
struct Conditions {
    if_match: Option<String>,
    if_none_match: Option<String>,
}

impl Conditions {
    fn from_headers(h: &http::HeaderMap) -> Self {
        let get =
            |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        Self {
            if_match: get(header::IF_MATCH),
            if_none_match: get(header::IF_NONE_MATCH),
        }
    }

    fn tags(list: &str) -> impl Iterator<Item = &str> {
        list.split(',').map(|t| t.trim().trim_start_matches("W/"))
    }

    fn matches(list: &str, etag: &str) -> bool {
        let etag = etag.trim_start_matches("W/");
        Self::tags(list).any(|t| t == "*" || t == etag)
    }

    /// Refuses a write when `If-Match` names another version than the rendered resource's.
    fn check_write(&self, resource: &Value) -> Result<(), ScimError> {
        let Some(current) = resource["meta"]["version"].as_str() else {
            return Ok(());
        };
        match &self.if_match {
            Some(list) if !Self::matches(list, current) => Err(ScimError {
                status: StatusCode::PRECONDITION_FAILED,
                scim_type: Some("invalidVers"),
                detail: format!("the resource changed: its version is {current}"),
                challenge: None,
            }),
            _ => Ok(()),
        }
    }
}

/// What an operation produced, before it is put on the wire (or into a Bulk response).
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    location: Option<String>,
    etag: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
            etag: None,
        }
    }

    fn resource(status: StatusCode, body: Value, version: Version) -> Self {
        let location = body["meta"]["location"].as_str().map(str::to_string);
        let etag = match version {
            Version::V2 => body["meta"]["version"].as_str().map(str::to_string),
            Version::V1 => None,
        };
        Self {
            status,
            body: Some(body),
            location,
            etag,
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            location: None,
            etag: None,
        }
    }
}

impl ScimService {
    pub fn new(
        base_path: &str,
        settings: ScimSettings,
        state: Arc<ScimState>,
        auth: Arc<Authenticator>,
        provisioner: Option<Arc<Provisioner>>,
        max_body_bytes: u64,
    ) -> Self {
        Self {
            base_path: base_path.to_string(),
            auth,
            settings,
            state,
            provisioner,
            max_body_bytes,
            body_read_timeout: std::time::Duration::from_secs(30),
        }
    }

    /// How long a request body may stop arriving before the request is answered 408.
    pub fn with_body_read_timeout(mut self, idle: std::time::Duration) -> Self {
        self.body_read_timeout = idle;
        self
    }

    /// A refusal made before the request reached SCIM (framing), in the shape of the version
    /// the path names.
    pub fn refuse(&self, path: &str, e: ScimError) -> Response<Body> {
        render(&e, self.split(path).0)
    }

    pub async fn handle(&self, req: Request<Incoming>, info: RequestInfo) -> Response<Body> {
        let (version, rest) = self.split(req.uri().path());
        match self.serve(req, &info, version, &rest).await {
            Ok(response) => response,
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::warn!(status = e.status.as_u16(), detail = %e.detail, "SCIM request failed");
                }
                render(&e, version)
            }
        }
    }

    /// The answer to a path the router found ambiguous, shaped for the version it seems to aim at.
    pub fn refuse_ambiguous(&self, path: &str) -> Response<Body> {
        let lenient = crate::router::lenient_normalize(path);
        let v2_base = format!("{}/v2", crate::router::normalize(&self.base_path)).to_lowercase();
        let version = if lenient == v2_base || lenient.starts_with(&format!("{v2_base}/")) {
            Version::V2
        } else {
            Version::V1
        };
        let e = ScimError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the path could be read as one under the SCIM provider; write it plainly, e.g. {}/Users",
                self.base_path
            ),
        );
        render(&e, version)
    }

    /// The version and the path under the version's base. The path is normalised the way the
    /// router classified it, so a disguised path is served, not refused.
    fn split(&self, path: &str) -> (Version, String) {
        let normalized = crate::router::normalize(path);
        let base = crate::router::normalize(&self.base_path);
        let rest = if normalized.len() >= base.len()
            && normalized[..base.len()].eq_ignore_ascii_case(&base)
        {
            normalized[base.len()..].to_string()
        } else {
            String::new()
        };
        let first = rest.split('/').find(|s| !s.is_empty()).unwrap_or("");
        if first.eq_ignore_ascii_case("v2") {
            (
                Version::V2,
                rest[rest.find(first).map_or(0, |i| i + 2)..].to_string(),
            )
        } else if first.eq_ignore_ascii_case("v1") {
            (
                Version::V1,
                rest[rest.find(first).map_or(0, |i| i + 2)..].to_string(),
            )
        } else {
            (Version::V1, rest)
        }
    }

    fn prefix(&self, version: Version, rest_had_v1: bool) -> String {
        match (version, rest_had_v1) {
            (Version::V2, _) => format!("{}/v2", self.base_path),
            (Version::V1, true) => format!("{}/v1", self.base_path),
            (Version::V1, false) => self.base_path.clone(),
        }
    }

    /// The endpoint a path under the version base names.
    fn endpoint(&self, version: Version, rest: &str) -> Result<Endpoint, ScimError> {
        let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(last) = segments.last_mut() {
            if let Some(stem) = strip_suffix_ignore_case(last, ".json") {
                *last = stem;
            } else if strip_suffix_ignore_case(last, ".xml").is_some() {
                return Err(ScimError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "only JSON is supported",
                ));
            }
        }
        let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
        let v2 = version == Version::V2;
        let endpoint = match segments.as_slice() {
            [r] if is(r, "Users") => Endpoint::Resources(Resource::Users, None),
            [r] if is(r, "Groups") => Endpoint::Resources(Resource::Groups, None),
            [r, s] if v2 && is(r, "Users") && is(s, ".search") => {
                Endpoint::Search(Some(Resource::Users))
            }
            [r, s] if v2 && is(r, "Groups") && is(s, ".search") => {
                Endpoint::Search(Some(Resource::Groups))
            }
            [r, id] if is(r, "Users") => Endpoint::Resources(Resource::Users, Some(id.to_string())),
            [r, id] if is(r, "Groups") => {
                Endpoint::Resources(Resource::Groups, Some(id.to_string()))
            }
            [s] if v2 && is(s, ".search") => Endpoint::Search(None),
            [s] if is(s, "ServiceProviderConfigs") || is(s, "ServiceProviderConfig") => {
                Endpoint::ServiceProviderConfig
            }
            [s] if v2 && is(s, "ResourceTypes") => Endpoint::ResourceTypes(None),
            [s, id] if v2 && is(s, "ResourceTypes") => {
                Endpoint::ResourceTypes(Some(id.to_string()))
            }
            [s] if is(s, "Schemas") => Endpoint::Schemas(None),
            [s, id] if is(s, "Schemas") => Endpoint::Schemas(Some(id.to_string())),
            [s] if is(s, "Bulk") => Endpoint::Bulk,
            [s] if v2 && is(s, "Me") => Endpoint::Me,
            _ => {
                return Err(ScimError::not_found(format!(
                    "{rest} is not a SCIM endpoint; try Users or Groups"
                )))
            }
        };
        Ok(endpoint)
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        info: &RequestInfo,
        version: Version,
        rest: &str,
    ) -> Result<Response<Body>, ScimError> {
        if !self.state.enabled() {
            return Err(ScimError::not_found("SCIM is not enabled on this server"));
        }
        let authenticated = self
            .auth
            .authenticate(req.headers(), req.uri().query(), info.client)
            .await;
        if let Err(e) = authenticated {
            tracing::info!(client = %info.client, reason = %e, "SCIM request refused");
            crate::metrics::metrics()
                .count("scimgate_auth_failures_total", &[("reason", e.kind())]);
            let status = match e {
                AuthError::InsufficientScope(_) => StatusCode::FORBIDDEN,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::DuplicateCredentials => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut err = ScimError::new(status, e.to_string());
            err.challenge = e.challenge();
            return Err(err);
        }
        if !self.state.started() {
            return Err(crate::provisioning::ProvisionError::Stopped.into());
        }
        let had_v1 = req
            .uri()
            .path()
            .to_ascii_lowercase()
            .contains(&format!("{}/v1", self.base_path.to_ascii_lowercase()));
        let endpoint = self.endpoint(version, rest)?;
        let method = effective_method(&req);
        // Discovery is read-only: refuse writes before reading whatever body they carry.
        if matches!(
            endpoint,
            Endpoint::ServiceProviderConfig | Endpoint::ResourceTypes(_) | Endpoint::Schemas(_)
        ) {
            only_get(&method)?;
        }
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let conditions = Conditions::from_headers(req.headers());
        let ctx = Context {
            version,
            origin_prefix: format!("{}{}", info.origin, self.prefix(version, had_v1)),
            actor: Actor {
                client: info.client.to_string(),
            },
        };
        let operation = operation_name(&endpoint, &method);
        let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
            let body = self.body(req).await;
            if let (Err(e), Some(p), false) = (
                &body,
                &self.provisioner,
                method == Method::POST && matches!(endpoint, Endpoint::Search(_)),
            ) {
                p.audit_refusal(&ctx.actor, operation, rest, &e.detail);
            }
            Some(body?)
        } else {
            None
        };
        let result = self
            .execute(&ctx, &method, endpoint, &query, body, &conditions)
            .await;
        let status = match &result {
            Ok(r) => r.status,
            Err(e) => e.status,
        };
        crate::metrics::metrics().count(
            "scimgate_scim_operations_total",
            &[
                (
                    "version",
                    if version == Version::V1 { "1.1" } else { "2.0" },
                ),
                ("operation", operation),
                ("status", crate::metrics::status_label(status.as_u16())),
            ],
        );
        Ok(to_response(result?, version))
    }

    fn provisioner(&self) -> Result<&Provisioner, ScimError> {
        self.provisioner.as_deref().ok_or_else(|| {
            ScimError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provisioning is not configured: add a [platform] table with the platform's app key",
            )
        })
    }

    async fn body(&self, req: Request<Incoming>) -> Result<Value, ScimError> {
        check_content_type(req.headers())?;
        let bytes = read_limited(req.into_body(), self.max_body_bytes, self.body_read_timeout)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(_) => {
                    ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                }
                BodyError::Incomplete => ScimError::bad_request("invalidSyntax", e.to_string()),
                BodyError::Stalled(_) => ScimError::new(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::bad_request("invalidSyntax", format!("the body is not valid JSON: {e}"))
        })
    }
}

/// A short, bounded name for the metrics label: resource and verb.
fn operation_name(endpoint: &Endpoint, method: &Method) -> &'static str {
    match (endpoint, method.as_str()) {
        (Endpoint::Resources(Resource::Users, None), "GET") => "users_list",
        (Endpoint::Resources(Resource::Users, Some(_)), "GET") => "users_get",
        (Endpoint::Resources(Resource::Users, None), "POST") => "users_create",
        (Endpoint::Resources(Resource::Users, Some(_)), "PUT") => "users_replace",
        (Endpoint::Resources(Resource::Users, Some(_)), "PATCH") => "users_patch",
        (Endpoint::Resources(Resource::Users, Some(_)), "DELETE") => "users_delete",
        (Endpoint::Resources(Resource::Groups, None), "GET") => "groups_list",
        (Endpoint::Resources(Resource::Groups, Some(_)), "GET") => "groups_get",
        (Endpoint::Resources(Resource::Groups, None), "POST") => "groups_create",
        (Endpoint::Resources(Resource::Groups, Some(_)), "PUT") => "groups_replace",
        (Endpoint::Resources(Resource::Groups, Some(_)), "PATCH") => "groups_patch",
        (Endpoint::Resources(Resource::Groups, Some(_)), "DELETE") => "groups_delete",
        (Endpoint::Search(_), _) => "search",
        (Endpoint::Bulk, _) => "bulk",
        (
            Endpoint::ServiceProviderConfig | Endpoint::ResourceTypes(_) | Endpoint::Schemas(_),
            _,
        ) => "discovery",
        _ => "other",
    }
}

/// Also advertised as `bulk.maxOperations` in `/ServiceProviderConfig`.
pub(crate) const BULK_MAX_OPERATIONS: usize = 100;

/// The version being spoken and where its resources live, for one request.
struct Context {
    version: Version,
    /// `scheme://host/<base>[/v1|/v2]`.
    origin_prefix: String,
    actor: Actor,
}

impl Context {
    fn dialect(&self) -> Dialect {
        match self.version {
            Version::V1 => Dialect::V1,
            Version::V2 => Dialect::V2,
        }
    }

    fn render_user(&self, user: &crate::provisioning::UserRecord) -> Value {
        let location = format!("{}/Users/{}", self.origin_prefix, user.id);
        match self.version {
            Version::V1 => v1::render_user(user, &location),
            Version::V2 => v2::render_user(user, &location),
        }
    }

    fn render_group(&self, group: &crate::provisioning::GroupRecord) -> Value {
        let location = format!("{}/Groups/{}", self.origin_prefix, group.id);
        match self.version {
            Version::V1 => v1::render_group(group, &location),
            Version::V2 => v2::render_group(group, &location),
        }
    }
}

fn to_response(reply: Reply, version: Version) -> Response<Body> {
    let mut response = match &reply.body {
        Some(body) => Response::new(full(body.to_string())),
        None => Response::new(crate::body::empty()),
    };
    *response.status_mut() = reply.status;
    if reply.body.is_some() {
        let content_type = match version {
            Version::V1 => "application/json",
            Version::V2 => "application/scim+json",
        };
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if reply.status == StatusCode::CREATED {
        if let Some(l) = reply
            .location
            .as_deref()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            response.headers_mut().insert(header::LOCATION, l);
        }
    }
    if let Some(e) = reply
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        response.headers_mut().insert(header::ETAG, e);
    }
    response
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// PingFederate's SCIM clients may tunnel PUT/PATCH/DELETE through POST.
fn effective_method(req: &Request<Incoming>) -> Method {
    if req.method() == Method::POST {
        if let Some(m) = req
            .headers()
            .get("x-http-method-override")
            .and_then(|v| v.to_str().ok())
        {
            for candidate in [Method::PUT, Method::PATCH, Method::DELETE] {
                if m.trim().eq_ignore_ascii_case(candidate.as_str()) {
                    return candidate;
                }
            }
        }
    }
    req.method().clone()
}

/// A write's body must say it is JSON (RFC 7644 §3.1 names `application/scim+json`; PingFederate
/// and many clients send `application/json`), checked before a byte of it is read. A body with
/// no Content-Type is still parsed as JSON: some identity providers' scripts omit it, and the
/// parse refuses anything that is not.
fn check_content_type(headers: &http::HeaderMap) -> Result<(), ScimError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    let unsupported = |what: String| {
        Err(ScimError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{what}; send application/scim+json or application/json"),
        ))
    };
    if values.next().is_some() {
        return unsupported("more than one Content-Type was sent".into());
    }
    let media_type = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if media_type.eq_ignore_ascii_case("application/scim+json")
        || media_type.eq_ignore_ascii_case("application/json")
    {
        Ok(())
    } else {
        unsupported(format!(
            "the body's Content-Type {:?} is not JSON",
            media_type.chars().take(100).collect::<String>()
        ))
    }
}

fn only_get(method: &Method) -> Result<(), ScimError> {
    if method == Method::GET {
        Ok(())
    } else {
        Err(ScimError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; discovery endpoints are read-only"),
        ))
    }
}

fn method_not_allowed(method: &str, endpoint: &str, with_id: bool) -> ScimError {
    let allowed = if with_id {
        "GET, PUT, PATCH or DELETE"
    } else {
        "GET or POST"
    };
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on /{endpoint}{}; use {allowed}",
            if with_id { "/{id}" } else { "" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_accepted_and_others_refused() {
        let check = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_TYPE, v.parse().unwrap());
            }
            check_content_type(&h).map_err(|e| e.status)
        };
        for ok in [
            &[][..],
            &["application/json"],
            &["application/scim+json"],
            &["Application/SCIM+JSON; charset=utf-8"],
            &["application/json;charset=UTF-8"],
        ] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
        for refused in [
            &["text/plain"][..],
            &["application/x-www-form-urlencoded"],
            &["application/jsonx"],
            &["application/xml; x=application/json"],
            &["application/json", "application/json"],
            &[""],
        ] {
            assert_eq!(
                check(refused),
                Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                "{refused:?}"
            );
        }
    }
}
