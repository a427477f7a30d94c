//! The SCIM service under the platform's SCIM base path: routing, authentication, the
//! subsystem's enabled/started state, query handling (filter, sort, paging, attributes), and
//! the version codecs. Provisioning decisions are made in `crate::provisioning`.

pub mod discovery;
pub mod error;
pub mod filter;
pub mod mapping;
pub mod urn;
pub mod v1;
pub mod v2;

use crate::auth::{AuthError, Authenticator};
use crate::body::{full, read_limited, Body, BodyError};
use crate::config::ScimSettings;
use crate::platform::names;
use crate::provisioning::{group_id_for, id_for, Actor, Provisioner};
use error::{render, ScimError, Version};
use filter::{AttrPath, Dialect, Filter};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
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

    /// One SCIM operation, independent of HTTP so Bulk can run it too.
    async fn execute(
        &self,
        ctx: &Context,
        method: &Method,
        endpoint: Endpoint,
        query: &Query,
        body: Option<Value>,
        conditions: &Conditions,
    ) -> Result<Reply, ScimError> {
        let v = ctx.version;
        let discovery_base = ctx.origin_prefix.clone();
        match endpoint {
            Endpoint::ServiceProviderConfig => {
                only_get(method)?;
                let doc = match v {
                    Version::V1 => v1::service_provider_config(
                        "https://github.com/scimgate/scimgate#readme",
                        self.settings.max_results,
                        &self.auth.schemes(),
                    ),
                    Version::V2 => discovery::service_provider_config(
                        &discovery_base,
                        self.settings.max_results,
                        self.max_body_bytes,
                        &self.auth.schemes(),
                    ),
                };
                Ok(Reply::json(StatusCode::OK, doc))
            }
            Endpoint::ResourceTypes(id) => {
                only_get(method)?;
                let mapped = self
                    .provisioner
                    .as_ref()
                    .map(|p| p.policy().config.user_attributes.clone())
                    .unwrap_or_else(crate::builtin::default_user_attributes);
                let types = discovery::resource_types(&discovery_base, &mapped);
                match id {
                    None => Ok(Reply::json(StatusCode::OK, v2::list(types.len(), 1, types))),
                    Some(id) => types
                        .into_iter()
                        .find(|t| {
                            t["id"]
                                .as_str()
                                .is_some_and(|i| i.eq_ignore_ascii_case(&id))
                        })
                        .map(|t| Reply::json(StatusCode::OK, t))
                        .ok_or_else(|| {
                            ScimError::not_found(format!("resource type {id} not found"))
                        }),
                }
            }
            Endpoint::Schemas(id) => {
                only_get(method)?;
                let schemas = match v {
                    Version::V1 => v1::schemas(),
                    Version::V2 => {
                        let policy = self.provisioner.as_ref().map(|p| p.policy());
                        let mapped = policy
                            .as_ref()
                            .map(|p| p.config.user_attributes.clone())
                            .unwrap_or_else(crate::builtin::default_user_attributes);
                        let external = policy
                            .as_ref()
                            .is_none_or(|p| p.config.stores_user_external_id());
                        discovery::schemas(&discovery_base, &mapped, external)
                    }
                };
                match id {
                    None => Ok(Reply::json(
                        StatusCode::OK,
                        list(v, schemas.len(), 1, schemas),
                    )),
                    Some(id) => find_schema(v, schemas, &id)
                        .map(|s| Reply::json(StatusCode::OK, s))
                        .ok_or_else(|| ScimError::not_found(format!("schema {id} not found"))),
                }
            }
            Endpoint::Me => Err(ScimError::new(
                StatusCode::NOT_IMPLEMENTED,
                "/Me is not supported: SCIM callers are identity providers, not users",
            )),
            Endpoint::Bulk => {
                if v == Version::V1 {
                    return Err(ScimError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "Bulk is not supported in SCIM 1.1",
                    ));
                }
                if method != Method::POST {
                    return Err(method_not_allowed(method.as_str(), "Bulk", false));
                }
                Box::pin(self.bulk(ctx, body.unwrap_or(Value::Null))).await
            }
            Endpoint::Search(resource) => {
                if method != Method::POST {
                    return Err(method_not_allowed(method.as_str(), ".search", false));
                }
                let query = Query::from_search(body.as_ref().unwrap_or(&Value::Null))?;
                let p = self.provisioner()?;
                match resource {
                    Some(r) => self.list(ctx, p, r, &query).await,
                    None => self.search_all(ctx, p, &query).await,
                }
            }
            Endpoint::Resources(resource, id) => {
                let p = self.provisioner()?;
                match (method.as_str(), id) {
                    ("GET", None) => self.list(ctx, p, resource, query).await,
                    ("GET", Some(id)) => {
                        let rendered = self.read(ctx, p, resource, &id).await?;
                        if let (Version::V2, Some(list)) = (v, &conditions.if_none_match) {
                            if let Some(tag) = rendered["meta"]["version"].as_str() {
                                if Conditions::matches(list, tag) {
                                    let mut r = Reply::empty(StatusCode::NOT_MODIFIED);
                                    r.etag = Some(tag.to_string());
                                    return Ok(r);
                                }
                            }
                        }
                        Ok(Reply::resource(
                            StatusCode::OK,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("POST", None) => {
                        let body = body.unwrap_or(Value::Null);
                        let rendered = match resource {
                            Resource::Users => {
                                let change = match v {
                                    Version::V1 => v1::parse_user(&body, v1::Mode::Create),
                                    Version::V2 => v2::parse_user(&body, v1::Mode::Create),
                                };
                                let change = audited(p, ctx, "create_user", "", change)?;
                                warn_unstored(p, "users_create", &body, &change);
                                let user = p
                                    .create_user(&ctx.actor, change)
                                    .await
                                    .map_err(|e| user_write_error(p, e))?;
                                ctx.render_user(&user)
                            }
                            Resource::Groups => {
                                let change = v1::parse_group(&body, v1::Mode::Create);
                                let change = audited(p, ctx, "create_group", "", change)?;
                                let group = p.create_group(&ctx.actor, change).await?;
                                ctx.render_group(&group)
                            }
                        };
                        Ok(Reply::resource(
                            StatusCode::CREATED,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("PUT", Some(id)) | ("PATCH", Some(id)) => {
                        let body = body.unwrap_or(Value::Null);
                        let patch = method == Method::PATCH;
                        // The record read for the version check (and for applying a PATCH) is
                        // handed on, so the update does not read it from the platform again.
                        let rendered = match resource {
                            Resource::Users => {
                                let op = "update_user";
                                let record = p.user_for_change(&ctx.actor, op, &id).await?;
                                let target = record.user_name.clone();
                                let current = ctx.render_user(&record);
                                audited(p, ctx, op, &target, conditions.check_write(&current))?;
                                // A 2.0 PATCH is checked as the patched resource: what the
                                // operations added is in it, next to what is already stored.
                                let parsed = match (v, patch) {
                                    (Version::V1, false) => {
                                        v1::parse_user(&body, v1::Mode::Replace).map(|c| (c, None))
                                    }
                                    (Version::V1, true) => {
                                        v1::parse_user(&body, v1::Mode::Patch).map(|c| (c, None))
                                    }
                                    (Version::V2, false) => {
                                        v2::parse_user(&body, v1::Mode::Replace).map(|c| (c, None))
                                    }
                                    (Version::V2, true) => v2::patched_user(&current, &body)
                                        .map(|(change, doc)| (change, Some(doc))),
                                };
                                let (change, patched) = audited(p, ctx, op, &target, parsed)?;
                                let operation = if patch {
                                    "users_patch"
                                } else {
                                    "users_replace"
                                };
                                warn_unstored(
                                    p,
                                    operation,
                                    patched.as_ref().unwrap_or(&body),
                                    &change,
                                );
                                let user = p
                                    .update_read_user(&ctx.actor, record, change)
                                    .await
                                    .map_err(|e| user_write_error(p, e))?;
                                ctx.render_user(&user)
                            }
                            Resource::Groups => {
                                let op = "update_group";
                                let record = p.group_for_change(&ctx.actor, op, &id).await?;
                                let target = record.platform_name.clone();
                                // Rendered (all its members) only to compare versions.
                                if conditions.if_match.is_some() {
                                    let check = conditions.check_write(&ctx.render_group(&record));
                                    audited(p, ctx, op, &target, check)?;
                                }
                                let change = match (v, patch) {
                                    (_, false) => v1::parse_group(&body, v1::Mode::Replace),
                                    (Version::V1, true) => v1::parse_group(&body, v1::Mode::Patch),
                                    (Version::V2, true) => v2::patch_group(&body),
                                };
                                let change = audited(p, ctx, op, &target, change)?;
                                let group = p.update_read_group(&ctx.actor, record, change).await?;
                                if patch && v == Version::V2 && self.settings.group_patch_no_content
                                {
                                    return Ok(Reply::empty(StatusCode::NO_CONTENT));
                                }
                                ctx.render_group(&group)
                            }
                        };
                        Ok(Reply::resource(
                            StatusCode::OK,
                            respond(v, rendered, query),
                            v,
                        ))
                    }
                    ("DELETE", Some(id)) => {
                        if v == Version::V2 && conditions.if_match.is_some() {
                            let (current, target) = match resource {
                                Resource::Users => {
                                    let record =
                                        p.user_for_change(&ctx.actor, "delete_user", &id).await?;
                                    (ctx.render_user(&record), record.user_name)
                                }
                                Resource::Groups => {
                                    let record =
                                        p.group_for_change(&ctx.actor, "delete_group", &id).await?;
                                    (ctx.render_group(&record), record.platform_name)
                                }
                            };
                            let op = match resource {
                                Resource::Users => "delete_user",
                                Resource::Groups => "delete_group",
                            };
                            audited(p, ctx, op, &target, conditions.check_write(&current))?;
                        }
                        match resource {
                            Resource::Users => p.delete_user(&ctx.actor, &id).await?,
                            Resource::Groups => p.delete_group(&ctx.actor, &id).await?,
                        }
                        Ok(Reply::empty(match v {
                            Version::V1 => StatusCode::OK,
                            Version::V2 => StatusCode::NO_CONTENT,
                        }))
                    }
                    (m, id) => Err(method_not_allowed(
                        m,
                        match resource {
                            Resource::Users => "Users",
                            Resource::Groups => "Groups",
                        },
                        id.is_some(),
                    )),
                }
            }
        }
    }

    async fn read(
        &self,
        ctx: &Context,
        p: &Provisioner,
        resource: Resource,
        id: &str,
    ) -> Result<Value, ScimError> {
        Ok(match resource {
            Resource::Users => ctx.render_user(&p.get_user(id).await?),
            Resource::Groups => ctx.render_group(&p.get_group(id).await?),
        })
    }

    async fn list(
        &self,
        ctx: &Context,
        p: &Provisioner,
        resource: Resource,
        query: &Query,
    ) -> Result<Reply, ScimError> {
        let (total, start, items) = match resource {
            Resource::Users => self.list_users(ctx, p, query).await?,
            Resource::Groups => self.list_groups(ctx, p, query).await?,
        };
        let items = items
            .into_iter()
            .map(|v| respond(ctx.version, v, query))
            .collect();
        Ok(Reply::json(
            StatusCode::OK,
            list(ctx.version, total, start, items),
        ))
    }

    /// A search at the root covers users and groups; a filter that names attributes only one of
    /// them has simply matches nothing of the other.
    async fn search_all(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<Reply, ScimError> {
        let unpaged = Query {
            start_index: 1,
            count: Some(self.settings.max_results),
            ..query.clone()
        };
        let users = self.list_users(ctx, p, &unpaged).await;
        let groups = self.list_groups(ctx, p, &unpaged).await;
        let mut all = Vec::new();
        match (users, groups) {
            (Err(e), Err(_)) => return Err(e),
            (u, g) => {
                for part in [u, g].into_iter().flatten() {
                    all.extend(part.2);
                }
            }
        }
        let (total, start, page) = self.page(all, query);
        let page = page
            .into_iter()
            .map(|v| respond(ctx.version, v, query))
            .collect();
        Ok(Reply::json(
            StatusCode::OK,
            list(ctx.version, total, start, page),
        ))
    }

    /// SCIM 2.0 Bulk: operations in order, `bulkId:` references replaced by the ids created
    /// earlier in the request, stopping after `failOnErrors` errors.
    async fn bulk(&self, ctx: &Context, body: Value) -> Result<Reply, ScimError> {
        let ops = body
            .get("Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ScimError::bad_request("invalidSyntax", "a BulkRequest needs Operations")
            })?;
        if ops.len() > BULK_MAX_OPERATIONS {
            return Err(ScimError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {BULK_MAX_OPERATIONS} operations per Bulk request"),
            ));
        }
        let fail_on = body
            .get("failOnErrors")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let mut created: Vec<(String, String)> = Vec::new();
        let mut results = Vec::new();
        let mut errors = 0usize;
        for op in ops {
            if fail_on.is_some_and(|n| errors >= n) {
                break;
            }
            let method = op
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_uppercase();
            let bulk_id = op.get("bulkId").and_then(Value::as_str).map(str::to_string);
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            let outcome = async {
                let path = substitute_str(path, &created)?;
                let data = match op.get("data") {
                    Some(d) => Some(substitute(d.clone(), &created)?),
                    None => None,
                };
                let method = Method::from_bytes(method.as_bytes())
                    .map_err(|_| ScimError::bad_request("invalidSyntax", "unknown bulk method"))?;
                if !matches!(
                    method,
                    Method::POST | Method::PUT | Method::PATCH | Method::DELETE
                ) {
                    return Err(ScimError::bad_request(
                        "invalidSyntax",
                        "bulk methods are POST, PUT, PATCH and DELETE",
                    ));
                }
                let endpoint = self.endpoint(Version::V2, &path)?;
                if !matches!(endpoint, Endpoint::Resources(..)) {
                    return Err(ScimError::bad_request(
                        "invalidPath",
                        "bulk operations address Users and Groups",
                    ));
                }
                let conditions = Conditions {
                    if_match: op
                        .get("version")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    if_none_match: None,
                };
                Box::pin(self.execute(ctx, &method, endpoint, &Query::default(), data, &conditions))
                    .await
            }
            .await;
            let mut result = json!({"method": method});
            if let Some(b) = &bulk_id {
                result["bulkId"] = json!(b);
            }
            match outcome {
                Ok(reply) => {
                    if let (Some(b), Some(body)) = (&bulk_id, &reply.body) {
                        if let Some(id) = body["id"].as_str() {
                            created.push((b.clone(), id.to_string()));
                        }
                    }
                    if let Some(l) = reply.location {
                        result["location"] = json!(l);
                    }
                    if let Some(e) = reply.etag {
                        result["version"] = json!(e);
                    }
                    result["status"] = json!(reply.status.as_u16().to_string());
                }
                Err(e) => {
                    errors += 1;
                    result["status"] = json!(e.status.as_u16().to_string());
                    let mut response = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": e.status.as_u16().to_string(),
                        "detail": e.detail,
                    });
                    if let Some(t) = e.scim_type {
                        response["scimType"] = json!(t);
                    }
                    result["response"] = response;
                }
            }
            results.push(result);
        }
        Ok(Reply::json(
            StatusCode::OK,
            json!({"schemas": [urn::BULK_RESPONSE], "Operations": results}),
        ))
    }

    /// Users a lookup names, read one by one; the whole filter is still applied to them.
    async fn lookup_users(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
        filter: Option<&Filter>,
        names: Vec<String>,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let mut found = p.read_users(distinct(names)).await?;
        // Two spellings may reach one user (a userName and an id, say).
        let mut seen = std::collections::HashSet::new();
        found.retain(|u| seen.insert(u.id.clone()));
        let mut kept: Vec<Value> = found
            .iter()
            .map(|u| ctx.render_user(u))
            .filter(|v| filter.is_none_or(|f| filter::matches(f, v, &case_exact)))
            .collect();
        sort(&mut kept, query, |v| v, "userName");
        Ok(self.page(kept, query))
    }

    /// Lists users: cheap filters (on `userName`/`id`) run on names alone and only the page is
    /// read in full; anything else reads candidates in full, up to `max_filter_candidates`.
    async fn list_users(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(ctx.dialect(), USER_ATTRIBUTES)?;
        // `userName eq "x"` is what every identity provider sends before a create, and the
        // platform looks names up case-insensitively, as SCIM compares userName: one read per
        // name asked for (and an `or` of them) answers it, however many users the platform
        // holds. The filter is still applied to what was read.
        if let Some(keys) = filter.as_ref().and_then(user_lookup_keys) {
            let mut names = Vec::new();
            let mut by_lookup = true;
            for key in keys {
                match key {
                    UserKey::Name(name) => names.push(name),
                    // An externalId kept as a tag is found in one call; kept in an extension
                    // property, it can only be found by reading the candidates (below).
                    UserKey::ExternalId(external_id) => {
                        match p.user_names_with_external_id(&external_id).await? {
                            Some(found) => names.extend(found),
                            None => {
                                by_lookup = false;
                                break;
                            }
                        }
                    }
                }
            }
            if by_lookup {
                return self
                    .lookup_users(ctx, p, query, filter.as_ref(), names)
                    .await;
            }
        }
        let names = p.user_names().await?;
        let cheap = |path: &AttrPath| {
            path.urn.is_none()
                && path.sub_attr.is_none()
                && (path.attr.eq_ignore_ascii_case("userName")
                    || path.attr.eq_ignore_ascii_case("id"))
        };
        let filter_is_cheap = filter
            .as_ref()
            .is_none_or(|f| filter::attribute_paths(f).iter().all(cheap));
        let sort_is_cheap = query.sort_by.as_ref().is_none_or(cheap);
        if filter_is_cheap && sort_is_cheap {
            let mut kept: Vec<(String, Value)> = names
                .into_iter()
                .map(|n| {
                    let stub = json!({"id": id_for(&n), "userName": n});
                    (n, stub)
                })
                .filter(|(_, stub)| {
                    filter
                        .as_ref()
                        .is_none_or(|f| filter::matches(f, stub, &case_exact))
                })
                .collect();
            sort(&mut kept, query, |(_, v)| v, "userName");
            let (total, start, page) = self.page(kept, query);
            let items = p
                .read_users(page.into_iter().map(|(n, _)| n).collect())
                .await?
                .iter()
                .map(|u| ctx.render_user(u))
                .collect();
            return Ok((total, start, items));
        }
        if names.len() > self.settings.max_filter_candidates {
            return Err(ScimError::bad_request(
                "tooMany",
                format!(
                    "this filter needs the attributes of all {} users (more than scim.max_filter_candidates = {}); filter on userName instead",
                    names.len(),
                    self.settings.max_filter_candidates
                ),
            ));
        }
        let rendered: Vec<Value> = p
            .read_users(names)
            .await?
            .iter()
            .map(|u| ctx.render_user(u))
            .collect();
        let mut kept: Vec<Value> = rendered
            .into_iter()
            .filter(|v| {
                filter
                    .as_ref()
                    .is_none_or(|f| filter::matches(f, v, &case_exact))
            })
            .collect();
        sort(&mut kept, query, |v| v, "userName");
        Ok(self.page(kept, query))
    }

    async fn list_groups(
        &self,
        ctx: &Context,
        p: &Provisioner,
        query: &Query,
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(ctx.dialect(), GROUP_ATTRIBUTES)?;
        let policy = p.policy();
        // The lookups identity providers make before they create or link a group (`displayName`,
        // `id` or `externalId eq`, or an `or` of them) read only the groups they name: a name
        // or id is read directly, an externalId is found by its tag in one call. The filter is
        // still applied to what was read.
        if let Some(keys) = filter.as_ref().and_then(group_lookup_keys) {
            let mut names = Vec::new();
            for key in keys {
                match key {
                    GroupKey::DisplayName(display) => names.push(policy.platform_group(&display)),
                    GroupKey::Name(name) => names.push(name),
                    GroupKey::ExternalId(external_id) => {
                        names.extend(p.group_names_with_external_id(&external_id).await?)
                    }
                }
            }
            let mut rendered: Vec<Value> = p
                .read_groups(distinct(names))
                .await?
                .iter()
                .map(|g| ctx.render_group(g))
                .filter(|v| {
                    filter
                        .as_ref()
                        .is_none_or(|f| filter::matches(f, v, &case_exact))
                })
                .collect();
            sort(&mut rendered, query, |v| v, "displayName");
            return Ok(self.page(rendered, query));
        }
        let cheap = |path: &AttrPath| {
            path.urn.is_none()
                && path.sub_attr.is_none()
                && (path.attr.eq_ignore_ascii_case("displayName")
                    || path.attr.eq_ignore_ascii_case("id"))
        };
        let filter_is_cheap = filter
            .as_ref()
            .is_none_or(|f| filter::attribute_paths(f).iter().all(cheap));
        let sort_is_cheap = query.sort_by.as_ref().is_none_or(cheap);
        let names = p.group_names().await?;
        let mut kept: Vec<(String, Value)> = names
            .into_iter()
            .map(|n| {
                let stub = json!({"id": group_id_for(&n), "displayName": policy.idp_group(&n)});
                (n, stub)
            })
            .collect();
        if filter_is_cheap {
            kept.retain(|(_, stub)| {
                filter
                    .as_ref()
                    .is_none_or(|f| filter::matches(f, stub, &case_exact))
            });
        }
        if filter_is_cheap && sort_is_cheap {
            sort(&mut kept, query, |(_, v)| v, "displayName");
            let (total, start, page) = self.page(kept, query);
            let items = p
                .read_groups(page.into_iter().map(|(n, _)| n).collect())
                .await?
                .iter()
                .map(|g| ctx.render_group(g))
                .collect();
            return Ok((total, start, items));
        }
        if kept.len() > self.settings.max_filter_candidates {
            return Err(ScimError::bad_request(
                "tooMany",
                "this filter needs every group's members; filter on displayName instead",
            ));
        }
        let mut rendered: Vec<Value> = p
            .read_groups(kept.into_iter().map(|(n, _)| n).collect())
            .await?
            .iter()
            .map(|g| ctx.render_group(g))
            .collect();
        rendered.retain(|v| {
            filter
                .as_ref()
                .is_none_or(|f| filter::matches(f, v, &case_exact))
        });
        sort(&mut rendered, query, |v| v, "displayName");
        Ok(self.page(rendered, query))
    }

    /// 1-based paging; without `count`, everything up to `scim.max_results` (some identity
    /// providers never page and must still see every group).
    fn page<T>(&self, items: Vec<T>, query: &Query) -> (usize, usize, Vec<T>) {
        let total = items.len();
        let start = query.start_index.max(1);
        let count = query
            .count
            .unwrap_or(self.settings.max_results)
            .min(self.settings.max_results);
        let page = items.into_iter().skip(start - 1).take(count).collect();
        (total, start, page)
    }
}

/// One WARN line per user write that carries attributes the mapping cannot store, naming them
/// (never their values): the request succeeds, so without it the loss would go unnoticed.
fn warn_unstored(
    p: &Provisioner,
    operation: &'static str,
    body: &Value,
    change: &crate::provisioning::UserChange,
) {
    let policy = p.policy();
    let names = mapping::unstored(
        body,
        change,
        &policy.config.user_attributes,
        policy.config.stores_user_external_id(),
    );
    if !names.is_empty() {
        tracing::warn!(
            operation,
            attributes = %names.join(", "),
            "the request carries SCIM attributes the attribute mapping does not store; they were not written (map them in [provisioning.user_attributes])"
        );
    }
}

/// A user write the platform refused because the configured mapping names a property its
/// `UserExtensions` shape lacks: the gateway's fault, so a 500 that names the setting to fix,
/// and an ERROR line for the operator. Anything else converts as usual.
fn user_write_error(p: &Provisioner, e: crate::provisioning::ProvisionError) -> ScimError {
    let crate::provisioning::ProvisionError::Platform(
        crate::platform::PlatformError::MissingProperties { properties },
    ) = &e
    else {
        return e.into();
    };
    let policy = p.policy();
    let settings: Vec<String> = mapping::property_settings(&policy.config)
        .into_iter()
        .filter(|(_, property)| properties.contains(property))
        .map(|(setting, property)| format!("{setting} = {property:?}"))
        .collect();
    let settings = if settings.is_empty() {
        "provisioning.user_attributes or provisioning.external_id_property".to_string()
    } else {
        settings.join(", ")
    };
    let missing = properties
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::error!(
        properties = %missing,
        settings = %settings,
        "the attribute mapping names user extension properties the platform lacks; correct the setting or add the properties to the UserExtensions thing shape"
    );
    ScimError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "the gateway's configuration does not fit the platform: {settings} names a user extension property the platform's UserExtensions thing shape does not have ({missing}); an operator must correct the setting or add the property to the shape"
        ),
    )
}

/// A short, bounded name for the metrics label: resource and verb.
/// A write the SCIM layer refuses itself (a body it cannot parse, a failed precondition) gets
/// its audit line here, as the provisioning core's refusals get theirs.
fn audited<T>(
    p: &Provisioner,
    ctx: &Context,
    operation: &str,
    target: &str,
    result: Result<T, ScimError>,
) -> Result<T, ScimError> {
    if let Err(e) = &result {
        p.audit_refusal(&ctx.actor, operation, target, &e.detail);
    }
    result
}

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

/// Also advertised as `bulk.maxOperations` in `/ServiceProviderConfig`.
pub(crate) const BULK_MAX_OPERATIONS: usize = 100;

/// Replaces `bulkId:<id>` references with the ids the earlier operations created.
fn substitute(value: Value, created: &[(String, String)]) -> Result<Value, ScimError> {
    Ok(match value {
        Value::String(s) => Value::String(substitute_str(&s, created)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| substitute(i, created))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| Ok((k, substitute(v, created)?)))
                .collect::<Result<_, ScimError>>()?,
        ),
        other => other,
    })
}

fn substitute_str(s: &str, created: &[(String, String)]) -> Result<String, ScimError> {
    let Some(pos) = s.find("bulkId:") else {
        return Ok(s.to_string());
    };
    let reference = &s[pos + "bulkId:".len()..];
    let end = reference.find(['/', '"', ' ']).unwrap_or(reference.len());
    let wanted = &reference[..end];
    let id = created
        .iter()
        .find(|(b, _)| b == wanted)
        .map(|(_, id)| id)
        .ok_or_else(|| {
            ScimError::bad_request(
                "invalidValue",
                format!("bulkId {wanted} does not name an earlier operation"),
            )
        })?;
    Ok(format!("{}{id}{}", &s[..pos], &reference[end..]))
}

fn find_schema(version: Version, schemas: Vec<Value>, id: &str) -> Option<Value> {
    let wanted = match version {
        Version::V1 if id.eq_ignore_ascii_case("Groups") || id.eq_ignore_ascii_case("Group") => 1,
        Version::V1
            if id.eq_ignore_ascii_case("Users")
                || id.eq_ignore_ascii_case("User")
                || id.eq_ignore_ascii_case(v1::CORE) =>
        {
            0
        }
        Version::V1 => return None,
        Version::V2 => {
            return schemas
                .into_iter()
                .find(|s| s["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
        }
    };
    schemas.into_iter().nth(wanted)
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

/// Attributes a user filter may name: what the gateway stores (plus `groups`, read back).
const USER_ATTRIBUTES: &[&str] = &[
    "id",
    "externalId",
    "userName",
    "name",
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "profileUrl",
    "active",
    "emails",
    "phoneNumbers",
    "addresses",
    "groups",
];
const GROUP_ATTRIBUTES: &[&str] = &["id", "displayName", "members", "externalId"];
const ENTERPRISE_ATTRIBUTES: &[&str] = &[
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

fn case_exact(path: &AttrPath) -> bool {
    path.urn.is_none()
        && path.sub_attr.is_none()
        && (path.attr.eq_ignore_ascii_case("id") || path.attr.eq_ignore_ascii_case("externalId"))
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

fn list(version: Version, total: usize, start: usize, items: Vec<Value>) -> Value {
    if version == Version::V2 {
        return v2::list(total, start, items);
    }
    json!({
        "totalResults": total,
        "itemsPerPage": items.len(),
        "startIndex": start,
        "schemas": [v1::CORE],
        "Resources": items,
    })
}

#[derive(Clone)]
struct Query {
    filter: Option<String>,
    sort_by: Option<AttrPath>,
    sort_bad: Option<String>,
    descending: bool,
    start_index: usize,
    count: Option<usize>,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filter: None,
            sort_by: None,
            sort_bad: None,
            descending: false,
            start_index: 1,
            count: None,
            attributes: Vec::new(),
            excluded: Vec::new(),
        }
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

impl Query {
    /// A SCIM 2.0 SearchRequest body: the query parameters as JSON. A member of the wrong JSON
    /// type is refused, never ignored: an ignored `filter` would answer a full listing to a
    /// client that asked for a few resources. `null` counts as absent.
    fn from_search(body: &Value) -> Result<Self, ScimError> {
        let Some(o) = body.as_object() else {
            return Err(ScimError::bad_request(
                "invalidSyntax",
                "a SearchRequest is a JSON object",
            ));
        };
        let get = |k: &str| {
            o.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let wrong = |name: &str, expected: &str| {
            ScimError::bad_request("invalidValue", format!("{name} must be {expected}"))
        };
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(wrong(name, "a string")),
            }
        };
        let strings = |name: &str| -> Result<Vec<String>, ScimError> {
            match get(name) {
                None => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(split_list(s)),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| wrong(name, "a list of attribute names"))
                    })
                    .collect(),
                Some(_) => Err(wrong(name, "a list of attribute names")),
            }
        };
        let integer = |name: &str| -> Result<Option<i64>, ScimError> {
            match get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                            .map(|f| f as i64)
                    })
                    .map(Some)
                    .ok_or_else(|| wrong(name, "an integer")),
                Some(_) => Err(wrong(name, "an integer")),
            }
        };
        let filter = match get("filter") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ScimError::bad_request(
                    "invalidFilter",
                    format!(
                        "filter must be a string, not {}",
                        crate::config::import::json_type(other)
                    ),
                ))
            }
        };
        let mut q = Query {
            filter,
            attributes: strings("attributes")?,
            excluded: strings("excludedAttributes")?,
            descending: text("sortOrder")?.is_some_and(|s| s.eq_ignore_ascii_case("descending")),
            start_index: integer("startIndex")?.unwrap_or(1).max(1) as usize,
            count: integer("count")?.map(|c| c.max(0) as usize),
            ..Query::default()
        };
        if let Some(s) = text("sortBy")? {
            match parse_attr_path(&s) {
                Some(p) => q.sort_by = Some(p),
                None => q.sort_bad = Some(s),
            }
        }
        Ok(q)
    }

    fn parse(raw: &str) -> Self {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode_query_value(v);
            // Unknown parameters (Entra adds its own flags) are ignored, as SCIM asks.
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = Some(v),
                "sortby" => match parse_attr_path(&v) {
                    Some(p) => q.sort_by = Some(p),
                    None => q.sort_bad = Some(v),
                },
                "sortorder" => q.descending = v.eq_ignore_ascii_case("descending"),
                "startindex" => {
                    q.start_index = v.trim().parse::<i64>().unwrap_or(1).max(1) as usize
                }
                "count" => q.count = Some(v.trim().parse::<i64>().unwrap_or(0).max(0) as usize),
                "attributes" => q.attributes = split_list(&v),
                "excludedattributes" => q.excluded = split_list(&v),
                _ => {}
            }
        }
        q
    }

    /// Parses the filter and refuses attributes the gateway cannot evaluate: a silently empty
    /// or full listing would mislead the identity provider.
    fn filter(&self, dialect: Dialect, supported: &[&str]) -> Result<Option<Filter>, ScimError> {
        if let Some(bad) = &self.sort_bad {
            return Err(ScimError::bad_request(
                "invalidValue",
                format!("sortBy {bad:?} is not an attribute name"),
            ));
        }
        if let Some(s) = &self.sort_by {
            if !supported.iter().any(|a| a.eq_ignore_ascii_case(&s.attr)) {
                return Err(ScimError::bad_request(
                    "invalidValue",
                    format!(
                        "cannot sort by {}: not an attribute scimgate serves",
                        s.attr
                    ),
                ));
            }
        }
        let Some(text) = self.filter.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Ok(None);
        };
        let parsed = filter::parse(text, dialect).map_err(|e| {
            ScimError::bad_request("invalidFilter", format!("invalid filter {text:?}: {e}"))
        })?;
        for path in filter::attribute_paths(&parsed) {
            // A URN-qualified name is fine when the URN is the resource's own core schema, or the
            // enterprise extension for its attributes.
            let core_urn = path.urn.as_deref().is_none_or(|u| {
                u.eq_ignore_ascii_case(urn::USER) || u.eq_ignore_ascii_case(urn::GROUP)
            });
            let enterprise = path
                .urn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(urn::ENTERPRISE))
                && ENTERPRISE_ATTRIBUTES
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&path.attr));
            // `meta.lastModified` is rendered when the platform gives it, so it filters like
            // any attribute; `meta.created` never is.
            let last_modified = core_urn
                && path.attr.eq_ignore_ascii_case("meta")
                && path
                    .sub_attr
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("lastModified"));
            let known = enterprise
                || last_modified
                || (core_urn && supported.iter().any(|a| a.eq_ignore_ascii_case(&path.attr)));
            if !known {
                return Err(ScimError::bad_request(
                    "invalidFilter",
                    format!(
                        "cannot filter on {}: scimgate filters on {}",
                        path.attr,
                        supported.join(", ")
                    ),
                ));
            }
        }
        Ok(Some(parsed))
    }
}

fn parse_attr_path(text: &str) -> Option<AttrPath> {
    let text = text.trim();
    let (attr, sub) = match text.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (text, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-')
    };
    (valid(attr) && sub.is_none_or(valid)).then(|| AttrPath {
        urn: None,
        attr: attr.to_string(),
        sub_attr: sub.map(str::to_string),
    })
}

fn decode_query_value(v: &str) -> String {
    let spaced = v.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The value a sort key reads from a rendered resource.
fn sort_key(resource: &Value, path: &AttrPath) -> Option<String> {
    let obj = resource.as_object()?;
    let (_, v) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&path.attr))?;
    let v = match (&path.sub_attr, v) {
        (Some(sub), Value::Object(o)) => o.iter().find(|(k, _)| k.eq_ignore_ascii_case(sub))?.1,
        (Some(sub), Value::Array(items)) => {
            items.iter().filter_map(|i| i.as_object()).find_map(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(sub))
                    .map(|(_, v)| v)
            })?
        }
        (None, Value::Array(items)) => items.first()?.get("value")?,
        (_, v) => v,
    };
    Some(match v {
        Value::String(s) => names::fold(s),
        other => other.to_string(),
    })
}

fn sort<T>(items: &mut [T], query: &Query, view: impl Fn(&T) -> &Value, default: &str) {
    let path = query.sort_by.clone().unwrap_or(AttrPath {
        urn: None,
        attr: default.to_string(),
        sub_attr: None,
    });
    // Resources without the attribute go last whatever the order.
    items.sort_by(|a, b| {
        let (ka, kb) = (sort_key(view(a), &path), sort_key(view(b), &path));
        match (ka, kb) {
            (Some(x), Some(y)) if query.descending => y.cmp(&x),
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
}

/// The equality terms of a filter that is one `attr eq "value"` or an `or` of them.
fn equality_terms(f: &Filter) -> Option<Vec<(&AttrPath, &str)>> {
    match f {
        Filter::Or(a, b) => {
            let mut terms = equality_terms(a)?;
            terms.extend(equality_terms(b)?);
            Some(terms)
        }
        other => filter::as_simple_equality(other).map(|t| vec![t]),
    }
}

/// The core attribute a path names (no sub-attribute; no URN, or the core schema's).
fn core_attribute<'a>(path: &'a AttrPath, core2: &str) -> Option<&'a str> {
    let core = path
        .urn
        .as_deref()
        .is_none_or(|u| u.eq_ignore_ascii_case(core2) || u.eq_ignore_ascii_case(v1::CORE));
    (core && path.sub_attr.is_none()).then_some(path.attr.as_str())
}

/// What a user lookup names.
#[derive(Debug, PartialEq)]
enum UserKey {
    /// A platform name: the userName asked for, or the name an id encodes.
    Name(String),
    ExternalId(String),
}

/// The users a filter of the form `userName eq`, `id eq` or `externalId eq`, or an `or` of
/// them, asks for; `None` for any other filter. An id that decodes to no name adds nothing.
fn user_lookup_keys(f: &Filter) -> Option<Vec<UserKey>> {
    let mut keys = Vec::new();
    for (path, value) in equality_terms(f)? {
        let attr = core_attribute(path, urn::USER)?;
        if attr.eq_ignore_ascii_case("userName") {
            keys.push(UserKey::Name(value.to_string()));
        } else if attr.eq_ignore_ascii_case("id") {
            keys.extend(crate::provisioning::name_for(value).map(UserKey::Name));
        } else if attr.eq_ignore_ascii_case("externalId") {
            keys.push(UserKey::ExternalId(value.to_string()));
        } else {
            return None;
        }
    }
    Some(keys)
}

/// What a group lookup names.
#[derive(Debug, PartialEq)]
enum GroupKey {
    /// The identity provider's name, mapped to the platform's.
    DisplayName(String),
    /// The platform name, from an id.
    Name(String),
    ExternalId(String),
}

/// The groups a filter of the form `displayName eq`, `id eq` or `externalId eq`, or an `or` of
/// them, asks for; `None` for any other filter.
fn group_lookup_keys(f: &Filter) -> Option<Vec<GroupKey>> {
    let mut keys = Vec::new();
    for (path, value) in equality_terms(f)? {
        let attr = core_attribute(path, urn::GROUP)?;
        if attr.eq_ignore_ascii_case("displayName") {
            keys.push(GroupKey::DisplayName(value.to_string()));
        } else if attr.eq_ignore_ascii_case("id") {
            keys.extend(crate::provisioning::group_name_for(value).map(GroupKey::Name));
        } else if attr.eq_ignore_ascii_case("externalId") {
            keys.push(GroupKey::ExternalId(value.to_string()));
        } else {
            return None;
        }
    }
    Some(keys)
}

/// Names without repeats, compared as the platform compares them, in first-seen order.
fn distinct(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !out.iter().any(|n| names::same(n, &name)) {
            out.push(name);
        }
    }
    out
}

/// The resource as the response carries it: projected by `attributes`/`excludedAttributes`,
/// and in 2.0 without the attributes whose `returned` is `request` unless they were asked for.
fn respond(version: Version, resource: Value, query: &Query) -> Value {
    let mut out = project(resource, &query.attributes, &query.excluded);
    if version == Version::V2 {
        let asked = |name: &str| {
            query.attributes.iter().any(|a| {
                let short = a.rsplit_once(':').map_or(a.as_str(), |(_, s)| s);
                short.eq_ignore_ascii_case(name)
            })
        };
        // Member names are derived, not stored with the membership, so `/Schemas` marks
        // `members.display` as returned on request: a client that round-trips `members` gets
        // back exactly what it sent.
        if !asked("members.display") {
            if let Some(Value::Array(members)) = out.get_mut("members") {
                for m in members.iter_mut().filter_map(Value::as_object_mut) {
                    m.remove("display");
                }
            }
        }
    }
    out
}

/// Keeps only the requested attributes, or drops the excluded ones (`id`, `schemas` and
/// `meta` always return).
fn project(resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let resource = if excluded.is_empty() {
        resource
    } else {
        exclude(resource, excluded)
    };
    if attributes.is_empty() {
        return resource;
    }
    let Value::Object(obj) = resource else {
        return resource;
    };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let always = ["id", "schemas", "meta"].contains(&k.as_str());
        let whole = attributes.iter().any(|a| a.eq_ignore_ascii_case(&k));
        if always || whole {
            out.insert(k, v);
            continue;
        }
        let subs: Vec<&str> = attributes
            .iter()
            .filter_map(|a| a.split_once('.'))
            .filter(|(attr, _)| attr.eq_ignore_ascii_case(&k))
            .map(|(_, sub)| sub)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let keep = |o: &serde_json::Map<String, Value>| -> serde_json::Map<String, Value> {
            o.iter()
                .filter(|(sk, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(sk)))
                .map(|(sk, sv)| (sk.clone(), sv.clone()))
                .collect()
        };
        match v {
            Value::Object(o) => {
                out.insert(k, Value::Object(keep(&o)));
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items
                    .iter()
                    .filter_map(|i| i.as_object().map(|o| Value::Object(keep(o))))
                    .collect();
                out.insert(k, Value::Array(kept));
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn exclude(resource: Value, excluded: &[String]) -> Value {
    let Value::Object(mut obj) = resource else {
        return resource;
    };
    for name in excluded {
        if ["id", "schemas", "meta"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name))
        {
            continue;
        }
        match name.split_once('.') {
            None => obj.retain(|k, _| !k.eq_ignore_ascii_case(name)),
            Some((attr, sub)) => {
                if let Some((_, v)) = obj.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(attr)) {
                    match v {
                        Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
                        Value::Array(items) => items
                            .iter_mut()
                            .filter_map(Value::as_object_mut)
                            .for_each(|o| o.retain(|k, _| !k.eq_ignore_ascii_case(sub))),
                        _ => {}
                    }
                }
            }
        }
    }
    Value::Object(obj)
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

    #[test]
    fn queries_parse_leniently() {
        let q = Query::parse("filter=userName+eq+%22a%40b%22&startIndex=0&count=-5&sortOrder=descending&attributes=userName,name.givenName&aadOptscim062020");
        assert_eq!(q.filter.as_deref(), Some("userName eq \"a@b\""));
        assert_eq!(q.start_index, 1);
        assert_eq!(q.count, Some(0));
        assert!(q.descending);
        assert_eq!(q.attributes, vec!["userName", "name.givenName"]);
    }

    #[test]
    fn search_bodies_of_the_wrong_type_are_refused() {
        for filter in [json!(5), json!(true), json!({}), json!(["userName pr"])] {
            let e = Query::from_search(&json!({ "filter": filter }))
                .err()
                .unwrap();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{filter}");
        }
        for (k, v) in [
            ("attributes", json!(5)),
            ("attributes", json!([1])),
            ("excludedAttributes", json!(true)),
            ("sortBy", json!(3)),
            ("sortOrder", json!(false)),
            ("startIndex", json!("1")),
            ("count", json!(1.5)),
        ] {
            let e = Query::from_search(&json!({ k: v })).err().unwrap();
            assert_eq!(e.scim_type, Some("invalidValue"), "{k}: {v}");
        }
        let Ok(q) = Query::from_search(&json!({"filter": null, "count": 2.0, "attributes": null}))
        else {
            panic!("null members are absent");
        };
        assert!(q.filter.is_none() && q.attributes.is_empty());
        assert_eq!(q.count, Some(2));
    }

    #[test]
    fn projection_keeps_id_and_requested_parts() {
        let v = json!({"id": "1", "userName": "u", "title": "t", "name": {"givenName": "g", "familyName": "f"},
                       "emails": [{"value": "e", "type": "work"}], "schemas": ["x"]});
        let p = project(
            v,
            &[
                "userName".into(),
                "name.givenName".into(),
                "emails.value".into(),
            ],
            &[],
        );
        assert_eq!(
            p,
            json!({"id": "1", "userName": "u", "name": {"givenName": "g"},
                             "emails": [{"value": "e"}], "schemas": ["x"]})
        );
    }

    #[test]
    fn lookups_are_recognised_only_for_equalities_joined_by_or() {
        let parse = |text: &str| filter::parse(text, Dialect::V2).unwrap();
        let id = crate::provisioning::id_for("bob");
        assert_eq!(
            user_lookup_keys(&parse(&format!(
                "userName eq \"Ann\" or (id eq \"{id}\" or id eq \"not base64!\") or externalId eq \"e9\""
            ))),
            Some(vec![
                UserKey::Name("Ann".to_string()),
                UserKey::Name("bob".to_string()),
                UserKey::ExternalId("e9".to_string())
            ])
        );
        for other in [
            "userName eq \"a\" and id eq \"b\"",
            "userName sw \"a\"",
            "userName eq \"a\" or title eq \"b\"",
            "emails.value eq \"a\"",
            "externalId sw \"x\"",
        ] {
            assert_eq!(user_lookup_keys(&parse(other)), None, "{other}");
        }
        assert_eq!(
            group_lookup_keys(&parse(
                "externalId eq \"e1\" or urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq \"Ops\""
            )),
            Some(vec![
                GroupKey::ExternalId("e1".into()),
                GroupKey::DisplayName("Ops".into())
            ])
        );
        assert_eq!(group_lookup_keys(&parse("members.value eq \"x\"")), None);
        assert_eq!(
            group_lookup_keys(&parse("not (displayName eq \"x\")")),
            None
        );
    }

    #[test]
    fn unsupported_filters_are_refused_not_ignored() {
        let q = Query::parse("filter=meta.created+gt+%222011-05-13T04:42:34Z%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).is_err());
        let q = Query::parse("filter=meta.lastModified+gt+%222011-05-13T04:42:34Z%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).unwrap().is_some());
        let q = Query::parse("filter=userName+eq");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).is_err());
        let q = Query::parse("filter=UserName+Eq+%22x%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).unwrap().is_some());
    }

    #[test]
    fn sorting_puts_missing_values_last() {
        let mut items = vec![
            json!({"userName": "b"}),
            json!({}),
            json!({"userName": "A"}),
        ];
        let q = Query::parse("sortBy=userName");
        sort(&mut items, &q, |v| v, "userName");
        assert_eq!(items[0]["userName"], "A");
        assert_eq!(items[2], json!({}));
    }
}
