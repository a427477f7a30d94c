//! The two failure types: the public one for opening and keeping the state, and the per-request
//! one that becomes an HTTP status with a plain-text message.

use http::StatusCode;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DevPlatformError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid development platform state: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot encode the development platform state: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("the system has no secure random numbers to offer")]
    Random,
    #[error("user [{0}] does not exist on the development platform")]
    UnknownUser(String),
    #[error("vocabulary: {0}")]
    Vocabulary(String),
    #[error("[{name}] cannot be an application key name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("application key [{name}] is bound to user [{bound}], not [{requested}]")]
    AppKeyBoundElsewhere {
        name: String,
        bound: String,
        requested: String,
    },
}

impl DevPlatformError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DevPlatformError::Io { path, source }
    }
}

/// A refused request: the status and the platform-style message sent back as `text/plain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub status: StatusCode,
    pub message: String,
    /// The request named no service or entity the platform has: answered as it is, where any
    /// other failure inside a service is answered with the platform's opaque 500.
    pub routing: bool,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Fault {
            status,
            message: message.into(),
            routing: false,
        }
    }

    /// No such service (or resource): the platform answers 404 and names it.
    pub fn no_such_service(message: impl Into<String>) -> Self {
        Fault {
            routing: true,
            ..Fault::not_found(message)
        }
    }

    /// How ThingWorx 9.x/10.x answers any service call that fails while it runs (a duplicate,
    /// a missing principal, a refused password, an unknown property, a missing parameter, an
    /// entity that is not there): HTTP 500 with a bare sentence that names neither the cause
    /// nor the parameter.
    pub fn unable_to_invoke(service: &str, entity: &str) -> Self {
        Fault::internal(format!("Unable to Invoke Service {service} on {entity}"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::NOT_FOUND, message)
    }

    /// Refused deletions of system objects (the `DELETE` verb) and authorisation failures.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::FORBIDDEN, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}
