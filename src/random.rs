//! Random values from the operating system's secure generator.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

#[derive(Debug, thiserror::Error)]
#[error("no secure random numbers are available")]
pub(crate) struct NoRandom;

pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], NoRandom> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| NoRandom)?;
    Ok(bytes)
}

/// 256 random bits in URL- and header-safe text (43 characters).
pub(crate) fn token() -> Result<String, NoRandom> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<32>()?))
}

/// A password nobody will type: 256 random bits, with a suffix that satisfies password policies
/// demanding every character class.
pub(crate) fn password() -> Result<String, NoRandom> {
    Ok(format!("{}aA1!", token()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_differ_and_have_every_character_class() {
        let (a, b) = (
            password().unwrap_or_default(),
            password().unwrap_or_default(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 47);
        assert!(a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()));
        assert!(a.chars().any(|c| !c.is_ascii_alphanumeric()));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(password().unwrap().len() >= 32);
    }
}
