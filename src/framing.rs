//! Strict request framing (RFC 9112 §3, RFC 9113 §8.3.1), checked on every request before it is
//! routed: hyper parses leniently, and the platform behind the gateway must never see a request
//! whose size, host or target the gateway would not itself have accepted.

use http::{header, Method, Request, StatusCode, Version};

/// The limits [`check`] applies, copied from the configuration once per gateway.
#[derive(Debug, Clone, Copy)]
pub struct FramingLimits {
    pub max_header_bytes: usize,
    pub max_request_line_bytes: usize,
}

/// Why a request is refused before routing. Turned into a response only by
/// `Gateway::refuse`, in the SCIM shape under the SCIM base path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("the request line is longer than {0} bytes")]
    RequestLineTooLong(usize),
    #[error("the request line and headers are longer than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("CONNECT is not served by this gateway")]
    Connect,
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
    #[error("the Host header differs from the request target's authority")]
    HostMismatch,
    #[error("the asterisk-form target (*) is only allowed with OPTIONS")]
    AsteriskForm,
}

impl FramingError {
    pub fn status(&self) -> StatusCode {
        match self {
            FramingError::RequestLineTooLong(_) => StatusCode::URI_TOO_LONG,
            FramingError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            FramingError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The methods named in `Allow` when CONNECT is refused and on `OPTIONS *`.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Whether the target is the asterisk form (`OPTIONS * HTTP/1.1`).
pub fn is_asterisk<B>(req: &Request<B>) -> bool {
    let uri = req.uri();
    uri.scheme().is_none() && uri.authority().is_none() && uri.path() == "*"
}

/// Checks a request's size, method, target and host. No allocation: it runs on every request.
pub fn check<B>(req: &Request<B>, limits: &FramingLimits) -> Result<(), FramingError> {
    let line = request_line_len(req);
    if line > limits.max_request_line_bytes {
        return Err(FramingError::RequestLineTooLong(
            limits.max_request_line_bytes,
        ));
    }
    // The block as hyper parsed it: `name: value` CRLF per header, after the request line.
    let mut block = line;
    for (name, value) in req.headers() {
        block += name.as_str().len() + value.len() + 4;
    }
    if req.version() == Version::HTTP_2 {
        // `:authority` stands where HTTP/1.1 has Host, so it counts like one.
        if let Some(a) = req.uri().authority() {
            block += "host".len() + a.as_str().len() + 4;
        }
    }
    if block > limits.max_header_bytes {
        return Err(FramingError::HeadersTooLarge(limits.max_header_bytes));
    }
    if req.method() == Method::CONNECT {
        return Err(FramingError::Connect);
    }
    if is_asterisk(req) && req.method() != Method::OPTIONS {
        return Err(FramingError::AsteriskForm);
    }
    check_host(req)
}

fn check_host<B>(req: &Request<B>) -> Result<(), FramingError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingError::DuplicateHost);
    }
    let Some(host) = host else {
        // HTTP/1.0 predates Host; HTTP/2 carries the authority in `:authority`.
        return if req.version() == Version::HTTP_11 {
            Err(FramingError::MissingHost)
        } else {
            Ok(())
        };
    };
    let host = host.to_str().map_err(|_| FramingError::InvalidHost)?;
    if !valid_authority(host) {
        return Err(FramingError::InvalidHost);
    }
    // An absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) must name the same host.
    if let Some(authority) = req.uri().authority() {
        if !authority.as_str().eq_ignore_ascii_case(host) {
            return Err(FramingError::HostMismatch);
        }
    }
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): a bracketed IPv6 literal or a reg-name/IPv4 of
/// unreserved, percent-encoded and sub-delim characters; a port of 1–5 digits up to 65535.
fn valid_authority(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (literal, &rest[end + 1..])
    } else {
        let end = value.find(':').unwrap_or(value.len());
        let host = &value[..end];
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
        {
            return false;
        }
        (host, &value[end..])
    };
    if host.is_empty() {
        return false;
    }
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok()
        }
    }
}

/// `method SP request-target SP HTTP-version CRLF`, in bytes, as it arrived (HTTP/2: the same
/// line built from `:method` and `:path`).
fn request_line_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = if req.version() == Version::HTTP_2 {
        uri.path_and_query().map_or(0, |p| p.as_str().len())
    } else {
        let absolute = match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => s.as_str().len() + 3 + a.as_str().len(),
            (None, Some(a)) => a.as_str().len(),
            _ => 0,
        };
        absolute + uri.path_and_query().map_or(0, |p| p.as_str().len())
    };
    req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "a.example",
            "a.example:8443",
            "127.0.0.1:1",
            "[::1]:443",
            "[::1]",
            "x_y.example",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "a.example:",
            "a.example:65536",
            "a.example:8x",
            "a example",
            "user@a.example",
            "a/b",
            "[::1",
            "[]:80",
            "a.example:123456",
            "a.example:80:80",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn the_block_is_counted_as_parsed() {
        let limits = FramingLimits {
            max_header_bytes: 64,
            max_request_line_bytes: 32,
        };
        // "GET /x HTTP/1.1\r\n" = 17, "host: h\r\n" = 9, "x: <v>\r\n" = 5 + v.
        let with = |v: usize| {
            Request::get("/x")
                .header("host", "h")
                .header("x", "v".repeat(v))
                .body(())
                .unwrap()
        };
        assert_eq!(check(&with(64 - 17 - 9 - 5), &limits), Ok(()));
        assert_eq!(
            check(&with(64 - 17 - 9 - 5 + 1), &limits),
            Err(FramingError::HeadersTooLarge(64))
        );
    }
}
