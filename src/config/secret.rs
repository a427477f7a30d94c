//! Secrets in configuration: `env:NAME`, `file:/path`, or a literal value. The resolved value
//! never appears in `Debug` output, so a config dump or an error can't leak it.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Literal(String),
}

impl SecretSource {
    pub fn parse(spec: &str) -> Self {
        if let Some(name) = spec.strip_prefix("env:") {
            SecretSource::Env(name.to_string())
        } else if let Some(path) = spec.strip_prefix("file:") {
            SecretSource::File(PathBuf::from(path))
        } else {
            SecretSource::Literal(spec.to_string())
        }
    }

    /// Reads the secret; the error names where it looked, never what it found.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(name) if name.is_empty() => {
                Err("`env:` needs a variable name after the colon".to_string())
            }
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(value) => {
                    let trimmed = value.trim_end_matches(['\r', '\n']);
                    if trimmed.is_empty() {
                        Err(format!("secret file {} is empty", path.display()))
                    } else {
                        Ok(Secret(trimmed.to_string()))
                    }
                }
                Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
            },
            SecretSource::Literal(value) if value.is_empty() => {
                Err("the value is empty".to_string())
            }
            SecretSource::Literal(value) => Ok(Secret(value.clone())),
        }
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Literal(_) => f.write_str("<literal redacted>"),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// For secrets made at run time (generated keys) rather than read from configuration.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(SecretSource::parse("env:X"), SecretSource::Env("X".into()));
        assert_eq!(
            SecretSource::parse("file:/a/b"),
            SecretSource::File(PathBuf::from("/a/b"))
        );
        assert_eq!(
            SecretSource::parse("plain"),
            SecretSource::Literal("plain".into())
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretSource::parse("hunter2").resolve().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretSource::parse("hunter2")).contains("hunter2"));
    }

    #[test]
    fn file_secret_is_trimmed_and_missing_env_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "value\n").unwrap();
        let s = SecretSource::File(path).resolve().unwrap();
        assert_eq!(s.expose(), "value");
        let err = SecretSource::Env("SCIMGATE_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(err.contains("SCIMGATE_TEST_SURELY_UNSET"));
    }
}
