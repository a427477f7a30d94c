//! Stored password hashes.

use aws_lc_rs::pbkdf2;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
///
/// Held as raw bytes behind one pointer: every user carries an `Option<PasswordHash>`, which
/// is then a pointer wide (null for the many users without a password) and costs one small
/// allocation when set, instead of four strings. It is written back in the stored form it was
/// read in, byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PasswordHash(Box<Form>);

/// The two never describe the same stored form, so comparing them compares stored forms.
#[derive(Clone, PartialEq, Eq)]
enum Form {
    /// The form this build writes, whose salt and hash base64-encode back to the text read.
    Standard {
        iterations: NonZeroU32,
        salt: [u8; SALT_BYTES],
        hash: [u8; HASH_BYTES],
    },
    /// Any other form, kept as read: written back unchanged, and checked by `check_form`.
    Other(Box<Stored>),
}

/// The stored form. A damaged one is reported as the stored `PasswordHash` always was.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "PasswordHash", expecting = "struct PasswordHash")]
struct Stored {
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

/// Bytes written as standard base64 text, without an intermediate string.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

impl Serialize for PasswordHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &*self.0 {
            Form::Standard {
                iterations,
                salt,
                hash,
            } => {
                let mut form = serializer.serialize_struct("PasswordHash", 4)?;
                form.serialize_field("algorithm", ALGORITHM)?;
                form.serialize_field("iterations", &iterations.get())?;
                form.serialize_field("salt", &Base64(salt))?;
                form.serialize_field("hash", &Base64(hash))?;
                form.end()
            }
            Form::Other(stored) => stored.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        Ok(PasswordHash(Box::new(
            standard(&stored).unwrap_or_else(|| Form::Other(Box::new(stored))),
        )))
    }
}

/// The standard form of `stored`, when it is one and writes back as exactly the same text.
fn standard(stored: &Stored) -> Option<Form> {
    if stored.algorithm != ALGORITHM {
        return None;
    }
    let iterations = NonZeroU32::new(stored.iterations)?;
    let salt: [u8; SALT_BYTES] = STANDARD.decode(&stored.salt).ok()?.try_into().ok()?;
    let hash: [u8; HASH_BYTES] = STANDARD.decode(&stored.hash).ok()?.try_into().ok()?;
    let same_text = STANDARD.encode(salt) == stored.salt && STANDARD.encode(hash) == stored.hash;
    same_text.then_some(Form::Standard {
        iterations,
        salt,
        hash,
    })
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
        Ok(PasswordHash(Box::new(Form::Standard {
            iterations,
            salt,
            hash: out,
        })))
    }

    /// Whether the stored form is one this build can check; run when the state is loaded so a
    /// damaged entry is reported then, not as a mysterious login failure.
    pub fn check_form(&self) -> Result<(), String> {
        let Form::Other(stored) = &*self.0 else {
            return Ok(());
        };
        if stored.algorithm != ALGORITHM {
            return Err(format!("unknown password algorithm {:?}", stored.algorithm));
        }
        decoded(stored)
            .map(|_| ())
            .ok_or_else(|| "malformed password hash".to_string())
    }

    /// Constant-time comparison (inside `pbkdf2::verify`).
    pub fn verify(&self, password: &str) -> bool {
        let checked = |iterations, salt: &[u8], hash: &[u8]| {
            pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                salt,
                password.as_bytes(),
                hash,
            )
            .is_ok()
        };
        match &*self.0 {
            Form::Standard {
                iterations,
                salt,
                hash,
            } => checked(*iterations, salt, hash),
            Form::Other(stored) => match decoded(stored) {
                Some((iterations, salt, hash)) => checked(iterations, &salt, &hash),
                None => false,
            },
        }
    }
}

fn decoded(stored: &Stored) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let iterations = NonZeroU32::new(stored.iterations)?;
    let salt = STANDARD.decode(&stored.salt).ok()?;
    let hash = STANDARD.decode(&stored.hash).ok()?;
    (!hash.is_empty()).then_some((iterations, salt, hash))
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
        assert_ne!(a, b);
        assert!(a.check_form().is_ok());
        assert_eq!(format!("{a:?}"), "PasswordHash(..)");
    }

    /// The stored form's text, fields in the order they are written.
    fn stored(algorithm: &str, iterations: u32, salt: &str, hash: &str) -> String {
        format!(
            r#"{{"algorithm":"{algorithm}","iterations":{iterations},"salt":"{salt}","hash":"{hash}"}}"#
        )
    }

    #[test]
    fn every_stored_form_is_written_back_as_read() {
        let a = PasswordHash::new("correct horse").unwrap();
        let text = serde_json::to_string(&a).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["algorithm"], ALGORITHM);
        assert_eq!(value["iterations"], DEFAULT_ITERATIONS.get());
        let back: PasswordHash = serde_json::from_str(&text).unwrap();
        assert!(matches!(*back.0, Form::Standard { .. }));
        assert_eq!(back, a);
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert!(back.verify("correct horse"));

        // A short salt (an older writer), an unknown algorithm, a zero iteration count, damaged
        // base64, no hash: each is kept exactly as read, and checked as before.
        let salt = STANDARD.encode([7u8; 8]);
        let mut hash = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::MIN,
            &[7u8; 8],
            b"pw",
            &mut hash,
        );
        let hash = STANDARD.encode(hash);
        let cases = [
            (stored(ALGORITHM, 1, &salt, &hash), Ok(()), true),
            (
                stored("md5", 1, &salt, &hash),
                Err("unknown password algorithm \"md5\"".to_string()),
                true,
            ),
            (
                stored(ALGORITHM, 0, &salt, &hash),
                Err("malformed password hash".to_string()),
                false,
            ),
            (
                stored(ALGORITHM, 1, "!!", &hash),
                Err("malformed password hash".to_string()),
                false,
            ),
            (
                stored(ALGORITHM, 1, &salt, ""),
                Err("malformed password hash".to_string()),
                false,
            ),
        ];
        for (text, form, verifies) in cases {
            let read: PasswordHash = serde_json::from_str(&text).unwrap();
            assert!(matches!(*read.0, Form::Other(_)), "{text}");
            assert_eq!(serde_json::to_string(&read).unwrap(), text);
            assert_eq!(read.check_form(), form, "{text}");
            assert_eq!(read.verify("pw"), verifies, "{text}");
        }
        let err = serde_json::from_str::<PasswordHash>("1").unwrap_err();
        assert!(err.to_string().contains("struct PasswordHash"), "{err}");
    }
}
