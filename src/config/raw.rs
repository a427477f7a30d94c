//! The configuration file exactly as written. Every table denies unknown keys so a typo is an
//! error instead of a silently ignored setting; meaning is checked later, in `validate`.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub upstream: Option<RawUpstream>,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub scim: RawScim,
    pub platform: Option<RawPlatform>,
    #[serde(default)]
    pub provisioning: RawProvisioning,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub import: RawImport,
}

/// The platform's own settings files, read as they are.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawImport {
    pub platform_settings: Option<String>,
    pub sso_settings: Option<String>,
    /// The SSO authenticator's group-mapping table, exported as JSON.
    pub sso_group_mappings: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: Option<String>,
    pub tls: Option<RawTls>,
    pub hsts: Option<RawHsts>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    pub max_age: Option<i64>,
    pub include_subdomains: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub self_signed: bool,
    pub self_signed_dir: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub ca_bundle: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<i64>,
    pub pool_idle_timeout: Option<String>,
    pub http2_prior_knowledge: Option<bool>,
    pub preserve_host: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub max_connections: Option<i64>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_request_line_bytes: Option<i64>,
    pub body_read_timeout: Option<String>,
    pub max_passthrough_body_bytes: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_deadline: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawScim {
    pub base_path: Option<String>,
    pub enabled: Option<bool>,
    pub auto_start: Option<bool>,
    pub max_results: Option<i64>,
    pub max_filter_candidates: Option<i64>,
    pub bearer_token: Option<String>,
    pub group_patch_response: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPlatform {
    pub app_key: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub max_concurrency: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    #[serde(default)]
    pub user_exclusions: Vec<String>,
    pub group_exclusions: Option<Vec<String>>,
    pub deprovision: Option<String>,
    pub max_users: Option<i64>,
    pub terminate_sessions_on_config_change: Option<bool>,
    pub external_id_property: Option<String>,
    pub group_external_id_vocabulary: Option<String>,
    pub audit_log: Option<String>,
    #[serde(default)]
    pub excluded_groups_mapped_on_purpose: Vec<String>,
    #[serde(default)]
    pub user_defaults: RawUserDefaults,
    #[serde(default)]
    pub group_defaults: RawGroupDefaults,
    #[serde(default)]
    pub group_mappings: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub user_attributes: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUserDefaults {
    pub description: Option<String>,
    pub project: Option<String>,
    pub home_mashup: Option<String>,
    pub mobile_mashup: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGroupDefaults {
    pub description: Option<String>,
    pub project: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub bearer_token: Option<String>,
    pub max_failures_per_minute: Option<i64>,
    pub ca_bundle: Option<String>,
    pub basic: Option<RawBasic>,
    #[serde(default)]
    pub jwt: Vec<RawJwt>,
    pub introspection: Option<RawIntrospection>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_url: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    #[serde(default)]
    pub required_claims: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub admin_scopes: Vec<String>,
    pub hs_secret: Option<String>,
    pub refresh_interval: Option<String>,
    pub min_refetch_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    pub endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub admin_scopes: Vec<String>,
    pub cache_max: Option<String>,
    pub negative_cache: Option<String>,
}
