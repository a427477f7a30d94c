//! Configuration: the TOML file is parsed into `raw` types, then validated into [`Config`].
//! Validation never stops at the first problem: an operator fixing a file wants the whole list.

mod auth;
pub mod import;
mod listeners;
mod platform;
mod provisioning;
mod raw;
mod scim;
mod secret;
mod upstream;

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

    fn secret(&mut self, setting: &str, spec: &str) -> Option<Secret> {
        match SecretSource::parse(spec).resolve() {
            Ok(s) => Some(s),
            Err(msg) => {
                self.problem(setting, msg, "give it as env:NAME, file:/path or inline");
                None
            }
        }
    }
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
    use super::provisioning::compare_group_mappings;
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
