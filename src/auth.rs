//! Credentials on SCIM requests → an authenticated caller, or a refusal. Pass-through traffic is
//! never authenticated here: the platform does that itself.

use crate::config::Secret;
use http::{header, HeaderMap};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("no SCIM credentials are configured (set scim.bearer_token)")]
    NotConfigured,
}

impl AuthError {
    /// The RFC 6750 challenge for a 401.
    pub fn challenge(&self) -> String {
        match self {
            AuthError::Missing => "Bearer realm=\"scimgate\"".to_string(),
            AuthError::Invalid | AuthError::NotConfigured => format!(
                "Bearer realm=\"scimgate\", error=\"invalid_token\", error_description=\"{self}\""
            ),
        }
    }
}

/// Who the credentials belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
}

pub struct Authenticator {
    bearer_token: Option<Secret>,
}

impl Authenticator {
    pub fn new(bearer_token: Option<Secret>) -> Self {
        Self { bearer_token }
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(expected) = &self.bearer_token else {
            return Err(AuthError::NotConfigured);
        };
        let presented = bearer(headers).ok_or(AuthError::Missing)?;
        // Constant time, so response timing says nothing about how much of a guess was right.
        aws_lc_rs::constant_time::verify_slices_are_equal(
            presented.as_bytes(),
            expected.expose().as_bytes(),
        )
        .map_err(|_| AuthError::Invalid)?;
        Ok(Principal {
            name: "static-bearer".to_string(),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn static_bearer() {
        let a = Authenticator::new(Some(Secret::new("0123456789abcdef-token")));
        assert!(a
            .authenticate(&headers("Bearer 0123456789abcdef-token"))
            .is_ok());
        assert!(a
            .authenticate(&headers("bearer 0123456789abcdef-token"))
            .is_ok());
        assert_eq!(
            a.authenticate(&headers("Bearer wrong")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.authenticate(&headers("Basic abc")),
            Err(AuthError::Missing)
        );
        assert_eq!(a.authenticate(&HeaderMap::new()), Err(AuthError::Missing));
        let none = Authenticator::new(None);
        assert_eq!(
            none.authenticate(&headers("Bearer x")),
            Err(AuthError::NotConfigured)
        );
    }
}
