//! The one place that decides who answers a request on a gateway listener.
//!
//! The decision is made on a normalised path because the platform (Tomcat) normalises before
//! it routes: if `/Thingworx/SCIMProvider/%53CIM/Users` or `/Thingworx/./SCIMProvider;x/SCIM`
//! were passed through, the platform's own SCIM servlet would answer and skip every policy the
//! gateway enforces.
//!
//! One normalisation cannot be sure to be the container's (versions and settings differ on
//! backslashes, double encoding, trailing dots), so a second, lenient one folds every such
//! trick. A path it puts under the SCIM provider's prefix that the strict one does not claim,
//! and that is not spelt plainly, is refused rather than guessed at.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded to the platform untouched.
    PassThrough,
    /// Answered by the gateway's SCIM service.
    Scim,
    /// Refused (400): the platform might map it under the SCIM provider by a normalisation the
    /// gateway does not share.
    Ambiguous,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::PassThrough => "passthrough",
            Route::Scim => "scim",
            Route::Ambiguous => "ambiguous",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    /// Lower-cased, normalised, without a trailing slash.
    scim_base: String,
    /// The web application the SCIM servlet lives in (`/thingworx/scimprovider` for the default
    /// base), lower-cased: the prefix no disguised path may reach.
    guarded: String,
    /// `guarded` as the configuration spells it, for the plain-spelling test.
    guarded_exact: String,
}

impl Router {
    pub fn new(scim_base_path: &str) -> Self {
        let exact = normalize(scim_base_path).trim_end_matches('/').to_string();
        let guarded_exact = match exact.rfind('/') {
            Some(i) if i > 0 => exact[..i].to_string(),
            _ => exact.clone(),
        };
        Self {
            scim_base: exact.to_ascii_lowercase(),
            guarded: guarded_exact.to_ascii_lowercase(),
            guarded_exact,
        }
    }

    pub fn classify(&self, path: &str) -> Route {
        if is_simple(path) {
            return self.classify_simple(path);
        }
        self.classify_general(path)
    }

    /// [`Router::classify_general`] for a simple path, without its copies: such a path reads the
    /// same under both normalisations, apart from case and a trailing slash (which `under`
    /// accepts either way).
    fn classify_simple(&self, path: &str) -> Route {
        if under_ignoring_case(path, &self.scim_base) {
            return Route::Scim;
        }
        if under_ignoring_case(path, &self.guarded) && !self.plain(path) {
            return Route::Ambiguous;
        }
        Route::PassThrough
    }

    fn classify_general(&self, path: &str) -> Route {
        let normalized = normalize(path).to_ascii_lowercase();
        if under(&normalized, &self.scim_base) {
            return Route::Scim;
        }
        if under(&lenient_normalize(path), &self.guarded) && !self.plain(path) {
            return Route::Ambiguous;
        }
        Route::PassThrough
    }

    /// Spelt exactly as configured and with nothing any container could read two ways: no
    /// escapes, backslashes, parameters, empty, dot or dot-ended segments.
    fn plain(&self, path: &str) -> bool {
        under(path, &self.guarded_exact)
            && path.split('/').skip(1).enumerate().all(|(i, segment)| {
                let last = i + 1 == path.split('/').count() - 1;
                (!segment.is_empty() || last)
                    && !segment.ends_with(['.', ' '])
                    && !segment.contains(['%', '\\', ';'])
            })
    }
}

/// Letters, digits, `-`, `_`, `~` and single slashes, from a leading slash: nothing any
/// normalisation decodes, drops, folds or resolves (no `%`, `\\`, `;`, dots, spaces or empty
/// segments). Most pass-through requests are spelt so, and routing runs for every request.
fn is_simple(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'~'))
}

/// [`under`] for a lower-cased `prefix`, whatever the case of `path`.
fn under_ignoring_case(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    path.len() >= prefix.len()
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
        && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Every reading some servlet container, setting or filesystem might give a path: decoded until
/// nothing changes, backslashes as slashes, `;params` dropped, trailing dots and spaces removed
/// from segments, dot segments resolved, lower-cased. Only ever used to refuse.
pub(crate) fn lenient_normalize(path: &str) -> String {
    let mut decoded = path.to_string();
    // Each round removes at least one `%`, so this ends; the bound keeps a hostile path cheap.
    for _ in 0..8 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let decoded = decoded.replace('\\', "/").to_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for raw in decoded.split('/') {
        let segment = raw.split(';').next().unwrap_or("");
        match segment.trim_end_matches(|c: char| c == '.' || c.is_whitespace()) {
            _ if segment == ".." => {
                segments.pop();
            }
            "" => {}
            s => segments.push(s),
        }
    }
    join_segments(&segments)
}

/// Percent-decodes, drops `;parameters` from segments, collapses empty segments and resolves
/// `.`/`..` the way a servlet container does before it maps a request.
pub(crate) fn normalize(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for raw in decoded.split('/') {
        let segment = raw.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    join_segments(&segments)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `/a/b` from `[a, b]`; `/` from none.
fn join_segments(segments: &[&str]) -> String {
    if segments.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(segments.iter().map(|s| s.len() + 1).sum());
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new("/Thingworx/SCIMProvider/SCIM")
    }

    #[test]
    fn scim_paths_are_claimed() {
        let r = router();
        for p in [
            "/Thingworx/SCIMProvider/SCIM",
            "/Thingworx/SCIMProvider/SCIM/",
            "/Thingworx/SCIMProvider/SCIM/Users",
            "/Thingworx/SCIMProvider/SCIM/v2/Users/abc",
            "/Thingworx/SCIMProvider/SCIM/v1/Groups",
        ] {
            assert_eq!(r.classify(p), Route::Scim, "{p}");
        }
    }

    #[test]
    fn disguised_scim_paths_are_still_claimed() {
        let r = router();
        for p in [
            "/thingworx/scimprovider/scim/Users",
            "/Thingworx/SCIMProvider/%53CIM/Users",
            "/Thingworx/./SCIMProvider/SCIM/Users",
            "/Thingworx/Things/../SCIMProvider/SCIM/Users",
            "//Thingworx//SCIMProvider/SCIM/Users",
            "/Thingworx/SCIMProvider;jsessionid=1/SCIM/Users",
            "/Thingworx/SCIMProvider%2FSCIM/Users",
            "/Thingworx/Things/..;/SCIMProvider/SCIM/Users",
            "/Thingworx/SCIMProvider/..;/SCIMProvider/SCIM/Users",
            "/Thingworx/%2e%2e/Thingworx/SCIMProvider/SCIM/Users",
        ] {
            assert_eq!(r.classify(p), Route::Scim, "{p}");
        }
    }

    #[test]
    fn ambiguous_spellings_of_the_provider_are_refused() {
        let r = router();
        for p in [
            "/Thingworx./SCIMProvider/SCIM/Users",
            "/Thingworx/SCIMProvider%20/SCIM/Users",
            "/Thingworx/SCIMProvider /SCIM/Users",
            "/Thingworx/SCIMProvider/SCIM./Users",
            "/Thingworx/SCIMProvider/SCIM%20/Users",
            "/Thingworx\\SCIMProvider\\SCIM\\Users",
            "/Thingworx/SCIMProvider%5CSCIM/Users",
            "/Thingworx/SCIMProvider%5cSCIM%5cUsers",
            "/Thingworx/SCIMProvider%252FSCIM/Users",
            "/Thingworx/SCIMProvider/%2553CIM/Users",
            "/Thingworx/SCIMProvider/SCIM%253B/Users",
            "/Thingworx/Things/%252e%252e/SCIMProvider/SCIM/Users",
            "/Thingworx/SCIMProvider/SCIM;x=%2F/../Users",
            "/thingworx/scimprovider/Other",
            "/Thingworx/SCIMProvider/%53CIMx",
            "/Thingworx/SCIMProvider;jsessionid=1",
            "/Thingworx/SCIMProvider//SCIMx",
        ] {
            assert_eq!(r.classify(p), Route::Ambiguous, "{p}");
        }
    }

    #[test]
    fn plain_neighbours_still_pass_through() {
        let r = router();
        for p in [
            "/Thingworx/Things/X/Services/Y",
            "/Thingworx/Composer/",
            "/Thingworx/Things/My%20Thing",
            "/Thingworx/Things/My%20Thing/Services/Do%20It",
            "/Thingworx/Things/a%5Cb",
            "/Thingworx/Things/Thing.",
            "/Thingworx/Things/X;jsessionid=1",
            "/Thingworx/SCIMProviderX/SCIM/Users",
            "/Thingworx/SCIMProvider/",
            "/Thingworx/SCIMProvider/Other/page.html",
        ] {
            assert_eq!(r.classify(p), Route::PassThrough, "{p}");
        }
    }

    #[test]
    fn everything_else_passes_through() {
        let r = router();
        for p in [
            "/",
            "/Thingworx/Things/X/Services/Y",
            "/Thingworx/SCIMProvider/SCIMx",
            "/Thingworx/SCIMProvider",
            "/Thingworx/WS",
            "/%zz",
            "%",
        ] {
            assert_eq!(r.classify(p), Route::PassThrough, "{p}");
        }
    }

    /// The shortcut for simple paths must route every one of them as the general rules do:
    /// every spelling made of the simple alphabet, around and inside the SCIM base, in every
    /// case, with and without a trailing slash.
    #[test]
    fn simple_paths_route_as_the_general_rules_do() {
        for base in ["/Thingworx/SCIMProvider/SCIM", "/scim", "/a-b/C_d~/v2/"] {
            let r = Router::new(base);
            let mut pieces: Vec<String> = ["", "x", "Users", "v2", "-", "_", "~", "SCIMx", "a1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for segment in base.split('/').filter(|s| !s.is_empty()) {
                pieces.push(segment.to_string());
                pieces.push(segment.to_ascii_lowercase());
                pieces.push(segment.to_ascii_uppercase());
                pieces.push(format!("{segment}x"));
                pieces.push(segment[..segment.len() - 1].to_string());
            }
            // Every path of up to four segments from a seeded walk over the pieces.
            let mut seed: u64 = 0x5eed;
            let mut next = |n: usize| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as usize % n
            };
            let mut checked = 0;
            for _ in 0..20_000 {
                let depth = 1 + next(5);
                let mut path = String::new();
                for _ in 0..depth {
                    path.push('/');
                    path.push_str(&pieces[next(pieces.len())]);
                }
                for candidate in [path.clone(), format!("{path}/")] {
                    if is_simple(&candidate) {
                        checked += 1;
                        assert_eq!(
                            r.classify(&candidate),
                            r.classify_general(&candidate),
                            "base {base}, path {candidate}"
                        );
                    }
                }
            }
            // The base itself and what lies under it, in every case.
            let trimmed = base.trim_end_matches('/');
            for candidate in [
                trimmed.to_string(),
                trimmed.to_ascii_lowercase(),
                trimmed.to_ascii_uppercase(),
                format!("{trimmed}/Users"),
                format!("{}/", trimmed.to_ascii_uppercase()),
            ] {
                assert_eq!(r.classify(&candidate), Route::Scim, "{candidate}");
                assert_eq!(r.classify_general(&candidate), Route::Scim, "{candidate}");
            }
            assert!(checked > 10_000, "only {checked} simple paths checked");
        }
        for not_simple in [
            "", "x", "/a//b", "/a/./b", "/a%2Fb", "/a;b", "/a\\b", "/a b", "/é",
        ] {
            assert!(!is_simple(not_simple), "{not_simple}");
        }
    }
}
