//! Stored password hashes.

use aws_lc_rs::pbkdf2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU32;

/// High enough to make an offline guess at a stolen state file expensive, low enough that a
/// Basic-authenticated request stays well under the time a test tolerates.
pub(crate) const DEFAULT_ITERATIONS: NonZeroU32 = NonZeroU32::MIN.saturating_add(99_999);
/// The least `scimgate dev --password-hash-iterations` accepts: below it a stolen state file
/// gives its passwords up to a plain dictionary run.
pub(crate) const MIN_ITERATIONS: u32 = 1_000;
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

use crate::random::NoRandom;

/// PBKDF2-HMAC-SHA256 of a password. The iteration count is stored with it so it can be raised
/// later without invalidating existing passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PasswordHash {
    algorithm: String,
    iterations: u32,
    salt: String,
    hash: String,
}

const ALGORITHM: &str = "pbkdf2-hmac-sha256";

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    #[cfg(test)]
    pub fn new(password: &str) -> Result<Self, NoRandom> {
        Self::with_iterations(password, DEFAULT_ITERATIONS)
    }

    pub fn with_iterations(password: &str, iterations: NonZeroU32) -> Result<Self, NoRandom> {
        let salt = crate::random::bytes::<SALT_BYTES>()?;
        let mut out = [0u8; HASH_BYTES];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &mut out,
        );
        Ok(PasswordHash {
            algorithm: ALGORITHM.to_string(),
            iterations: iterations.get(),
            salt: STANDARD.encode(salt),
            hash: STANDARD.encode(out),
        })
    }

    /// Whether the stored form is one this build can check; run when the state is loaded so a
    /// damaged entry is reported then, not as a mysterious login failure.
    pub fn check_form(&self) -> Result<(), String> {
        if self.algorithm != ALGORITHM {
            return Err(format!("unknown password algorithm {:?}", self.algorithm));
        }
        self.decoded()
            .map(|_| ())
            .ok_or_else(|| "malformed password hash".to_string())
    }

    fn decoded(&self) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
        let iterations = NonZeroU32::new(self.iterations)?;
        let salt = STANDARD.decode(&self.salt).ok()?;
        let hash = STANDARD.decode(&self.hash).ok()?;
        (!hash.is_empty()).then_some((iterations, salt, hash))
    }

    /// Constant-time comparison (inside `pbkdf2::verify`).
    pub fn verify(&self, password: &str) -> bool {
        let Some((iterations, salt, hash)) = self.decoded() else {
            return false;
        };
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &hash,
        )
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_salts_differ() {
        let a = PasswordHash::new("correct horse").unwrap();
        let b = PasswordHash::new("correct horse").unwrap();
        assert!(a.verify("correct horse"));
        assert!(!a.verify("correct horsE"));
        assert_ne!(a.salt, b.salt);
        assert!(a.check_form().is_ok());
        assert_eq!(format!("{a:?}"), "PasswordHash(..)");
    }
}
