//! SCIM errors: every failure under the SCIM base path becomes one of these, and [`render`] is
//! the only place that turns one into a response, in the shape of the version being called.

use crate::body::{full, Body};
use crate::platform::PlatformError;
use crate::provisioning::ProvisionError;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    pub status: StatusCode,
    /// SCIM 2.0 `scimType`; 1.1 has no equivalent and drops it.
    pub scim_type: Option<&'static str>,
    pub detail: String,
    /// For 401: the RFC 6750 `WWW-Authenticate` challenge.
    pub challenge: Option<String>,
}

impl ScimError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
            challenge: None,
        }
    }

    pub fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
            challenge: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<PlatformError> for ScimError {
    fn from(e: PlatformError) -> Self {
        let status = match &e {
            PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
            PlatformError::AlreadyExists(_) => StatusCode::CONFLICT,
            // The gateway's own credentials failed: a gateway fault, never the IdP's.
            PlatformError::Unauthorized { .. } => StatusCode::BAD_GATEWAY,
            PlatformError::Rejected(_) => StatusCode::BAD_REQUEST,
            // The gateway's configuration names what the platform lacks: a server fault.
            PlatformError::MissingProperties { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            PlatformError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PlatformError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            PlatformError::NoAnswer(_) => StatusCode::BAD_GATEWAY,
            PlatformError::Unexpected { .. } => StatusCode::BAD_GATEWAY,
        };
        let scim_type = match &e {
            PlatformError::AlreadyExists(_) => Some("uniqueness"),
            PlatformError::Rejected(_) => Some("invalidValue"),
            _ => None,
        };
        let detail = match &e {
            PlatformError::Unauthorized { .. } => {
                "the platform refused the gateway's credentials; check platform.app_key".to_string()
            }
            PlatformError::MissingProperties { .. } => format!(
                "{e}: the gateway's configuration maps a SCIM attribute to it; correct provisioning.user_attributes or provisioning.external_id_property, or add the property to the shape"
            ),
            other => other.to_string(),
        };
        Self {
            status,
            scim_type,
            detail,
            challenge: None,
        }
    }
}

impl From<ProvisionError> for ScimError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::NotFound(what) => Self::not_found(format!("{what} not found")),
            ProvisionError::Hidden { what, .. } => Self::not_found(format!("{what} not found")),
            ProvisionError::Conflict(detail) => Self {
                status: StatusCode::CONFLICT,
                scim_type: Some("uniqueness"),
                detail,
                challenge: None,
            },
            ProvisionError::Refused { detail, .. } => {
                Self::new(StatusCode::FORBIDDEN, format!("refused by policy: {detail}"))
            }
            ProvisionError::Invalid { kind, detail } => Self::bad_request(kind, detail),
            ProvisionError::Platform(p) => p.into(),
            ProvisionError::Partial { detail, first } => {
                let mut e = ScimError::from(*first);
                e.detail = detail;
                e
            }
            ProvisionError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SCIM provisioning is stopped; an operator starts it with POST /scim/start on the admin listener",
            ),
        }
    }
}

pub fn render(e: &ScimError, version: Version) -> Response<Body> {
    let body = match version {
        Version::V1 => json!({"Errors": [{
            "code": e.status.as_u16().to_string(),
            "description": e.detail,
        }]}),
        Version::V2 => {
            let mut v = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": e.status.as_u16().to_string(),
                "detail": e.detail,
            });
            if let Some(t) = e.scim_type {
                v["scimType"] = json!(t);
            }
            v
        }
    };
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = e.status;
    let content_type = match version {
        Version::V1 => "application/json",
        Version::V2 => "application/scim+json",
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(challenge) = e
        .challenge
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}
