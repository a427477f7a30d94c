//! The one place that decides who answers a request on a gateway listener.
//!
//! The decision is made on a normalised path because the platform (Tomcat) normalises before
//! it routes: if `/Thingworx/SCIMProvider/%53CIM/Users` or `/Thingworx/./SCIMProvider;x/SCIM`
//! were passed through, the platform's own SCIM servlet would answer and skip every policy the
//! gateway enforces.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded to the platform untouched.
    PassThrough,
    /// Answered by the gateway's SCIM service.
    Scim,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::PassThrough => "passthrough",
            Route::Scim => "scim",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    /// Lower-cased, normalised, without a trailing slash.
    scim_base: String,
}

impl Router {
    pub fn new(scim_base_path: &str) -> Self {
        Self {
            scim_base: normalize(scim_base_path)
                .trim_end_matches('/')
                .to_ascii_lowercase(),
        }
    }

    pub fn classify(&self, path: &str) -> Route {
        let normalized = normalize(path).to_ascii_lowercase();
        let under_base = normalized
            .strip_prefix(&self.scim_base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under_base {
            Route::Scim
        } else {
            Route::PassThrough
        }
    }
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
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        ] {
            assert_eq!(r.classify(p), Route::Scim, "{p}");
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
}
