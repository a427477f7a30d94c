//! The SCIM service under the platform's SCIM base path: routing, authentication, the
//! subsystem's enabled/started state, query handling (filter, sort, paging, attributes), and
//! the version codecs. Provisioning decisions are made in `crate::provisioning`.

pub mod error;
pub mod filter;
pub mod v1;

use crate::auth::{AuthError, Authenticator};
use crate::body::{full, read_limited, Body, BodyError};
use crate::config::ScimSettings;
use crate::platform::names;
use crate::provisioning::{id_for, Actor, Provisioner};
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
    enabled: bool,
    started: AtomicBool,
}

impl ScimState {
    pub fn new(enabled: bool, auto_start: bool) -> Arc<Self> {
        Arc::new(Self {
            enabled,
            started: AtomicBool::new(enabled && auto_start),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Returns false when SCIM is disabled by configuration and cannot be started.
    pub fn set_started(&self, started: bool) -> bool {
        if !self.enabled {
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
}

enum Endpoint {
    Users(Option<String>),
    Groups(Option<String>),
    ServiceProviderConfigs,
    Schemas(Option<String>),
    Bulk,
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
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, info: RequestInfo) -> Response<Body> {
        let (version, endpoint, prefix) = self.route(req.uri().path());
        match self.serve(req, &info, endpoint, &prefix).await {
            Ok(response) => response,
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::warn!(status = e.status.as_u16(), detail = %e.detail, "SCIM request failed");
                }
                render(&e, version)
            }
        }
    }

    /// Splits the path under the base into version and endpoint. The path is normalised the
    /// way the router classified it, so a disguised path is served, not refused.
    fn route(&self, path: &str) -> (Version, Result<Endpoint, ScimError>, String) {
        let normalized = crate::router::normalize(path);
        let base = crate::router::normalize(&self.base_path);
        let rest = if normalized.len() >= base.len()
            && normalized[..base.len()].eq_ignore_ascii_case(&base)
        {
            &normalized[base.len()..]
        } else {
            ""
        };
        let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (version, prefix) = match segments.first() {
            Some(v) if v.eq_ignore_ascii_case("v1") => {
                segments.remove(0);
                (Version::V1, format!("{}/v1", self.base_path))
            }
            Some(v) if v.eq_ignore_ascii_case("v2") => {
                return (
                    Version::V2,
                    Err(ScimError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "SCIM 2.0 is not served yet; use the SCIM 1.1 base path",
                    )),
                    String::new(),
                );
            }
            _ => (Version::V1, self.base_path.clone()),
        };
        if let Some(last) = segments.last_mut() {
            if let Some(stem) = strip_suffix_ignore_case(last, ".json") {
                *last = stem;
            } else if strip_suffix_ignore_case(last, ".xml").is_some() {
                return (
                    version,
                    Err(ScimError::new(
                        StatusCode::NOT_ACCEPTABLE,
                        "only JSON is supported",
                    )),
                    prefix,
                );
            }
        }
        let id = segments.get(1).map(|s| s.to_string());
        let endpoint = match (segments.first(), segments.len()) {
            (Some(e), 1 | 2) if e.eq_ignore_ascii_case("Users") => Ok(Endpoint::Users(id)),
            (Some(e), 1 | 2) if e.eq_ignore_ascii_case("Groups") => Ok(Endpoint::Groups(id)),
            (Some(e), 1)
                if e.eq_ignore_ascii_case("ServiceProviderConfigs")
                    || e.eq_ignore_ascii_case("ServiceProviderConfig") =>
            {
                Ok(Endpoint::ServiceProviderConfigs)
            }
            (Some(e), 1 | 2) if e.eq_ignore_ascii_case("Schemas") => Ok(Endpoint::Schemas(id)),
            (Some(e), 1) if e.eq_ignore_ascii_case("Bulk") => Ok(Endpoint::Bulk),
            _ => Err(ScimError::not_found(format!(
                "{path} is not a SCIM endpoint; try {}/Users or {}/Groups",
                self.base_path, self.base_path
            ))),
        };
        (version, endpoint, prefix)
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        info: &RequestInfo,
        endpoint: Result<Endpoint, ScimError>,
        prefix: &str,
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
            let status = match e {
                AuthError::InsufficientScope(_) => StatusCode::FORBIDDEN,
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut err = ScimError::new(status, e.to_string());
            err.challenge = e.challenge();
            return Err(err);
        }
        if !self.state.started() {
            return Err(crate::provisioning::ProvisionError::Stopped.into());
        }
        let endpoint = endpoint?;
        let method = effective_method(&req);
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let origin_prefix = format!("{}{prefix}", info.origin);
        let actor = Actor {
            client: info.client.to_string(),
        };

        match endpoint {
            Endpoint::ServiceProviderConfigs => {
                only_get(&method)?;
                let doc = v1::service_provider_config(
                    "https://github.com/scimgate/scimgate#readme",
                    self.settings.max_results,
                );
                Ok(json_response(StatusCode::OK, &doc))
            }
            Endpoint::Schemas(id) => {
                only_get(&method)?;
                let schemas = v1::schemas();
                match id {
                    None => Ok(json_response(
                        StatusCode::OK,
                        &list(schemas.len(), 1, schemas),
                    )),
                    Some(id) => {
                        let wanted = if id.eq_ignore_ascii_case("Groups")
                            || id.eq_ignore_ascii_case("Group")
                        {
                            1
                        } else if id.eq_ignore_ascii_case("Users")
                            || id.eq_ignore_ascii_case("User")
                            || id.eq_ignore_ascii_case(v1::CORE)
                        {
                            0
                        } else {
                            return Err(ScimError::not_found(format!("schema {id} not found")));
                        };
                        Ok(json_response(StatusCode::OK, &schemas[wanted]))
                    }
                }
            }
            Endpoint::Bulk => Err(ScimError::new(
                StatusCode::NOT_IMPLEMENTED,
                "Bulk is not supported",
            )),
            Endpoint::Users(id) => {
                let p = self.provisioner()?;
                self.users(p, req, &method, id, &query, &origin_prefix, &actor)
                    .await
            }
            Endpoint::Groups(id) => {
                let p = self.provisioner()?;
                self.groups(p, req, &method, id, &query, &origin_prefix, &actor)
                    .await
            }
        }
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
        let bytes = read_limited(req.into_body(), self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(_) => {
                    ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                }
                BodyError::Incomplete => ScimError::bad_request("invalidSyntax", e.to_string()),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::bad_request("invalidSyntax", format!("the body is not valid JSON: {e}"))
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn users(
        &self,
        p: &Provisioner,
        req: Request<Incoming>,
        method: &Method,
        id: Option<String>,
        query: &Query,
        origin_prefix: &str,
        actor: &Actor,
    ) -> Result<Response<Body>, ScimError> {
        let location = |id: &str| format!("{origin_prefix}/Users/{id}");
        match (method.as_str(), id) {
            ("GET", None) => {
                let (total, start, items) = self.list_users(p, query, &location).await?;
                let items = items
                    .into_iter()
                    .map(|v| project(v, &query.attributes))
                    .collect();
                Ok(json_response(StatusCode::OK, &list(total, start, items)))
            }
            ("GET", Some(id)) => {
                let user = p.get_user(&id).await?;
                let v = v1::render_user(&user, &location(&user.id));
                Ok(json_response(
                    StatusCode::OK,
                    &project(v, &query.attributes),
                ))
            }
            ("POST", None) => {
                let body = self.body(req).await?;
                let change = v1::parse_user(&body, v1::Mode::Create)?;
                let user = p.create_user(actor, change).await?;
                let loc = location(&user.id);
                let mut response =
                    json_response(StatusCode::CREATED, &v1::render_user(&user, &loc));
                if let Ok(l) = HeaderValue::from_str(&loc) {
                    response.headers_mut().insert(header::LOCATION, l);
                }
                Ok(response)
            }
            ("PUT", Some(id)) | ("PATCH", Some(id)) => {
                let mode = if method == Method::PUT {
                    v1::Mode::Replace
                } else {
                    v1::Mode::Patch
                };
                let body = self.body(req).await?;
                let change = v1::parse_user(&body, mode)?;
                let user = p.update_user(actor, &id, change).await?;
                let v = v1::render_user(&user, &location(&user.id));
                Ok(json_response(
                    StatusCode::OK,
                    &project(v, &query.attributes),
                ))
            }
            ("DELETE", Some(id)) => {
                p.delete_user(actor, &id).await?;
                Ok(empty_response(StatusCode::OK))
            }
            (m, id) => Err(method_not_allowed(m, "Users", id.is_some())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn groups(
        &self,
        p: &Provisioner,
        req: Request<Incoming>,
        method: &Method,
        id: Option<String>,
        query: &Query,
        origin_prefix: &str,
        actor: &Actor,
    ) -> Result<Response<Body>, ScimError> {
        let location = |id: &str| format!("{origin_prefix}/Groups/{id}");
        match (method.as_str(), id) {
            ("GET", None) => {
                let (total, start, items) = self.list_groups(p, query, &location).await?;
                let items = items
                    .into_iter()
                    .map(|v| project(v, &query.attributes))
                    .collect();
                Ok(json_response(StatusCode::OK, &list(total, start, items)))
            }
            ("GET", Some(id)) => {
                let group = p.get_group(&id).await?;
                let v = v1::render_group(&group, &location(&group.id));
                Ok(json_response(
                    StatusCode::OK,
                    &project(v, &query.attributes),
                ))
            }
            ("POST", None) => {
                let body = self.body(req).await?;
                let change = v1::parse_group(&body, v1::Mode::Create)?;
                let group = p.create_group(actor, change).await?;
                let loc = location(&group.id);
                let mut response =
                    json_response(StatusCode::CREATED, &v1::render_group(&group, &loc));
                if let Ok(l) = HeaderValue::from_str(&loc) {
                    response.headers_mut().insert(header::LOCATION, l);
                }
                Ok(response)
            }
            ("PUT", Some(id)) | ("PATCH", Some(id)) => {
                let mode = if method == Method::PUT {
                    v1::Mode::Replace
                } else {
                    v1::Mode::Patch
                };
                let body = self.body(req).await?;
                let change = v1::parse_group(&body, mode)?;
                let group = p.update_group(actor, &id, change).await?;
                let v = v1::render_group(&group, &location(&group.id));
                Ok(json_response(
                    StatusCode::OK,
                    &project(v, &query.attributes),
                ))
            }
            ("DELETE", Some(id)) => {
                p.delete_group(actor, &id).await?;
                Ok(empty_response(StatusCode::OK))
            }
            (m, id) => Err(method_not_allowed(m, "Groups", id.is_some())),
        }
    }

    /// Lists users: cheap filters (on `userName`/`id`) run on names alone and only the page is
    /// read in full; anything else reads candidates in full, up to `max_filter_candidates`.
    async fn list_users(
        &self,
        p: &Provisioner,
        query: &Query,
        location: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(Dialect::V1, USER_ATTRIBUTES)?;
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
                .map(|u| v1::render_user(u, &location(&u.id)))
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
            .map(|u| v1::render_user(u, &location(&u.id)))
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
        p: &Provisioner,
        query: &Query,
        location: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<(usize, usize, Vec<Value>), ScimError> {
        let filter = query.filter(Dialect::V1, GROUP_ATTRIBUTES)?;
        let policy = p.policy();
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
                let stub = json!({"id": id_for(&n), "displayName": policy.idp_group(&n)});
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
                .map(|g| v1::render_group(g, &location(&g.id)))
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
            .map(|g| v1::render_group(g, &location(&g.id)))
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
const GROUP_ATTRIBUTES: &[&str] = &["id", "displayName", "members"];

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

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = status;
    response
}

fn list(total: usize, start: usize, items: Vec<Value>) -> Value {
    json!({
        "totalResults": total,
        "itemsPerPage": items.len(),
        "startIndex": start,
        "schemas": [v1::CORE],
        "Resources": items,
    })
}

struct Query {
    filter: Option<String>,
    sort_by: Option<AttrPath>,
    sort_bad: Option<String>,
    descending: bool,
    start_index: usize,
    count: Option<usize>,
    attributes: Vec<String>,
}

impl Query {
    fn parse(raw: &str) -> Self {
        let mut q = Query {
            filter: None,
            sort_by: None,
            sort_bad: None,
            descending: false,
            start_index: 1,
            count: None,
            attributes: Vec::new(),
        };
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
                "attributes" => {
                    q.attributes = v
                        .split(',')
                        .map(|a| a.trim().to_string())
                        .filter(|a| !a.is_empty())
                        .collect()
                }
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
            let known =
                path.urn.is_none() && supported.iter().any(|a| a.eq_ignore_ascii_case(&path.attr));
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

/// Keeps only the requested attributes (and `id`, `schemas`, `meta`, which always return).
fn project(resource: Value, attributes: &[String]) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        );
        assert_eq!(
            p,
            json!({"id": "1", "userName": "u", "name": {"givenName": "g"},
                             "emails": [{"value": "e"}], "schemas": ["x"]})
        );
    }

    #[test]
    fn unsupported_filters_are_refused_not_ignored() {
        let q = Query::parse("filter=meta.lastModified+gt+%222011-05-13T04:42:34Z%22");
        assert!(q.filter(Dialect::V1, USER_ATTRIBUTES).is_err());
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
