//! Entity names as the platform treats them: case-insensitive, with a few forbidden characters.

/// The form two names are compared in. The platform ignores case (Unicode-aware, so `Ä`/`ä`
/// collide too), so every comparison of names goes through this.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

pub fn same(a: &str, b: &str) -> bool {
    a == b || fold(a) == fold(b)
}

/// Why a name cannot be an entity name on the platform, or `None` when it can.
pub fn invalid_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a name cannot be empty");
    }
    if name.chars().count() > 255 {
        return Some("a name is at most 255 characters");
    }
    if name.contains(['+', '/', '*', '"', '\\']) {
        return Some("a name cannot contain + / * \" or \\");
    }
    if name.chars().any(char::is_control) {
        return Some("a name cannot contain control characters");
    }
    if name.starts_with(' ') || name.ends_with(' ') || name.contains("  ") {
        return Some("a name cannot start or end with a space or hold two spaces in a row");
    }
    if name.eq_ignore_ascii_case("me") {
        return Some("\"me\" is reserved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ignores_case_beyond_ascii() {
        assert!(same("Administrator", "administrator"));
        assert!(same("Jörg@Example.com", "jörg@example.COM"));
        assert!(!same("a", "b"));
    }

    #[test]
    fn platform_naming_rules() {
        assert!(invalid_reason("jdoe@corp.com").is_none());
        assert!(invalid_reason("Jane Doe").is_none());
        assert!(invalid_reason("ütf ñame").is_none());
        assert!(invalid_reason("a/b").is_some());
        assert!(invalid_reason(" lead").is_some());
        assert!(invalid_reason("two  spaces").is_some());
        assert!(invalid_reason("me").is_some());
        assert!(invalid_reason(&"x".repeat(256)).is_some());
    }
}
