//! `/metrics` on the admin listener is Prometheus text and counts a known sequence of requests
//! exactly.

mod common;

use common::*;
use std::collections::HashMap;

/// Parses the text format into `name{labels}` → value, checking every line is well formed.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_count_a_known_sequence_exactly() {
    let upstream = TestUpstream::start().await;
    let gw = Gateway::start(&config_toml(
        &plain_listener(),
        &upstream.url(),
        "",
        "[scim]\nbearer_token = \"0123456789abcdef0123456789abcdef\"\n",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(
            http_get(gw.gateway_addr, "/hello").await.unwrap().status,
            200
        );
    }
    assert_eq!(
        http_get(gw.gateway_addr, "/definitely-missing")
            .await
            .unwrap()
            .status,
        404
    );
    for _ in 0..2 {
        let r = http_get(gw.gateway_addr, "/Thingworx/SCIMProvider/SCIM/Users")
            .await
            .unwrap();
        assert_eq!(r.status, 401);
    }

    let text = http_get(gw.admin_addr, "/metrics").await.unwrap().text();
    let m = parse(&text);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing in:\n{text}"))
    };
    assert_eq!(
        get(r#"scimgate_requests_total{route="passthrough",status="200"}"#),
        3.0
    );
    assert_eq!(
        get(r#"scimgate_requests_total{route="passthrough",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(r#"scimgate_requests_total{route="scim",status="401"}"#),
        2.0
    );
    assert_eq!(
        get(r#"scimgate_auth_failures_total{reason="missing"}"#),
        2.0
    );
    assert_eq!(
        get(r#"scimgate_request_duration_seconds_count{route="passthrough"}"#),
        4.0
    );
    assert_eq!(
        get(r#"scimgate_request_duration_seconds_bucket{route="passthrough",le="+Inf"}"#),
        4.0
    );
    assert_eq!(get("scimgate_upstream_duration_seconds_count"), 4.0);
    assert!(get("scimgate_open_connections") >= 0.0);
    assert!(text.contains("# TYPE scimgate_request_duration_seconds histogram"));
}
