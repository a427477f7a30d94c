//! Configuration: the TOML file is parsed into `raw` types, then validated into [`Config`].
//! Validation never stops at the first problem: an operator fixing a file wants the whole list.

pub mod import;
mod raw;
mod secret;

pub use secret::{Secret, SecretSource};

use ipnet::IpNet;
use raw::RawConfig;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ThingWorx 9.x/10.x's default minimum password length (8.x: 10).
pub const DEFAULT_PASSWORD_MIN_LENGTH: usize = 14;

pub const DEFAULT_SCIM_BASE_PATH: &str = "/Thingworx/SCIMProvider/SCIM";
/// hyper refuses HTTP/1 read buffers smaller than this.
const MIN_HEADER_BYTES: i64 = 8192;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub upstream: UpstreamConfig,
    pub trusted_proxies: Vec<IpNet>,
    /// `Upgrade` protocols relayed to the platform, lower-cased.
    pub allowed_upgrades: Vec<String>,
    pub limits: Limits,
    pub admin_address: SocketAddr,
    pub log: LogConfig,
    pub drain_deadline: Duration,
    pub scim_base_path: String,
    /// How the gateway calls the platform's native services; absent, only pass-through runs.
    pub platform: Option<PlatformConfig>,
    pub scim: ScimSettings,
    pub provisioning: ProvisioningConfig,
    pub auth: AuthConfig,
    /// The file this configuration was read from, for reloads.
    pub source: Option<PathBuf>,
    /// What the running configuration was built from beyond its values: the file's bytes (a
    /// comment-only edit is still an edit) and the PEM files it names, which are read when the
    /// gateway is built. With the values, it tells a reload whether anything changed.
    pub inputs: Option<crate::fsutil::ContentDigest>,
    pub reload: ReloadConfig,
    /// Things the operator should know about how the configuration was put together (settings
    /// imported from the platform's files, keys ignored there).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// Static bearer token (`auth.bearer_token` or `scim.bearer_token`).
    pub bearer_token: Option<Secret>,
    pub basic: Option<(String, Secret)>,
    pub jwt: Vec<JwtProviderConfig>,
    pub introspection: Option<IntrospectionConfig>,
    pub max_failures_per_minute: u32,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    RS256,
    PS256,
    ES256,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => Self::RS256,
            "PS256" => Self::PS256,
            "ES256" => Self::ES256,
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            _ => return None,
        })
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtProviderConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_url: Option<http::Uri>,
    pub algorithms: Vec<JwtAlgorithm>,
    pub leeway: Duration,
    pub required_claims: Vec<(String, String)>,
    pub admin_scopes: Vec<String>,
    pub hs_secret: Option<Secret>,
    pub refresh_interval: Duration,
    pub min_refetch_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    pub endpoint: http::Uri,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_ids: Vec<String>,
    pub audiences: Vec<String>,
    pub admin_scopes: Vec<String>,
    pub cache_max: Duration,
    pub negative_cache: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the configuration and certificate files; without it only SIGHUP reloads.
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScimSettings {
    /// Like the platform's `enableSCIM`: when false the SCIM paths answer 404.
    pub enabled: bool,
    /// Like `autoStart`: when false SCIM answers 503 until started on the admin listener.
    pub auto_start: bool,
    /// Most resources in one list response.
    pub max_results: usize,
    /// Most users whose attributes a filter may need read before it is refused as too broad.
    pub max_filter_candidates: usize,
    /// A static bearer token identity providers present (until OAuth is configured).
    pub bearer_token: Option<Secret>,
    /// Answer a SCIM 2.0 group PATCH with 204 instead of the (possibly huge) group.
    pub group_patch_no_content: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeprovisionMode {
    Delete,
    Disable,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDefaults {
    pub description: Option<String>,
    pub project: Option<String>,
    pub home_mashup: Option<String>,
    pub mobile_mashup: Option<String>,
    pub tags: Option<Vec<crate::tag::Tag>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDefaults {
    pub description: Option<String>,
    pub project: Option<String>,
    pub tags: Option<Vec<crate::tag::Tag>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningConfig {
    /// Configured additions; the platform's built-in users are always excluded as well.
    pub user_exclusions: Vec<String>,
    /// Configured additions; the platform's built-in groups are always excluded as well.
    pub group_exclusions: Vec<String>,
    pub deprovision: DeprovisionMode,
    pub max_users: Option<usize>,
    /// The platform's minimum password length (ThingWorx 9.x/10.x: 14 by default, 8.x: 10); a
    /// SCIM password outside this and 128 characters is refused before the platform is called.
    pub password_min_length: usize,
    pub terminate_sessions_on_config_change: bool,
    /// User extension property an administrator added to keep `externalId`; when set it is used
    /// instead of the tag vocabulary below. `None` by default: a stock platform has no such
    /// property.
    pub external_id_property: Option<String>,
    /// Tag vocabulary (a dynamic one on the platform) whose term keeps a user's `externalId`
    /// when no property is configured; `None` drops it.
    pub user_external_id_vocabulary: Option<String>,
    /// Tag vocabulary (a dynamic one on the platform) whose term keeps a group's `externalId`;
    /// `None` drops it.
    pub group_external_id_vocabulary: Option<String>,
    /// JSON-lines audit file; without it audit records go to the log.
    pub audit_log: Option<PathBuf>,
    pub user_defaults: UserDefaults,
    pub group_defaults: GroupDefaults,
    /// Identity-provider group name → platform group name.
    pub group_mappings: Vec<(String, String)>,
    /// SCIM attribute → user extension property (defaults merged with overrides).
    pub user_attributes: std::collections::BTreeMap<String, String>,
}

impl ProvisioningConfig {
    /// Whether a user's SCIM `externalId` is kept (in a property or as a tag term).
    pub fn stores_user_external_id(&self) -> bool {
        self.external_id_property.is_some() || self.user_external_id_vocabulary.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    pub credentials: PlatformCredentials,
    /// Calls in flight to the platform at once, so an identity provider's burst cannot
    /// overload a legacy server.
    pub max_concurrency: usize,
    /// Extra attempts for calls that are safe to repeat, on connection failures only.
    pub retries: u32,
    /// Whether the platform looks entity names up ignoring case (9.x/10.x) or as spelled (8.x).
    pub names: NameLookup,
    /// How user extension property values are read.
    pub extensions: ExtensionAccess,
}

/// `platform.names`: how the platform looks names up. `Auto` asks it once (a `GET` of the
/// gateway's own user in another case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameLookup {
    #[default]
    Auto,
    CaseInsensitive,
    CaseSensitive,
}

/// `platform.extensions`: how user extension values are read. `SetPropertyValues` writes them
/// either way; reads use `GetPropertyValues` or the user's `UserExtensions` configuration table
/// (`GetConfigurationTable`, rows `name`/`value`). `Auto` probes once which one answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtensionAccess {
    #[default]
    Auto,
    PropertyValues,
    ConfigurationTable,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlatformCredentials {
    AppKey(Secret),
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Option<TlsSource>,
    /// The `Strict-Transport-Security` value for every answer (TLS listeners only).
    pub hsts: Option<http::HeaderValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub scheme: UpstreamScheme,
    /// `host:port` as written, used for the Host header and for the reachability probe.
    pub authority: http::uri::Authority,
    pub ca_bundle: Option<PathBuf>,
    pub client_identity: Option<ClientIdentity>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    pub http2_prior_knowledge: bool,
    pub preserve_host: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

impl UpstreamScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
        }
    }
}

impl UpstreamConfig {
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(match self.scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    /// PEM text of the key: inline, from `env:` or from `file:`.
    pub key: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longer request lines (CRLF included) are answered 414; never above `max_header_bytes`.
    pub max_request_line_bytes: usize,
    /// The longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
    /// Pass-through request bodies above this are refused with 413; `None` streams any size.
    pub max_passthrough_body_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// One thing wrong with the configuration, phrased for the operator who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.setting, self.message, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid scimgate configuration: {message}")]
    Parse { path: String, message: String },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Settings given on the command line (or their environment variables), applied over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub upstream_url: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
}

pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let parsed = parse(&text, base_dir, overrides).map(|mut c| {
        c.source = Some(path.to_path_buf());
        c.inputs = Some(inputs_digest(&text, &c));
        c
    });
    parsed.map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// The file's text and the PEM files it names (read only when the gateway is built, so their
/// paths alone would hide a renewed CA bundle or client certificate from a reload).
fn inputs_digest(text: &str, config: &Config) -> crate::fsutil::ContentDigest {
    let files = [
        config.upstream.ca_bundle.as_deref(),
        config
            .upstream
            .client_identity
            .as_ref()
            .map(|c| c.cert.as_path()),
        config.auth.ca_bundle.as_deref(),
    ];
    let contents: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| f.and_then(|p| std::fs::read(p).ok()))
        .collect();
    let mut parts = vec![Some(text.as_bytes())];
    parts.extend(contents.iter().map(|c| c.as_deref()));
    crate::fsutil::ContentDigest::of(&parts)
}

/// Relative paths in the file are taken relative to the file's directory, so a config works the
/// same whatever directory scimgate is started from.
pub fn parse(text: &str, base_dir: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "<config>".into(),
        message: e.to_string(),
    })?;
    if let Some(url) = &overrides.upstream_url {
        raw.upstream.get_or_insert_with(Default::default).url = Some(url.clone());
    }
    if let Some(format) = &overrides.log_format {
        raw.log.format = Some(format.clone());
    }
    if let Some(level) = &overrides.log_level {
        raw.log.level = Some(level.clone());
    }
    Validator {
        problems: Vec::new(),
        notes: Vec::new(),
        base_dir,
    }
    .validate(raw)
}

struct Validator<'a> {
    problems: Vec<Problem>,
    notes: Vec<String>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn problem(&mut self, setting: impl Into<String>, message: impl Into<String>, fix: &str) {
        self.problems.push(Problem {
            setting: setting.into(),
            message: message.into(),
            fix: fix.to_string(),
        });
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn duration(&mut self, setting: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(value) = value else { return default };
        match parse_duration(value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(
                    setting,
                    "must be longer than zero",
                    "give a duration such as \"5s\"",
                );
                default
            }
            Err(msg) => {
                self.problem(
                    setting,
                    msg,
                    "write a number with a unit: \"250ms\", \"5s\", \"2m\" or \"1h\"",
                );
                default
            }
        }
    }

    fn count(&mut self, setting: &str, value: Option<i64>, default: i64, range: (i64, i64)) -> i64 {
        let Some(v) = value else { return default };
        if v < range.0 || v > range.1 {
            self.problem(
                setting,
                format!("{v} is out of range"),
                &format!("use a value from {} to {}", range.0, range.1),
            );
            default
        } else {
            v
        }
    }

    fn socket_addr(&mut self, setting: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    setting,
                    format!("{value:?} is not an IP address with a port"),
                    "write it as \"0.0.0.0:8443\" or \"[::]:8443\" (port 0 picks a free port)",
                );
                None
            }
        }
    }

    fn readable_file(&mut self, setting: &str, path: &Path) -> Option<Vec<u8>> {
        match crate::pem::read_file(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(
                    setting,
                    e.to_string(),
                    "point it at an existing PEM file that scimgate's user can read",
                );
                None
            }
        }
    }

    /// Valid but likely not what the operator meant: reported by `check` and at start.
    fn surprises(
        &mut self,
        listeners: &[ListenerConfig],
        auth: &AuthConfig,
        provisioning: &ProvisioningConfig,
        mapped_on_purpose: &[String],
    ) {
        if auth.basic.is_some() && listeners.iter().any(|l| l.tls.is_none()) {
            self.notes.push(
                "warning: auth.basic is enabled and a listener is plain HTTP: Basic credentials cross the network in clear unless a mesh encrypts it".to_string(),
            );
        }
        if auth.bearer_token.is_some() && listeners.iter().any(|l| l.tls.is_none()) {
            self.notes.push(
                "warning: a static SCIM bearer token is configured and a listener is plain HTTP"
                    .to_string(),
            );
        }
        use crate::builtin::{policy_key, BUILT_IN_GROUPS};
        let excluded: Vec<String> = BUILT_IN_GROUPS
            .iter()
            .map(|g| g.to_string())
            .chain(provisioning.group_exclusions.iter().cloned())
            .map(|g| policy_key(&g))
            .collect();
        let intended: Vec<String> = mapped_on_purpose.iter().map(|g| policy_key(g)).collect();
        for (idp, platform) in &provisioning.group_mappings {
            let key = policy_key(platform);
            if excluded.contains(&key) && !intended.contains(&key) {
                self.notes.push(format!(
                    "warning: provisioning.group_mappings lets the identity provider's group {idp:?} manage members of the excluded group {platform:?}; whoever the IdP puts there gets its rights (if that is intended, add {platform:?} to provisioning.excluded_groups_mapped_on_purpose)"
                ));
            }
        }
        // An acknowledgement that matches nothing is a leftover or a typo, and would silence
        // nothing when the mapping it was meant for comes back.
        for (group, key) in mapped_on_purpose.iter().zip(&intended) {
            if !excluded.contains(key) {
                self.notes.push(format!(
                    "warning: provisioning.excluded_groups_mapped_on_purpose lists {group:?}, which is not an excluded group; the entry has no effect"
                ));
            } else if !provisioning
                .group_mappings
                .iter()
                .any(|(_, platform)| &policy_key(platform) == key)
            {
                self.notes.push(format!(
                    "warning: provisioning.excluded_groups_mapped_on_purpose lists {group:?}, but no provisioning.group_mappings entry maps to it; the entry has no effect"
                ));
            }
        }
    }

    /// `provisioning.excluded_groups_mapped_on_purpose`: platform group names, checked only
    /// for being names here; what they match is a surprise, not an error.
    fn mapped_on_purpose(&mut self, raw: Vec<String>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, group) in raw.into_iter().enumerate() {
            if group.trim().is_empty() {
                self.problem(
                    format!("provisioning.excluded_groups_mapped_on_purpose[{i}]"),
                    "is empty",
                    "name an excluded platform group that a group mapping targets, e.g. \"Administrators\"",
                );
            } else {
                out.push(group);
            }
        }
        out
    }

    /// The SSO authenticator's group-mapping table compared with the SCIM mappings: an IdP
    /// group that SAML sign-in and SCIM put into different platform groups gives its members
    /// rights that depend on how they arrived.
    fn sso_group_mappings(&mut self, raw: Option<&str>, provisioning: &ProvisioningConfig) {
        let Some(raw) = raw else { return };
        let path = self.path(raw);
        match import::sso_group_mappings(&path) {
            Ok(table) => {
                for note in table.notes {
                    self.notes.push(format!("import: {note}"));
                }
                self.notes.extend(compare_group_mappings(
                    &provisioning.group_mappings,
                    &table.mappings,
                ));
            }
            Err(errors) => {
                for e in errors {
                    self.problem(
                        "import.sso_group_mappings",
                        e.to_string(),
                        "export the SSO authenticator's group-mapping table as JSON (an infotable, or an array of rows, with identityProviderGroupName and twxGroupName columns), or remove the setting",
                    );
                }
            }
        }
    }

    /// The platform's own settings files; scimgate's TOML wins wherever both speak.
    fn import(&mut self, raw: &raw::RawImport) -> import::Imported {
        let platform = raw.platform_settings.as_deref().map(|p| self.path(p));
        let sso = raw.sso_settings.as_deref().map(|p| self.path(p));
        if platform.is_none() && sso.is_none() {
            return import::Imported::default();
        }
        match import::import(platform.as_deref(), sso.as_deref()) {
            Ok(imported) => {
                for note in &imported.notes {
                    self.notes.push(format!("import: {note}"));
                }
                imported
            }
            Err(errors) => {
                for e in errors {
                    self.problem(
                        "import",
                        e.to_string(),
                        "point import.platform_settings / import.sso_settings at the platform's files, or fix them",
                    );
                }
                import::Imported::default()
            }
        }
    }

    fn validate(mut self, mut raw: RawConfig) -> Result<Config, ConfigError> {
        let imported = self.import(&raw.import);
        if raw.scim.enabled.is_none() {
            raw.scim.enabled = imported.scim_enabled;
        }
        if raw.scim.auto_start.is_none() {
            raw.scim.auto_start = imported.scim_auto_start;
        }
        if raw.auth.jwt.is_empty() {
            if let Some(j) = &imported.jwt {
                self.notes.push(format!(
                    "auth.jwt: issuer {} and its JWKS URL come from sso-settings.json",
                    j.issuer
                ));
                raw.auth.jwt.push(raw::RawJwt {
                    issuer: Some(j.issuer.clone()),
                    audiences: j.audiences.clone(),
                    jwks_url: Some(j.jwks_url.clone()),
                    ..Default::default()
                });
            }
        }
        let listeners = self.listeners(raw.listeners);
        let upstream = self.upstream(raw.upstream);

        let mut trusted_proxies = Vec::new();
        for (i, cidr) in raw.proxy.trusted_proxies.iter().enumerate() {
            match parse_cidr(cidr) {
                Some(net) => trusted_proxies.push(net),
                None => self.problem(
                    format!("proxy.trusted_proxies[{i}]"),
                    format!("{cidr:?} is not a CIDR or IP address"),
                    "write it as \"10.0.0.0/8\", \"192.168.1.7\" or \"fd00::/8\"",
                ),
            }
        }

        let allowed_upgrades = self.allowed_upgrades(raw.proxy.allowed_upgrades);

        let l = raw.limits;
        let limits = Limits {
            max_header_bytes: self.count(
                "limits.max_header_bytes",
                l.max_header_bytes,
                64 * 1024,
                (MIN_HEADER_BYTES, 16 * 1024 * 1024),
            ) as usize,
            max_body_bytes: self.count(
                "limits.max_body_bytes",
                l.max_body_bytes,
                1024 * 1024,
                (1, 1024 * 1024 * 1024),
            ) as u64,
            max_connections: self.count(
                "limits.max_connections",
                l.max_connections,
                10_000,
                (1, 1_000_000),
            ) as usize,
            header_read_timeout: self.duration(
                "limits.header_read_timeout",
                l.header_read_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            idle_timeout: self.duration(
                "limits.idle_timeout",
                l.idle_timeout.as_deref(),
                Duration::from_secs(120),
            ),
            max_request_line_bytes: self.count(
                "limits.max_request_line_bytes",
                l.max_request_line_bytes,
                8 * 1024,
                (64, 16 * 1024 * 1024),
            ) as usize,
            body_read_timeout: self.duration(
                "limits.body_read_timeout",
                l.body_read_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            max_passthrough_body_bytes: l.max_passthrough_body_bytes.map(|v| {
                self.count(
                    "limits.max_passthrough_body_bytes",
                    Some(v),
                    v,
                    (1, i64::MAX),
                ) as u64
            }),
        };
        if limits.max_request_line_bytes > limits.max_header_bytes {
            self.problem(
                "limits.max_request_line_bytes",
                format!(
                    "{} is more than limits.max_header_bytes ({}), which counts the request line too",
                    limits.max_request_line_bytes, limits.max_header_bytes
                ),
                "lower it, or raise limits.max_header_bytes",
            );
        }
        if limits.body_read_timeout.is_zero() {
            self.problem(
                "limits.body_read_timeout",
                "is zero",
                "use a duration such as \"30s\"",
            );
        }

        let admin_address = match raw.admin.address.as_deref() {
            Some(a) => self.socket_addr("admin.address", a),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        };
        if let Some(admin) = admin_address {
            if admin.port() != 0 && listeners.iter().any(|l| l.address == admin) {
                self.problem(
                    "admin.address",
                    format!("{admin} is also a gateway listener"),
                    "give the admin listener its own port",
                );
            }
        }

        let format = match raw.log.format.as_deref() {
            None | Some("text") | Some("human") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "log.format",
                    format!("{other:?} is not a log format"),
                    "use \"json\" or \"text\"",
                );
                LogFormat::Text
            }
        };
        let level = raw.log.level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem(
                "log.level",
                format!("{level:?} is not a log level or filter"),
                "use error, warn, info, debug or trace (or a filter like \"info,scimgate=debug\")",
            );
        }

        let drain_deadline = self.duration(
            "shutdown.drain_deadline",
            raw.shutdown.drain_deadline.as_deref(),
            Duration::from_secs(30),
        );

        let scim_base_path = self.scim_base_path(raw.scim.base_path.clone());
        let platform = raw.platform.and_then(|p| self.platform(p));
        let scim = self.scim_settings(&raw.scim);
        // Kept out of ProvisioningConfig: it changes no decision, so editing it must not count
        // as a policy change (which can end every session on reload).
        let mapped_on_purpose = self.mapped_on_purpose(std::mem::take(
            &mut raw.provisioning.excluded_groups_mapped_on_purpose,
        ));
        let provisioning = self.provisioning(raw.provisioning);
        let mut auth = self.auth(raw.auth, scim.bearer_token.clone());
        if auth.introspection.is_none() {
            if let Some(i) = imported.introspection {
                if let Some(endpoint) =
                    self.idp_url("import.sso_settings (checkTokenEndpointUrl)", &i.endpoint)
                {
                    self.notes.push(
                        "auth.introspection: endpoint and client come from sso-settings.json"
                            .to_string(),
                    );
                    auth.introspection = Some(IntrospectionConfig {
                        endpoint,
                        client_id: i.client_id,
                        client_secret: i.client_secret,
                        client_ids: i.client_ids,
                        audiences: Vec::new(),
                        admin_scopes: Vec::new(),
                        cache_max: Duration::from_secs(300),
                        negative_cache: Duration::from_secs(5),
                    });
                }
            }
        }

        self.surprises(&listeners, &auth, &provisioning, &mapped_on_purpose);
        self.sso_group_mappings(raw.import.sso_group_mappings.as_deref(), &provisioning);
        if !self.problems.is_empty() {
            return Err(ConfigError::Invalid(self.problems));
        }
        match (admin_address, upstream) {
            (Some(admin_address), Some(upstream)) => Ok(Config {
                listeners,
                upstream,
                trusted_proxies,
                allowed_upgrades,
                limits,
                admin_address,
                log: LogConfig { format, level },
                drain_deadline,
                scim_base_path,
                platform,
                scim,
                provisioning,
                auth,
                source: None,
                inputs: None,
                reload: ReloadConfig {
                    watch: raw.reload.watch.unwrap_or(true),
                },
                notes: self.notes,
            }),
            // Every path that yields None records a problem, so this is unreachable in practice;
            // answering with an error keeps it that way without a panic.
            _ => Err(ConfigError::Invalid(vec![Problem {
                setting: "upstream".into(),
                message: "incomplete".into(),
                fix: "see the example configuration".into(),
            }])),
        }
    }

    /// Upgrade tokens are protocol names (RFC 9110 §7.8), optionally with `/version`; anything
    /// else could never match a client's token and is a typo worth reporting.
    fn allowed_upgrades(&mut self, raw: Option<Vec<String>>) -> Vec<String> {
        let Some(raw) = raw else {
            return vec!["websocket".to_string()];
        };
        let mut out = Vec::new();
        for (i, token) in raw.iter().enumerate() {
            let valid = !token.is_empty()
                && token.split('/').count() <= 2
                && token
                    .split('/')
                    .all(|part| !part.is_empty() && part.bytes().all(is_tchar));
            if !valid {
                self.problem(
                    format!("proxy.allowed_upgrades[{i}]"),
                    format!("{token:?} is not an upgrade protocol token"),
                    "write a protocol name such as \"websocket\"",
                );
            } else if token.eq_ignore_ascii_case("h2c") {
                self.problem(
                    format!("proxy.allowed_upgrades[{i}]"),
                    "h2c cannot be relayed: an HTTP/2 connection to the platform would bypass the gateway's routing of every later request on it",
                    "remove it; clients reach the gateway over HTTP/2 with TLS (ALPN h2) instead",
                );
            } else {
                out.push(token.to_ascii_lowercase());
            }
        }
        out
    }

    fn listeners(&mut self, raw: Vec<raw::RawListener>) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.problem(
                "listeners",
                "no listener is configured",
                "add a [[listeners]] table with an address, e.g. address = \"0.0.0.0:8443\"",
            );
        }
        let mut out = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let name = format!("listeners[{i}]");
            let address = match l.address.as_deref() {
                Some(a) => self.socket_addr(&format!("{name}.address"), a),
                None => {
                    self.problem(
                        format!("{name}.address"),
                        "is missing",
                        "add address = \"0.0.0.0:8443\"",
                    );
                    None
                }
            };
            let has_tls = l.tls.is_some();
            let tls = l.tls.and_then(|t| self.tls(&format!("{name}.tls"), t));
            let hsts = l
                .hsts
                .and_then(|h| self.hsts(&format!("{name}.hsts"), h, has_tls));
            if let Some(address) = address {
                if address.port() != 0 && out.iter().any(|o: &ListenerConfig| o.address == address)
                {
                    self.problem(
                        format!("{name}.address"),
                        format!("{address} is used by an earlier listener"),
                        "give every listener its own address",
                    );
                }
                out.push(ListenerConfig { address, tls, hsts });
            }
        }
        out
    }

    fn hsts(&mut self, name: &str, h: raw::RawHsts, has_tls: bool) -> Option<http::HeaderValue> {
        if !has_tls {
            // Browsers ignore the header over plain HTTP; set on one it would only mislead.
            self.problem(
                name,
                "is set on a listener without tls",
                "remove hsts from this listener, or give it a tls table",
            );
            return None;
        }
        let Some(max_age) = h.max_age else {
            self.problem(
                format!("{name}.max_age"),
                "is missing",
                "add max_age = 31536000 (seconds; one year)",
            );
            return None;
        };
        let max_age = self.count(&format!("{name}.max_age"), Some(max_age), 0, (0, i64::MAX));
        let mut value = format!("max-age={max_age}");
        if h.include_subdomains.unwrap_or(false) {
            value.push_str("; includeSubDomains");
        }
        http::HeaderValue::from_str(&value).ok()
    }

    fn tls(&mut self, name: &str, t: raw::RawTls) -> Option<TlsSource> {
        if t.self_signed {
            if t.cert.is_some() || t.key.is_some() {
                self.problem(
                    name,
                    "both self_signed = true and cert/key are set",
                    "remove cert and key to generate a certificate, or remove self_signed to use the files",
                );
                return None;
            }
            for (i, n) in t.names.iter().enumerate() {
                if n.is_empty() || n.contains(char::is_whitespace) {
                    self.problem(
                        format!("{name}.names[{i}]"),
                        format!("{n:?} is not a DNS name or IP address"),
                        "write a host name such as \"gateway.example.com\"",
                    );
                }
            }
            let dir = match t.self_signed_dir {
                Some(d) => self.path(&d),
                None => std::env::temp_dir().join("scimgate-selfsigned"),
            };
            return Some(TlsSource::SelfSigned {
                dir,
                names: t.names,
            });
        }
        if t.self_signed_dir.is_some() || !t.names.is_empty() {
            self.problem(
                name,
                "self_signed_dir and names only apply to a generated certificate",
                "set self_signed = true, or remove them",
            );
        }
        match (t.cert, t.key) {
            (Some(cert), Some(key)) => {
                let cert = self.path(&cert);
                let key = self.path(&key);
                let cert_pem = self.readable_file(&format!("{name}.cert"), &cert);
                let key_pem = self.readable_file(&format!("{name}.key"), &key);
                if let (Some(c), Some(k)) = (cert_pem, key_pem) {
                    if let Err(e) = crate::pem::certified_key_from_pem(&c, &k) {
                        self.problem(
                            format!("{name}.cert"),
                            e.to_string(),
                            "give a PEM certificate chain and the private key that matches it",
                        );
                    }
                }
                Some(TlsSource::Files { cert, key })
            }
            _ => {
                self.problem(
                    name,
                    "needs both cert and key, or self_signed = true",
                    "add cert = \"/path/tls.crt\" and key = \"/path/tls.key\", or self_signed = true",
                );
                None
            }
        }
    }

    fn upstream(&mut self, raw: Option<raw::RawUpstream>) -> Option<UpstreamConfig> {
        let Some(u) = raw else {
            self.problem(
                "upstream",
                "is missing",
                "add an [upstream] table with url = \"http://platform:8080\" (or pass --upstream)",
            );
            return None;
        };
        let target = match u.url.as_deref() {
            None => {
                self.problem(
                    "upstream.url",
                    "is missing",
                    "add url = \"http://platform:8080\" (or pass --upstream)",
                );
                None
            }
            Some(url) => self.upstream_url(url),
        };

        let ca_bundle = u.ca_bundle.map(|p| self.path(&p));
        if let Some(ca) = &ca_bundle {
            if let Some(pem) = self.readable_file("upstream.ca_bundle", ca) {
                if let Err(e) = crate::pem::certificates(&pem, "upstream.ca_bundle") {
                    self.problem(
                        "upstream.ca_bundle",
                        e.to_string(),
                        "give a PEM file of the CA certificates that sign the platform's certificate",
                    );
                }
            }
        }
        let client_identity = match (u.client_cert, u.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.path(&cert);
                let cert_pem = self.readable_file("upstream.client_cert", &cert);
                match SecretSource::parse(&key).resolve() {
                    Err(msg) => {
                        self.problem(
                            "upstream.client_key",
                            msg,
                            "give the key's PEM as file:/path, env:NAME or inline",
                        );
                        None
                    }
                    Ok(key) => {
                        if let Some(c) = cert_pem {
                            if let Err(e) =
                                crate::pem::certified_key_from_pem(&c, key.expose().as_bytes())
                            {
                                self.problem(
                                    "upstream.client_cert",
                                    e.to_string(),
                                    "give a PEM certificate and the private key that matches it",
                                );
                            }
                        }
                        Some(ClientIdentity { cert, key })
                    }
                }
            }
            _ => {
                self.problem(
                    "upstream.client_cert",
                    "client_cert and client_key must be given together",
                    "set both, or neither",
                );
                None
            }
        };
        if client_identity.is_some() && matches!(&target, Some((UpstreamScheme::Http, _))) {
            self.problem(
                "upstream.client_cert",
                "a client certificate is only sent over https",
                "use an https:// upstream url, or remove client_cert and client_key",
            );
        }
        let connect_timeout = self.duration(
            "upstream.connect_timeout",
            u.connect_timeout.as_deref(),
            Duration::from_secs(5),
        );
        let request_timeout = self.duration(
            "upstream.request_timeout",
            u.request_timeout.as_deref(),
            Duration::from_secs(60),
        );
        let pool_idle_timeout = self.duration(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout.as_deref(),
            Duration::from_secs(90),
        );
        let pool_max_idle_per_host = self.count(
            "upstream.pool_max_idle_per_host",
            u.pool_max_idle_per_host,
            32,
            (0, 10_000),
        ) as usize;
        let (scheme, authority) = target?;
        Some(UpstreamConfig {
            scheme,
            authority,
            ca_bundle,
            client_identity,
            connect_timeout,
            request_timeout,
            pool_max_idle_per_host,
            pool_idle_timeout,
            http2_prior_knowledge: u.http2_prior_knowledge.unwrap_or(false),
            preserve_host: u.preserve_host.unwrap_or(false),
        })
    }

    fn upstream_url(&mut self, url: &str) -> Option<(UpstreamScheme, http::uri::Authority)> {
        const FIX: &str = "write it as \"http://host:port\" or \"https://host:port\"";
        let uri = match url.parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => {
                self.problem("upstream.url", format!("{url:?} is not a URL: {e}"), FIX);
                return None;
            }
        };
        let scheme = match uri.scheme_str() {
            Some("http") => UpstreamScheme::Http,
            Some("https") => UpstreamScheme::Https,
            Some(other) => {
                self.problem(
                    "upstream.url",
                    format!("scheme {other:?} is not supported"),
                    FIX,
                );
                return None;
            }
            None => {
                self.problem("upstream.url", format!("{url:?} has no scheme"), FIX);
                return None;
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            self.problem("upstream.url", format!("{url:?} has no host"), FIX);
            return None;
        };
        if authority.as_str().contains('@') {
            self.problem(
                "upstream.url",
                "credentials in the URL are not supported",
                "remove user:password@ from the URL",
            );
            return None;
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            self.problem(
                "upstream.url",
                format!("{url:?} has a path or query; requests keep their own path"),
                FIX,
            );
            return None;
        }
        Some((scheme, authority))
    }

    fn platform(&mut self, p: raw::RawPlatform) -> Option<PlatformConfig> {
        let max_concurrency =
            self.count("platform.max_concurrency", p.max_concurrency, 8, (1, 1024)) as usize;
        let retries = self.count("platform.retries", p.retries, 2, (0, 10)) as u32;
        let names = match p.names.as_deref() {
            None | Some("auto") => NameLookup::Auto,
            Some("case-insensitive") => NameLookup::CaseInsensitive,
            Some("case-sensitive") => NameLookup::CaseSensitive,
            Some(other) => {
                self.problem(
                    "platform.names",
                    format!("{other:?} is not a name lookup mode"),
                    "use \"auto\", \"case-insensitive\" (ThingWorx 9.x/10.x) or \"case-sensitive\" (8.x)",
                );
                NameLookup::Auto
            }
        };
        let extensions = match p.extensions.as_deref() {
            None | Some("auto") => ExtensionAccess::Auto,
            Some("property-values") => ExtensionAccess::PropertyValues,
            Some("configuration-table") => ExtensionAccess::ConfigurationTable,
            Some(other) => {
                self.problem(
                    "platform.extensions",
                    format!("{other:?} is not a way to read user extensions"),
                    "use \"auto\", \"property-values\" or \"configuration-table\"",
                );
                ExtensionAccess::Auto
            }
        };
        let secret = |v: &mut Self, setting: &str, spec: &str| -> Option<Secret> {
            match SecretSource::parse(spec).resolve() {
                Ok(s)
                    if s.expose()
                        .bytes()
                        .all(|b| b.is_ascii_graphic() || b == b' ') =>
                {
                    Some(s)
                }
                Ok(_) => {
                    v.problem(
                        setting,
                        "holds control or non-ASCII characters",
                        "check the value; it is sent in an HTTP header",
                    );
                    None
                }
                Err(msg) => {
                    v.problem(setting, msg, "give it as env:NAME, file:/path or inline");
                    None
                }
            }
        };
        let credentials = match (p.app_key, p.username, p.password) {
            (Some(key), None, None) => {
                PlatformCredentials::AppKey(secret(self, "platform.app_key", &key)?)
            }
            (None, Some(username), Some(password)) => {
                if username.contains(':') || username.is_empty() {
                    self.problem(
                        "platform.username",
                        "a user name for Basic authentication cannot be empty or contain ':'",
                        "use an app key (platform.app_key) instead",
                    );
                    return None;
                }
                PlatformCredentials::Basic {
                    username,
                    password: secret(self, "platform.password", &password)?,
                }
            }
            _ => {
                self.problem(
                    "platform",
                    "needs either app_key, or username and password",
                    "set app_key = \"env:SCIMGATE_PLATFORM_APP_KEY\" (recommended) or username and password",
                );
                return None;
            }
        };
        Some(PlatformConfig {
            credentials,
            max_concurrency,
            retries,
            names,
            extensions,
        })
    }

    fn scim_settings(&mut self, raw: &raw::RawScim) -> ScimSettings {
        let bearer_token = raw
            .bearer_token
            .as_deref()
            .and_then(|spec| match SecretSource::parse(spec).resolve() {
                Ok(token) if token.expose().len() >= 16 => Some(token),
                Ok(_) => {
                    self.problem(
                        "scim.bearer_token",
                        "is shorter than 16 characters",
                        "use a long random token, e.g. `openssl rand -base64 32`",
                    );
                    None
                }
                Err(msg) => {
                    self.problem(
                        "scim.bearer_token",
                        msg,
                        "give it as env:NAME, file:/path or inline",
                    );
                    None
                }
            });
        let group_patch_no_content = match raw.group_patch_response.as_deref() {
            None | Some("resource") => false,
            Some("no_content") => true,
            Some(other) => {
                self.problem(
                    "scim.group_patch_response",
                    format!("{other:?} is not a response style"),
                    "use \"resource\" (200 with the group) or \"no_content\" (204)",
                );
                false
            }
        };
        ScimSettings {
            enabled: raw.enabled.unwrap_or(true),
            auto_start: raw.auto_start.unwrap_or(true),
            max_results: self.count("scim.max_results", raw.max_results, 1000, (1, 100_000))
                as usize,
            max_filter_candidates: self.count(
                "scim.max_filter_candidates",
                raw.max_filter_candidates,
                2000,
                (1, 1_000_000),
            ) as usize,
            bearer_token,
            group_patch_no_content,
        }
    }

    fn secret(&mut self, setting: &str, spec: &str) -> Option<Secret> {
        match SecretSource::parse(spec).resolve() {
            Ok(s) => Some(s),
            Err(msg) => {
                self.problem(setting, msg, "give it as env:NAME, file:/path or inline");
                None
            }
        }
    }

    /// An IdP endpoint: https, except on loopback where a local test or development issuer runs.
    fn idp_url(&mut self, setting: &str, url: &str) -> Option<http::Uri> {
        let fix = "use an https:// URL (http:// only for 127.0.0.1, ::1 or localhost)";
        let Ok(uri) = url.parse::<http::Uri>() else {
            self.problem(setting, format!("{url:?} is not a URL"), fix);
            return None;
        };
        let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        match uri.scheme_str() {
            Some("https") if !host.is_empty() => Some(uri),
            Some("http") if loopback => Some(uri),
            _ => {
                self.problem(setting, format!("{url:?} is not an https URL"), fix);
                None
            }
        }
    }

    fn auth(&mut self, a: raw::RawAuth, scim_token: Option<Secret>) -> AuthConfig {
        let own_token = a.bearer_token.as_deref().and_then(|spec| {
            let token = self.secret("auth.bearer_token", spec)?;
            if token.expose().len() < 16 {
                self.problem(
                    "auth.bearer_token",
                    "is shorter than 16 characters",
                    "use a long random token, e.g. `openssl rand -base64 32`",
                );
                return None;
            }
            Some(token)
        });
        if own_token.is_some() && scim_token.is_some() {
            self.problem(
                "auth.bearer_token",
                "is set together with scim.bearer_token",
                "keep one of the two",
            );
        }
        let basic = a.basic.and_then(|b| match (b.username, b.password) {
            (Some(u), Some(p)) if !u.is_empty() && !u.contains(':') => {
                Some((u, self.secret("auth.basic.password", &p)?))
            }
            _ => {
                self.problem(
                    "auth.basic",
                    "needs a username (without ':') and a password",
                    "set username and password (password may be env:NAME or file:/path)",
                );
                None
            }
        });
        let mut jwt = Vec::new();
        for (i, j) in a.jwt.into_iter().enumerate() {
            let name = format!("auth.jwt[{i}]");
            let issuer = j.issuer.filter(|s| !s.is_empty());
            if issuer.is_none() {
                self.problem(
                    format!("{name}.issuer"),
                    "is missing",
                    "set the issuer the tokens carry in `iss` (Entra: https://sts.windows.net/<tenant>/)",
                );
            }
            if j.audiences.is_empty() {
                self.problem(
                    format!("{name}.audiences"),
                    "is empty: tokens for any application would be accepted",
                    "list the audience(s) the tokens carry in `aud` (the platform's authScimOAuthClientId)",
                );
            }
            let hs_secret = j
                .hs_secret
                .as_deref()
                .and_then(|s| self.secret(&format!("{name}.hs_secret"), s));
            let mut algorithms = Vec::new();
            for alg in j.algorithms.unwrap_or_default() {
                match JwtAlgorithm::parse(&alg) {
                    Some(a) => algorithms.push(a),
                    None => self.problem(
                        format!("{name}.algorithms"),
                        format!("{alg:?} is not a supported algorithm"),
                        "use RS256, PS256, ES256, or HS256/HS384/HS512 with hs_secret",
                    ),
                }
            }
            if algorithms.is_empty() {
                algorithms = if hs_secret.is_some() {
                    vec![JwtAlgorithm::HS256]
                } else {
                    vec![
                        JwtAlgorithm::RS256,
                        JwtAlgorithm::PS256,
                        JwtAlgorithm::ES256,
                    ]
                };
            }
            // A shared secret makes the provider an HMAC one and nothing else, so a public key
            // can never be used as an HMAC secret (algorithm confusion).
            let all_hmac = algorithms.iter().all(|a| a.is_hmac());
            let any_hmac = algorithms.iter().any(|a| a.is_hmac());
            if (hs_secret.is_some() && !all_hmac) || (hs_secret.is_none() && any_hmac) {
                self.problem(
                    format!("{name}.algorithms"),
                    "mixes HMAC and public-key algorithms, or lists HS* without hs_secret",
                    "with hs_secret use only HS256/HS384/HS512; without it only RS256/PS256/ES256",
                );
            }
            let jwks_url = match (&j.jwks_url, &hs_secret) {
                (Some(u), _) => self.idp_url(&format!("{name}.jwks_url"), u),
                (None, Some(_)) => None,
                (None, None) => {
                    self.problem(
                        format!("{name}.jwks_url"),
                        "is missing",
                        "set the IdP's JWKS URL (Entra: https://login.microsoftonline.com/common/discovery/keys)",
                    );
                    None
                }
            };
            let leeway = self.duration(
                &format!("{name}.leeway"),
                j.leeway.as_deref(),
                Duration::from_secs(60),
            );
            let refresh_interval = self.duration(
                &format!("{name}.refresh_interval"),
                j.refresh_interval.as_deref(),
                Duration::from_secs(3600),
            );
            let min_refetch_interval = self.duration(
                &format!("{name}.min_refetch_interval"),
                j.min_refetch_interval.as_deref(),
                Duration::from_secs(10),
            );
            if let Some(issuer) = issuer {
                jwt.push(JwtProviderConfig {
                    issuer,
                    audiences: j.audiences,
                    jwks_url,
                    algorithms,
                    leeway,
                    required_claims: j.required_claims.into_iter().collect(),
                    admin_scopes: j.admin_scopes,
                    hs_secret,
                    refresh_interval,
                    min_refetch_interval,
                });
            }
        }
        let introspection = a.introspection.and_then(|i| {
            let endpoint = match i.endpoint.as_deref() {
                Some(e) => self.idp_url("auth.introspection.endpoint", e),
                None => {
                    self.problem(
                        "auth.introspection.endpoint",
                        "is missing",
                        "set the introspection URL (PingFederate: https://<pf>/as/introspect.oauth2)",
                    );
                    None
                }
            };
            let client_secret = match i.client_secret.as_deref() {
                Some(s) => self.secret("auth.introspection.client_secret", s),
                None => {
                    self.problem(
                        "auth.introspection.client_secret",
                        "is missing",
                        "set the secret of the client the gateway introspects with",
                    );
                    None
                }
            };
            let client_id = i.client_id.filter(|c| !c.is_empty());
            if client_id.is_none() {
                self.problem(
                    "auth.introspection.client_id",
                    "is missing",
                    "set the client id the gateway introspects with",
                );
            }
            let cache_max = self.duration(
                "auth.introspection.cache_max",
                i.cache_max.as_deref(),
                Duration::from_secs(300),
            );
            let negative_cache = self.duration(
                "auth.introspection.negative_cache",
                i.negative_cache.as_deref(),
                Duration::from_secs(5),
            );
            Some(IntrospectionConfig {
                endpoint: endpoint?,
                client_id: client_id?,
                client_secret: client_secret?,
                client_ids: i.client_ids,
                audiences: i.audiences,
                admin_scopes: i.admin_scopes,
                cache_max,
                negative_cache,
            })
        });
        let max_failures_per_minute = self.count(
            "auth.max_failures_per_minute",
            a.max_failures_per_minute,
            10,
            (1, 100_000),
        ) as u32;
        let ca_bundle = a.ca_bundle.map(|p| self.path(&p));
        AuthConfig {
            bearer_token: own_token.or(scim_token),
            basic,
            jwt,
            introspection,
            max_failures_per_minute,
            ca_bundle,
        }
    }

    fn tags(&mut self, setting: &str, raw: Option<Vec<String>>) -> Option<Vec<crate::tag::Tag>> {
        let raw = raw?;
        let mut tags = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            match crate::tag::Tag::parse(t) {
                Some(tag) => tags.push(tag),
                None => self.problem(
                    format!("{setting}[{i}]"),
                    format!("{t:?} is not a tag"),
                    "write tags as \"Vocabulary:Term\"",
                ),
            }
        }
        Some(tags)
    }

    fn provisioning(&mut self, p: raw::RawProvisioning) -> ProvisioningConfig {
        let deprovision = match p.deprovision.as_deref() {
            None | Some("delete") => DeprovisionMode::Delete,
            Some("disable") => DeprovisionMode::Disable,
            Some(other) => {
                self.problem(
                    "provisioning.deprovision",
                    format!("{other:?} is not a deprovisioning mode"),
                    "use \"delete\" or \"disable\"",
                );
                DeprovisionMode::Delete
            }
        };
        let max_users = p
            .max_users
            .map(|n| self.count("provisioning.max_users", Some(n), 0, (0, 10_000_000)) as usize);
        let password_min_length = self.count(
            "provisioning.password_min_length",
            p.password_min_length,
            DEFAULT_PASSWORD_MIN_LENGTH as i64,
            (1, crate::builtin::MAX_PASSWORD_CHARS as i64),
        ) as usize;
        let external_id_property = p.external_id_property.filter(|s| !s.is_empty());
        let user_external_id_vocabulary = match p.user_external_id_vocabulary {
            None => Some("SCIMExternalId".to_string()),
            Some(s) if s.is_empty() => None,
            Some(s) if s.contains([':', ';']) => {
                self.problem(
                    "provisioning.user_external_id_vocabulary",
                    format!("{s:?} cannot be a vocabulary name"),
                    "use a name without ':' or ';', or \"\" to drop user externalIds",
                );
                None
            }
            Some(s) => Some(s),
        };
        let group_external_id_vocabulary = match p.group_external_id_vocabulary {
            None => Some("SCIMExternalId".to_string()),
            Some(s) if s.is_empty() => None,
            Some(s) if s.contains([':', ';']) => {
                self.problem(
                    "provisioning.group_external_id_vocabulary",
                    format!("{s:?} cannot be a vocabulary name"),
                    "use a name without ':' or ';', or \"\" to drop group externalIds",
                );
                None
            }
            Some(s) => Some(s),
        };
        let mut user_attributes = crate::builtin::default_user_attributes();
        for (slot, property) in p.user_attributes {
            if !crate::builtin::is_known_slot(&slot) {
                self.problem(
                    format!("provisioning.user_attributes.{slot:?}"),
                    "is not a SCIM attribute scimgate can map",
                    &format!("use one of: {}", crate::builtin::known_slots().join(", ")),
                );
                continue;
            }
            if property.is_empty() {
                user_attributes.remove(&slot);
            } else {
                user_attributes.insert(slot, property);
            }
        }
        let mut seen_targets: Vec<&String> = Vec::new();
        for property in user_attributes.values() {
            if seen_targets.contains(&property) || Some(property) == external_id_property.as_ref() {
                self.problem(
                    "provisioning.user_attributes",
                    format!("property {property:?} receives two SCIM attributes"),
                    "map every extension property from one SCIM attribute at most",
                );
            }
            seen_targets.push(property);
        }
        let mut group_mappings = Vec::new();
        for (idp, platform) in p.group_mappings {
            if idp.trim().is_empty() || platform.trim().is_empty() {
                self.problem(
                    "provisioning.group_mappings",
                    "a mapping has an empty group name",
                    "write \"IdP group\" = \"Platform group\"",
                );
                continue;
            }
            group_mappings.push((idp, platform));
        }
        let user_defaults = UserDefaults {
            description: p.user_defaults.description,
            project: p.user_defaults.project,
            home_mashup: p.user_defaults.home_mashup,
            mobile_mashup: p.user_defaults.mobile_mashup,
            tags: self.tags("provisioning.user_defaults.tags", p.user_defaults.tags),
        };
        let group_defaults = GroupDefaults {
            description: p.group_defaults.description,
            project: p.group_defaults.project,
            tags: self.tags("provisioning.group_defaults.tags", p.group_defaults.tags),
        };
        ProvisioningConfig {
            user_exclusions: p.user_exclusions,
            group_exclusions: p.group_exclusions.unwrap_or_default(),
            deprovision,
            max_users,
            password_min_length,
            terminate_sessions_on_config_change: p
                .terminate_sessions_on_config_change
                .unwrap_or(false),
            external_id_property,
            user_external_id_vocabulary,
            group_external_id_vocabulary,
            audit_log: p.audit_log.map(|a| self.path(&a)),
            user_defaults,
            group_defaults,
            group_mappings,
            user_attributes,
        }
    }

    fn scim_base_path(&mut self, raw: Option<String>) -> String {
        let Some(p) = raw else {
            return DEFAULT_SCIM_BASE_PATH.to_string();
        };
        let trimmed = p.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.contains(['?', '#', ' ']) {
            self.problem(
                "scim.base_path",
                format!("{p:?} is not an absolute URL path"),
                "write a path such as \"/Thingworx/SCIMProvider/SCIM\"",
            );
            return DEFAULT_SCIM_BASE_PATH.to_string();
        }
        trimmed.to_string()
    }
}

/// Where `provisioning.group_mappings` (SCIM) and the SSO authenticator's table (SAML sign-in)
/// disagree about an identity provider's group, compared in the folded form the provisioning
/// policy uses: a warning when both map it, to different platform groups; a note when only one
/// maps it.
fn compare_group_mappings(
    scim: &[(String, String)],
    saml: &[import::SsoGroupMapping],
) -> Vec<String> {
    use crate::builtin::policy_key;
    use std::collections::BTreeMap;
    /// IdP group key → (the IdP group as first written, its platform groups as written).
    type Side = BTreeMap<String, (String, Vec<String>)>;
    fn add(side: &mut Side, idp: &str, platform: &str) {
        let entry = side
            .entry(policy_key(idp))
            .or_insert_with(|| (idp.to_string(), Vec::new()));
        if !entry
            .1
            .iter()
            .any(|p| policy_key(p) == policy_key(platform))
        {
            entry.1.push(platform.to_string());
        }
    }
    fn keys(groups: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = groups.iter().map(|g| policy_key(g)).collect();
        keys.sort();
        keys
    }
    fn listed(groups: &[String]) -> String {
        groups
            .iter()
            .map(|g| format!("{g:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let mut scim_side = Side::new();
    for (idp, platform) in scim {
        add(&mut scim_side, idp, platform);
    }
    let mut saml_side = Side::new();
    for m in saml {
        add(&mut saml_side, &m.idp_group, &m.platform_group);
    }
    let mut out = Vec::new();
    for (key, (idp, scim_groups)) in &scim_side {
        match saml_side.get(key) {
            Some((_, saml_groups)) if keys(scim_groups) != keys(saml_groups) => out.push(format!(
                "warning: the identity provider's group {idp:?} maps to {} in provisioning.group_mappings (SCIM) but to {} in the SSO authenticator's table (import.sso_group_mappings, SAML sign-in); SCIM provisioning and SAML sign-in put its members into different platform groups",
                listed(scim_groups),
                listed(saml_groups)
            )),
            Some(_) => {}
            None => out.push(format!(
                "the identity provider's group {idp:?} is mapped to {} in provisioning.group_mappings (SCIM) but not in the SSO authenticator's table (import.sso_group_mappings)",
                listed(scim_groups)
            )),
        }
    }
    for (key, (idp, saml_groups)) in &saml_side {
        // Without a mapping SCIM uses the platform group of the IdP group's own name, so a SAML
        // row saying the same is no surprise.
        if scim_side.contains_key(key) || saml_groups.iter().all(|g| &policy_key(g) == key) {
            continue;
        }
        out.push(format!(
            "the identity provider's group {idp:?} is mapped to {} in the SSO authenticator's table (import.sso_group_mappings) but not in provisioning.group_mappings, so SCIM provisions it as the platform group {idp:?}",
            listed(saml_groups)
        ));
    }
    out
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Durations are written with a unit ("250ms", "5s", "2m", "1h") so nobody has to guess.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("unit {other:?} in {s:?} is not one of ms, s, m, h")),
    };
    Ok(d)
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/nonexistent"), &Overrides::default())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n",
        )
        .unwrap();
        assert_eq!(c.upstream.scheme, UpstreamScheme::Http);
        assert_eq!(c.upstream.port(), 8080);
        assert_eq!(c.scim_base_path, DEFAULT_SCIM_BASE_PATH);
        assert_eq!(c.limits.max_header_bytes, 64 * 1024);
        assert_eq!(c.admin_address, "127.0.0.1:9090".parse().unwrap());
        assert!(c.listeners[0].tls.is_none());
    }

    #[test]
    fn upgrades_default_to_websocket_and_refuse_h2c() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n";
        assert_eq!(parse_str(base).unwrap().allowed_upgrades, ["websocket"]);
        let c = parse_str(&format!(
            "{base}[proxy]\nallowed_upgrades = [\"WebSocket\", \"foo/2\"]\n"
        ))
        .unwrap();
        assert_eq!(c.allowed_upgrades, ["websocket", "foo/2"]);
        let err = parse_str(&format!(
            "{base}[proxy]\nallowed_upgrades = [\"h2c\", \"a b\"]\n"
        ))
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err}")
        };
        let settings: Vec<&str> = problems.iter().map(|p| p.setting.as_str()).collect();
        assert_eq!(
            settings,
            ["proxy.allowed_upgrades[0]", "proxy.allowed_upgrades[1]"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse_str(
            r#"
[[listeners]]
address = "nonsense"
tls = { cert = "/missing.crt", key = "/missing.key" }
[upstream]
url = "ftp://x"
connect_timeout = "5 parsecs"
[proxy]
trusted_proxies = ["10.0.0.0/33"]
[limits]
max_connections = 0
[log]
format = "xml"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err}")
        };
        let settings: Vec<&str> = problems.iter().map(|p| p.setting.as_str()).collect();
        for expected in [
            "listeners[0].address",
            "listeners[0].tls.cert",
            "listeners[0].tls.key",
            "upstream.url",
            "upstream.connect_timeout",
            "proxy.trusted_proxies[0]",
            "limits.max_connections",
            "log.format",
        ] {
            assert!(
                settings.contains(&expected),
                "{expected} not in {settings:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse_str(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://a\"\n[limits]\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn override_supplies_the_upstream() {
        let c = parse(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            Path::new("."),
            &Overrides {
                upstream_url: Some("https://platform:8443".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.upstream.scheme, UpstreamScheme::Https);
        assert_eq!(c.upstream.authority.as_str(), "platform:8443");
    }

    #[test]
    fn upstream_url_with_path_is_refused() {
        let err = parse_str(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://a/Thingworx\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("upstream.url"));
    }

    fn with_import(extra: &str, sso: &str) -> Config {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/platform");
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://a:8080\"\n{extra}\n[import]\nplatform_settings = \"platform-settings.json\"\nsso_settings = \"{sso}\"\n"
        );
        parse(&text, &fixtures, &Overrides::default()).unwrap()
    }

    #[test]
    fn platform_settings_files_give_the_effective_config() {
        let entra = with_import("", "sso-settings-entra.json");
        assert!(entra.scim.enabled);
        assert!(
            !entra.scim.auto_start,
            "autoStart false in platform-settings.json"
        );
        assert_eq!(entra.auth.jwt.len(), 1);
        let jwt = &entra.auth.jwt[0];
        assert_eq!(
            jwt.issuer,
            "https://sts.windows.net/00000000-0000-0000-0000-000000000000/"
        );
        assert_eq!(
            jwt.jwks_url.as_ref().map(|u| u.to_string()).as_deref(),
            Some("https://login.microsoftonline.com/common/discovery/keys")
        );
        assert!(!jwt.audiences.is_empty());
        assert!(entra
            .notes
            .iter()
            .any(|n| n.contains("ignorePFTestConnections")));

        let ping = with_import("", "sso-settings-pingfederate.json");
        let i = ping.auth.introspection.as_ref().unwrap();
        assert_eq!(i.client_id, "SCIMClient");
        assert!(i.endpoint.to_string().ends_with("/as/introspect.oauth2"));
        assert!(!format!("{ping:?}").contains(i.client_secret.expose()));
    }

    #[test]
    fn scimgate_settings_win_over_the_platform_files() {
        let c = with_import(
            "[scim]\nauto_start = true\n[[auth.jwt]]\nissuer = \"https://mine/\"\naudiences = [\"x\"]\njwks_url = \"https://mine/keys\"\n",
            "sso-settings-entra.json",
        );
        assert!(c.scim.auto_start);
        assert_eq!(c.auth.jwt.len(), 1);
        assert_eq!(c.auth.jwt[0].issuer, "https://mine/");
    }

    fn warnings(c: &Config) -> Vec<&str> {
        c.notes
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with("warning:"))
            .collect()
    }

    const BASE: &str = "[[listeners]]\naddress = \"127.0.0.1:0\"\ntls = { self_signed = true }\n[upstream]\nurl = \"http://a:8080\"\n";

    #[test]
    fn mapping_into_an_excluded_group_warns_unless_listed_as_on_purpose() {
        let mappings = "[provisioning.group_mappings]\n\"IdP Admins\" = \"Administrators\"\n\"Audit\" = \"Auditors\"\n";
        let c = parse_str(&format!(
            "{BASE}[provisioning]\ngroup_exclusions = [\"auditors\"]\n{mappings}"
        ))
        .unwrap();
        let w = warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w
            .iter()
            .all(|n| n.contains("excluded_groups_mapped_on_purpose")));

        // Listed in any spelling the policy folds together: silent.
        let c = parse_str(&format!(
            "{BASE}[provisioning]\ngroup_exclusions = [\"auditors\"]\nexcluded_groups_mapped_on_purpose = [\"ADMINISTRATORS\", \" Auditors\"]\n{mappings}"
        ))
        .unwrap();
        assert!(warnings(&c).is_empty(), "{:?}", c.notes);
        // It changes no decision, so it is not part of the provisioning policy.
        let without = parse_str(&format!(
            "{BASE}[provisioning]\ngroup_exclusions = [\"auditors\"]\n{mappings}"
        ))
        .unwrap();
        assert_eq!(c.provisioning, without.provisioning);

        // Entries that match nothing are leftovers or typos.
        let c = parse_str(&format!(
            "{BASE}[provisioning]\nexcluded_groups_mapped_on_purpose = [\"Engineering\", \"Designers\"]\n"
        ))
        .unwrap();
        let w = warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("\"Engineering\", which is not an excluded group"),
            "{w:?}"
        );
        assert!(
            w[1].contains("\"Designers\", but no provisioning.group_mappings entry maps to it"),
            "{w:?}"
        );

        let err = parse_str(&format!(
            "{BASE}[provisioning]\nexcluded_groups_mapped_on_purpose = [\"\"]\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("provisioning.excluded_groups_mapped_on_purpose[0]: is empty"),
            "{err}"
        );
    }

    fn saml(rows: &[(&str, &str)]) -> Vec<import::SsoGroupMapping> {
        rows.iter()
            .map(|(i, p)| import::SsoGroupMapping {
                idp_group: i.to_string(),
                platform_group: p.to_string(),
            })
            .collect()
    }

    fn scim(rows: &[(&str, &str)]) -> Vec<(String, String)> {
        rows.iter()
            .map(|(i, p)| (i.to_string(), p.to_string()))
            .collect()
    }

    #[test]
    fn scim_and_saml_mappings_are_compared_the_way_the_policy_folds_names() {
        let out = compare_group_mappings(
            &scim(&[
                ("Platform Admins", "Administrators"),
                ("Engineering", "Engineering Team"),
                ("Contractors", "External"),
            ]),
            &saml(&[
                // Same group in another spelling on both sides: agreement.
                ("platform%20admins", "ADMINISTRATORS"),
                ("ENGINEERING", "Developers"),
                ("ENGINEERING", "Engineering Team"),
                ("Operators", " operators"),
                ("Auditors", "SecurityAuditors"),
            ]),
        );
        assert_eq!(out.len(), 3, "{out:#?}");
        assert!(out[0].starts_with("the identity provider's group \"Contractors\" is mapped to \"External\" in provisioning.group_mappings (SCIM) but not in"), "{out:#?}");
        assert!(out[1].starts_with("warning: the identity provider's group \"Engineering\" maps to \"Engineering Team\" in provisioning.group_mappings (SCIM) but to \"Developers\", \"Engineering Team\" in the SSO authenticator's table"), "{out:#?}");
        // SAML-only rows naming the IdP group's own name agree with SCIM's default; others not.
        assert!(out[2].starts_with("the identity provider's group \"Auditors\" is mapped to \"SecurityAuditors\" in the SSO authenticator's table"), "{out:#?}");
        assert!(
            out[2].ends_with("SCIM provisions it as the platform group \"Auditors\""),
            "{out:#?}"
        );
        assert!(compare_group_mappings(&[], &[]).is_empty());
    }

    #[test]
    fn sso_group_mapping_file_is_read_and_its_problems_name_the_setting() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/platform");
        let text = format!(
            "{BASE}[provisioning]\nexcluded_groups_mapped_on_purpose = [\"Administrators\"]\n[provisioning.group_mappings]\n\"platform admins\" = \"Administrators\"\n\"Engineering\" = \"Engineering Team\"\n[import]\nsso_group_mappings = \"sso-group-mappings.json\"\n"
        );
        let c = parse(&text, &fixtures, &Overrides::default()).unwrap();
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{:#?}", c.notes);
        assert!(
            w[0].contains("\"Engineering\" maps to \"Engineering Team\""),
            "{w:?}"
        );
        assert!(c
            .notes
            .iter()
            .any(|n| n.starts_with("import: ") && n.contains("row 5")));
        assert!(c
            .notes
            .iter()
            .any(|n| n.contains("\"Auditors\" is mapped to \"SecurityAuditors\"")));

        let text = format!("{BASE}[import]\nsso_group_mappings = \"platform-settings.json\"\n");
        let err = parse(&text, &fixtures, &Overrides::default()).unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err}")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].setting, "import.sso_group_mappings");
        assert!(
            problems[0].message.contains("neither an infotable"),
            "{problems:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("x5s").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
