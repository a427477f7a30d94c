//! Micro-benchmarks of the per-request hot paths: prints figures, asserts nothing about speed.
//!
//!   cargo bench --bench micro --features bench-api
//!   cargo bench --bench micro --features bench-api -- jwt          (one group; any name filter works)
//!
//! Groups: `filter_parse` (SCIM 1.1 and 2.0 filters as identity providers send them),
//! `jwt_verify` (ES256 and RS256 against an already cached key set: a token seen for the first
//! time, the same token again with its signature remembered, and a tampered one),
//! `scim_render` (resources written out as response bodies) and `scim_parse` (Entra ID request
//! bodies read into changes) and `request_metrics` (what one answered request adds to
//! `/metrics`). Every fixture is checked once before it is measured, so a figure
//! never times an early refusal by mistake.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scimgate::bench_api::{self, Alg, JwtFixture, ScimFixture, Signature};
use std::hint::black_box;
use std::time::Duration;

const GROUP_MEMBERS: usize = 50;
const PAGE_SIZE: usize = 100;

/// (name, SCIM 1.1 text, SCIM 2.0 text); 1.1 has no `not` and no value paths, so its complex
/// filter spells the same intent with a sub-attribute.
const FILTERS: [(&str, &str, &str); 3] = [
    // Entra ID and PingFederate look a user up by userName before creating it.
    (
        "userName_eq",
        r#"userName eq "jdoe@corp.com""#,
        r#"userName eq "jdoe@corp.com""#,
    ),
    (
        "externalId_eq",
        r#"externalId eq "6f1c2a4e-0b7d-4c3e-9a51-000000000001""#,
        r#"externalId eq "6f1c2a4e-0b7d-4c3e-9a51-000000000001""#,
    ),
    (
        "complex",
        r#"(userName sw "j" or displayName co "Doe") and emails.value co "@corp.com" and title pr"#,
        r#"(userName sw "j" or displayName co "Doe") and not (active eq false) and emails[type eq "work" and value co "@corp.com"]"#,
    ),
];

const ENTRA_USER_POST: &str = r#"{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
              "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "externalId": "0a21f0f2-8d2a-4f8e-bf98-7b2c4a7d1a3f",
  "userName": "jane.doe@corp.com",
  "active": true,
  "addresses": [{"primary": true, "type": "work", "formatted": "121 Seaport Blvd, Boston MA 02210",
                 "streetAddress": "121 Seaport Blvd", "locality": "Boston", "region": "MA",
                 "postalCode": "02210", "country": "US"}],
  "displayName": "Jane Doe",
  "emails": [{"primary": true, "type": "work", "value": "jane.doe@corp.com"}],
  "meta": {"resourceType": "User"},
  "name": {"formatted": "Jane Doe", "familyName": "Doe", "givenName": "Jane"},
  "phoneNumbers": [{"type": "work", "value": "+1 617 555 0100"},
                   {"type": "mobile", "value": "+1 617 555 0199"}],
  "preferredLanguage": "en-US",
  "roles": [],
  "title": "Process Engineer",
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
    "employeeNumber": "E000123", "department": "Manufacturing IT", "costCenter": "CC-4410",
    "manager": {"value": "9d8c7b6a-5f4e-3d2c-1b0a-fedcba987654"}
  }
}"#;

/// Entra's dialect: capitalised `op`, filtered paths, and `active` as a string.
const ENTRA_USER_PATCH: &str = r#"{
  "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
  "Operations": [
    {"op": "Replace", "path": "displayName", "value": "Jane Q. Doe"},
    {"op": "Replace", "path": "title", "value": "Lead Process Engineer"},
    {"op": "Replace", "path": "name.givenName", "value": "Jane"},
    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "jane.q.doe@corp.com"},
    {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 617 555 0142"},
    {"op": "Replace",
     "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
     "value": "Plant Engineering"},
    {"op": "Replace", "path": "active", "value": "False"}
  ]
}"#;

fn filter_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter_parse");
    for (name, v1, v2) in FILTERS {
        if let Err(e) = bench_api::parse_filter_v1(v1) {
            panic!("1.1 filter {v1:?} refused: {e}");
        }
        if let Err(e) = bench_api::parse_filter_v2(v2) {
            panic!("2.0 filter {v2:?} refused: {e}");
        }
        group.bench_with_input(BenchmarkId::new("v1", name), v1, |b, text| {
            b.iter(|| bench_api::parse_filter_v1(black_box(text)))
        });
        group.bench_with_input(BenchmarkId::new("v2", name), v2, |b, text| {
            b.iter(|| bench_api::parse_filter_v2(black_box(text)))
        });
    }
    group.finish();
}

fn jwt_verify(c: &mut Criterion) {
    let fixture = JwtFixture::new().expect("JWT fixture");
    let mut group = c.benchmark_group("jwt_verify");
    for (alg, alg_name) in [(Alg::Es256, "es256"), (Alg::Rs256, "rs256")] {
        let valid = fixture.token(alg, Signature::Valid);
        let tampered = fixture.token(alg, Signature::Tampered);
        if let Err(e) = fixture.verify(valid) {
            panic!("{alg_name}: the valid token is refused: {e}");
        }
        match fixture.verify(tampered) {
            Err(e) if e == "bad signature" => {}
            other => panic!("{alg_name}: the tampered token gives {other:?}, not a bad signature"),
        }
        // The gateway remembers signatures it verified, so a client reusing its token (as
        // identity providers do for up to an hour) pays the signature check once.
        group.bench_function(BenchmarkId::new(alg_name, "valid_remembered"), |b| {
            b.iter(|| fixture.verify(black_box(valid)))
        });
        let mut n = 0;
        group.bench_function(BenchmarkId::new(alg_name, "valid_first_sight"), |b| {
            b.iter(|| {
                n += 1;
                fixture.verify(black_box(fixture.unseen_token(alg, n)))
            })
        });
        group.bench_function(BenchmarkId::new(alg_name, "bad_signature"), |b| {
            b.iter(|| fixture.verify(black_box(tampered)))
        });
    }
    group.finish();
}

fn scim_render(c: &mut Criterion) {
    let fixture = ScimFixture::new(GROUP_MEMBERS, PAGE_SIZE);
    let mut group = c.benchmark_group("scim_render");
    group.bench_function("user/v2", |b| b.iter(|| black_box(&fixture).user_v2()));
    group.bench_function("user/v1", |b| b.iter(|| black_box(&fixture).user_v1()));
    let members = format!("group_{GROUP_MEMBERS}_members");
    group.bench_function(BenchmarkId::new(&members, "v2"), |b| {
        b.iter(|| black_box(&fixture).group_v2())
    });
    group.bench_function(BenchmarkId::new(&members, "v1"), |b| {
        b.iter(|| black_box(&fixture).group_v1())
    });
    let page = format!("list_page_{PAGE_SIZE}_users");
    group.bench_function(BenchmarkId::new(&page, "v2"), |b| {
        b.iter(|| black_box(&fixture).list_page_v2())
    });
    group.bench_function(BenchmarkId::new(&page, "v2_write_only"), |b| {
        b.iter(|| black_box(&fixture).write_page_v2())
    });
    group.finish();
}

fn scim_parse(c: &mut Criterion) {
    let fixture = ScimFixture::new(GROUP_MEMBERS, PAGE_SIZE);
    if let Err(e) = fixture.parse_user_v2(ENTRA_USER_POST.as_bytes()) {
        panic!("the Entra POST body is refused: {e}");
    }
    if let Err(e) = fixture.patch_user_v2(ENTRA_USER_PATCH.as_bytes()) {
        panic!("the Entra PATCH body is refused: {e}");
    }
    let mut group = c.benchmark_group("scim_parse");
    group.bench_function("entra_user_post/v2", |b| {
        b.iter(|| fixture.parse_user_v2(black_box(ENTRA_USER_POST.as_bytes())))
    });
    group.bench_function("entra_user_patch/v2", |b| {
        b.iter(|| fixture.patch_user_v2(black_box(ENTRA_USER_PATCH.as_bytes())))
    });
    group.finish();
}

/// What every answered request adds to `/metrics` (a request counter and two histograms), as
/// `gateway::record_request` does it; statuses vary as real traffic does, so new label sets
/// are not all the cost.
fn request_metrics(c: &mut Criterion) {
    use scimgate::router::Route;
    let mut group = c.benchmark_group("request_metrics");
    let statuses = [200u16, 200, 304, 200, 404, 200, 201, 401];
    let mut n = 0usize;
    group.bench_function("one_request", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let status = statuses[n % statuses.len()];
            let route = if n.is_multiple_of(4) {
                Route::Scim
            } else {
                Route::PassThrough
            };
            scimgate::gateway::record_request(
                black_box(route),
                black_box(status),
                black_box(Duration::from_micros(850)),
                black_box(Some(Duration::from_micros(600))),
            )
        })
    });
    // The same figures kept by `prometheus-client`, the Prometheus project's Rust client, as
    // src/metrics.rs would keep them with it: label sets built without allocating, families
    // registered once. Kept here because this comparison is why src/metrics.rs is hand-written.
    let registry = PrometheusClientRequestMetrics::new();
    let mut n = 0usize;
    group.bench_function("one_request/prometheus_client", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let status = statuses[n % statuses.len()];
            let route = if n.is_multiple_of(4) {
                "scim"
            } else {
                "passthrough"
            };
            registry.record(
                black_box(route),
                black_box(status),
                black_box(Duration::from_micros(850)),
                black_box(Some(Duration::from_micros(600))),
            )
        })
    });
    group.finish();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

struct PrometheusClientRequestMetrics {
    requests: prometheus_client::metrics::family::Family<
        RequestLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    duration: prometheus_client::metrics::family::Family<
        RouteLabels,
        prometheus_client::metrics::histogram::Histogram,
    >,
    upstream: prometheus_client::metrics::histogram::Histogram,
    _registry: prometheus_client::registry::Registry,
}

const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(BUCKETS)
}

impl PrometheusClientRequestMetrics {
    fn new() -> Self {
        use prometheus_client::metrics::family::Family;
        let requests = Family::default();
        let duration = Family::new_with_constructor(histogram as fn() -> _);
        let upstream = histogram();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("scimgate_requests", "Requests answered", requests.clone());
        registry.register(
            "scimgate_request_duration_seconds",
            "Time to answer a request",
            duration.clone(),
        );
        registry.register(
            "scimgate_upstream_duration_seconds",
            "Time until the platform's response headers",
            upstream.clone(),
        );
        Self {
            requests,
            duration,
            upstream,
            _registry: registry,
        }
    }

    fn record(
        &self,
        route: &'static str,
        status: u16,
        elapsed: Duration,
        upstream: Option<Duration>,
    ) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        if let Some(upstream) = upstream {
            self.upstream.observe(upstream.as_secs_f64());
        }
    }
}

criterion_group!(
    benches,
    filter_parse,
    jwt_verify,
    scim_render,
    scim_parse,
    request_metrics
);
criterion_main!(benches);
