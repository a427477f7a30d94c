//! Command line: subcommands, flags (each also settable by an environment variable), exit codes.

use crate::config::{self, Overrides};
use crate::platform::{PlatformError, ThingWorx};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
See the product work on one machine (development platform + gateway):
  scimgate dev

Quick start (self-signed certificate in front of a platform on port 8080):
  scimgate serve --config config/scimgate.example.toml --upstream http://127.0.0.1:8080
  curl --cacert /tmp/scimgate-selfsigned/cert.pem https://localhost:8443/

Validate a configuration without starting (exit 0 when valid):
  scimgate check --config /etc/scimgate/scimgate.toml

Signals: SIGHUP (serve) re-reads the configuration file and reloads the TLS certificates (new
listener addresses need a restart); SIGTERM/SIGINT drain and exit 0.";

#[derive(Debug, Parser)]
#[command(
    name = "scimgate",
    version,
    about = "TLS-terminating gateway that serves SCIM in front of a ThingWorx-style platform and passes everything else through",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve(ConfigArgs),
    /// Validate the configuration, print every problem, and exit (0 = valid, 1 = invalid).
    /// With --live, also verify the platform behind [platform] can do what the configuration
    /// asks (1 when it cannot); --probe adds a round trip on a throw-away user and group.
    Check(CheckArgs),
    /// Start a development platform and the gateway in front of it (self-signed TLS), for
    /// trying scimgate on one machine. State is kept in --data-dir across restarts.
    Dev(DevArgs),
    /// Print a SCIM access token (a JWT) from the development issuer of `scimgate dev`.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The data directory `scimgate dev` uses.
    #[arg(
        long,
        env = "SCIMGATE_DEV_DATA_DIR",
        default_value = "scimgate-dev",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// How long the token is valid, e.g. 1h or 30m.
    #[arg(
        long,
        env = "SCIMGATE_TOKEN_LIFETIME",
        default_value = "1h",
        value_name = "DURATION"
    )]
    lifetime: String,
    /// Scope the token carries; the development gateway requires "scim".
    #[arg(
        long,
        env = "SCIMGATE_TOKEN_SCOPE",
        default_value = "scim",
        value_name = "SCOPE"
    )]
    scope: String,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Where the development platform keeps its state, certificate and keys.
    #[arg(
        long,
        env = "SCIMGATE_DEV_DATA_DIR",
        default_value = "scimgate-dev",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Gateway (TLS) listen address.
    #[arg(
        long,
        env = "SCIMGATE_DEV_LISTEN",
        default_value = "127.0.0.1:8443",
        value_name = "ADDR"
    )]
    listen: std::net::SocketAddr,
    /// Development platform listen address (plain HTTP).
    #[arg(
        long,
        env = "SCIMGATE_DEV_PLATFORM_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    platform_listen: std::net::SocketAddr,
    /// Admin listener (/healthz, /readyz) address.
    #[arg(
        long,
        env = "SCIMGATE_DEV_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    admin_listen: std::net::SocketAddr,
    /// Log format: json or text.
    // The same values `serve` accepts for log.format: anything else is refused by clap (exit 2)
    // instead of silently becoming text.
    #[arg(
        long,
        env = "SCIMGATE_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT",
        value_parser = ["text", "json"]
    )]
    log_format: String,
    /// Make chosen native calls of the development platform fail, e.g. "lost@3" (the 3rd call
    /// answers nothing after being carried out), "error500:AddMember", "slow:SetPropertyValues@2",
    /// "seed=7,rate=0.05". Kinds: reset, lost, error500, slow. See README "The platform side".
    #[arg(long, env = "SCIMGATE_DEV_FAULTS", value_name = "SPEC", value_parser = crate::dev::platform::FaultSpec::parse)]
    faults: Option<crate::dev::platform::FaultSpec>,
    /// Log level or filter.
    #[arg(
        long,
        env = "SCIMGATE_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    log_level: String,
    /// Which ThingWorx the development platform behaves like: 10 (or 9; the default) looks
    /// names up ignoring case and requires 14–128-character passwords; 8 looks names up as
    /// spelled, requires 10 characters and ignores CreateGroup's projectName.
    #[arg(
        long,
        env = "SCIMGATE_DEV_PLATFORM_FLAVOR",
        default_value = "10",
        value_name = "VERSION"
    )]
    platform_flavor: crate::dev::platform::Flavor,
    /// Answer every native request to the development platform no sooner than this after it
    /// arrived (e.g. 10ms; the platform's own work counts within it), to see a remote
    /// platform's behaviour locally. Units: ms, s, m, h.
    #[arg(
        long,
        env = "SCIMGATE_DEV_PLATFORM_LATENCY",
        default_value = "0ms",
        value_name = "DURATION",
        value_parser = config::parse_duration
    )]
    platform_latency: Duration,
    /// Spread of that delay: each request waits the latency ± up to this much (uniform).
    #[arg(
        long,
        env = "SCIMGATE_DEV_PLATFORM_LATENCY_JITTER",
        default_value = "0ms",
        value_name = "DURATION",
        value_parser = config::parse_duration
    )]
    platform_latency_jitter: Duration,
    /// PBKDF2-HMAC-SHA256 iterations for the passwords the development platform is given
    /// (at least 1000). Lower it only where the platform must not compete for CPU, e.g. a
    /// benchmark on a small machine; each stored hash keeps the count it was made with.
    #[arg(
        long,
        env = "SCIMGATE_DEV_PASSWORD_HASH_ITERATIONS",
        default_value = "100000",
        value_name = "N",
        value_parser = crate::dev::platform::parse_password_iterations
    )]
    password_hash_iterations: std::num::NonZeroU32,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Ask the platform (needs [platform]): credentials and privileges, mapped extension
    /// properties, externalId vocabularies, default projects, mashups and tags, listing.
    #[arg(long)]
    live: bool,
    /// With --live: create, change, read back and delete a throw-away user and group.
    #[arg(long, requires = "live")]
    probe: bool,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Configuration file (TOML); see config/scimgate.example.toml.
    #[arg(short, long, env = "SCIMGATE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Platform URL to forward to (http:// or https://), overriding upstream.url.
    #[arg(long, env = "SCIMGATE_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Log format, overriding log.format: json or text.
    #[arg(long, env = "SCIMGATE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log level or filter, overriding log.level (e.g. info, debug, "info,scimgate=debug").
    #[arg(long, env = "SCIMGATE_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            upstream_url: self.upstream.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(CheckArgs {
            config: args,
            live,
            probe,
        }) => match config::load(&args.config, &args.overrides()) {
            Ok(c) if live => live_verify(&c, &args.config, probe),
            Ok(c) => {
                // With a platform to provision, what the mapping drops is worth knowing before
                // an identity provider sends it.
                let unmapped = c.platform.as_ref().map(|_| {
                    format!(
                        "the attribute mapping does not store these SCIM user attributes (a request that carries them is logged with a warning): {}",
                        crate::scim::mapping::unmapped(&c.provisioning).join(", ")
                    )
                });
                for note in c.notes.iter().chain(&unmapped).chain(&live_check(&c)) {
                    if note.starts_with("warning:") {
                        println!("{note}");
                    } else {
                        println!("note: {note}");
                    }
                }
                println!("{}: configuration OK", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_config_error(&e);
                ExitCode::from(1)
            }
        },
        Command::Token(args) => {
            let lifetime = match config::parse_duration(&args.lifetime) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("--lifetime: {e}");
                    return ExitCode::from(1);
                }
            };
            let minted = crate::dev::issuer::Issuer::open(&args.data_dir, false)
                .and_then(|issuer| issuer.mint("dev-admin", &args.scope, lifetime));
            match minted {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Dev(args) => {
            let _log = crate::logging::init(&config::LogConfig {
                format: if args.log_format == "json" {
                    config::LogFormat::Json
                } else {
                    config::LogFormat::Text
                },
                level: args.log_level.clone(),
            });
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            let options = crate::dev::DevOptions {
                data_dir: args.data_dir,
                listen: args.listen,
                platform_listen: args.platform_listen,
                admin_listen: args.admin_listen,
                log_format: args.log_format,
                log_level: args.log_level,
                faults: args.faults,
                flavor: args.platform_flavor,
                latency: (args.platform_latency, args.platform_latency_jitter),
                password_iterations: args.password_hash_iterations,
            };
            match runtime.block_on(crate::dev::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(crate::dev::DevError::Config(e)) => {
                    report_config_error(&e);
                    ExitCode::from(1)
                }
                Err(e) => {
                    tracing::error!(error = %e, "scimgate dev stopped");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => {
            let config = match config::load(&args.config, &args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    report_config_error(&e);
                    return ExitCode::from(1);
                }
            };
            let _log = crate::logging::init(&config.log);
            for note in &config.notes {
                tracing::info!(note = %note, "configuration note");
            }
            let Some(runtime) = runtime() else {
                return ExitCode::from(2);
            };
            let path = args.config.clone();
            let overrides = args.overrides();
            let serve = async move {
                crate::server::Bound::bind(config)
                    .await?
                    .with_reload(Box::new(move || config::load(&path, &overrides)))
                    .serve()
                    .await
            };
            match runtime.block_on(serve) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "scimgate stopped");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `check --live [--probe]`: the configuration is valid; now the platform is asked.
fn live_verify(config: &config::Config, path: &std::path::Path, probe: bool) -> ExitCode {
    for note in &config.notes {
        println!("note: {note}");
    }
    println!("{}: configuration OK", path.display());
    let Some(platform) = &config.platform else {
        println!("FAIL: --live needs a [platform] table (fix: set [platform] app_key = \"env:SCIMGATE_PLATFORM_APP_KEY\" and upstream.url to the platform)");
        return ExitCode::from(1);
    };
    let mut upstream = config.upstream.clone();
    upstream.request_timeout = upstream.request_timeout.min(LIVE_CHECK_TIMEOUT);
    let platform = config::PlatformConfig {
        retries: 0,
        ..platform.clone()
    };
    let fail = |why: String| {
        println!("FAIL: {why}");
        ExitCode::from(1)
    };
    let client = match crate::proxy::build_upstream_client(&upstream) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot build a client for the platform: {e}")),
    };
    let thingworx = match ThingWorx::new(client, &upstream, &platform) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let suffix: String = match crate::random::token() {
        Ok(t) => t
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect::<String>()
            .to_lowercase(),
        Err(_) => return fail("the system has no secure random numbers to offer".into()),
    };
    let at = format!("{}://{}", upstream.scheme.as_str(), upstream.authority);
    println!("live check of the platform at {at}:");
    let report = runtime.block_on(crate::live_check::verify(
        &thingworx, config, probe, &suffix,
    ));
    for line in &report.lines {
        println!("{line}");
    }
    if report.failures == 0 {
        println!("live check: OK");
        ExitCode::SUCCESS
    } else {
        println!("live check: {} failed", report.failures);
        ExitCode::from(1)
    }
}

/// Longest `check` waits for one platform answer: it is run by hand or in CI, where a platform
/// that accepts connections but does not answer should not hold it up for `request_timeout`.
const LIVE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// `check`'s questions to the platform: whether the projects and mashups the provisioning
/// defaults name exist there, and whether its `UserExtensions` shape has every property the
/// attribute mapping names. Returns lines in the form of configuration notes. Not getting an
/// answer is a note, never a failed check: the platform may well be down while its gateway's
/// configuration is prepared.
fn live_check(config: &config::Config) -> Vec<String> {
    let named = crate::provisioning::named_entities(&config.provisioning);
    if named.is_empty() && config.platform.is_none() {
        return Vec::new();
    }
    let skipped = |why: &str| {
        vec![format!(
            "live check of the provisioning defaults skipped: {why}"
        )]
    };
    let Some(platform) = &config.platform else {
        return skipped("there is no [platform] table, so no credentials to ask the platform with");
    };
    let mut upstream = config.upstream.clone();
    upstream.request_timeout = upstream.request_timeout.min(LIVE_CHECK_TIMEOUT);
    // One attempt: a platform that refuses the connection is reported at once, not retried.
    let platform = config::PlatformConfig {
        retries: 0,
        ..platform.clone()
    };
    let client = match crate::proxy::build_upstream_client(&upstream) {
        Ok(c) => c,
        Err(e) => return skipped(&format!("cannot build a client for the platform: {e}")),
    };
    let thingworx = match ThingWorx::new(client, &upstream, &platform) {
        Ok(t) => t,
        Err(e) => return skipped(&e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return skipped(&format!("cannot start the async runtime: {e}")),
    };
    let at = format!("{}://{}", upstream.scheme.as_str(), upstream.authority);
    let mut lines = Vec::new();
    if !named.is_empty() {
        match runtime.block_on(crate::provisioning::missing_defaults(
            &thingworx,
            &config.provisioning,
        )) {
            Ok(missing) => lines.extend(missing.iter().map(|m| {
                let kind = m.kind.as_str().to_lowercase();
                let provisioned = if m.setting.contains("group_defaults") {
                    "groups"
                } else {
                    "users"
                };
                format!(
                    "warning: {}: the platform at {at} has no {kind} {:?}; {provisioned} provisioned with this default would name a {kind} that is not there (create it on the platform or correct the name)",
                    m.setting, m.name
                )
            })),
            // Reached, but the gateway's own credentials do not work: provisioning would fail
            // too. The platform will not answer the next question either.
            Err(e @ PlatformError::Unauthorized { .. }) => {
                return vec![format!(
                    "warning: live check of the provisioning defaults skipped: {e} (check platform.app_key, or platform.username and platform.password)"
                )]
            }
            Err(e) => return skipped(&format!("asking the platform at {at} failed: {e}")),
        }
    }
    lines.extend(missing_properties(&runtime, &thingworx, config, &at));
    lines
}

/// Every mapped extension property the platform's `UserExtensions` shape lacks, as a warning
/// naming the setting: each would turn a user write into a 500.
fn missing_properties(
    runtime: &tokio::runtime::Runtime,
    platform: &ThingWorx,
    config: &config::Config,
    at: &str,
) -> Vec<String> {
    use crate::platform::Platform;
    let settings = crate::scim::mapping::property_settings(&config.provisioning);
    if settings.is_empty() {
        return Vec::new();
    }
    let defined = match runtime.block_on(platform.user_extension_properties()) {
        Ok(Some(defined)) => defined,
        Ok(None) => return Vec::new(),
        Err(e @ PlatformError::Unauthorized { .. }) => {
            return vec![format!(
                "warning: live check of the attribute mapping skipped: {e} (check platform.app_key, or platform.username and platform.password)"
            )]
        }
        Err(e) => {
            return vec![format!(
                "live check of the attribute mapping skipped: asking the platform at {at} for the UserExtensions thing shape failed: {e}"
            )]
        }
    };
    settings
        .iter()
        .filter(|(_, property)| !defined.iter().any(|d| d == property))
        .map(|(setting, property)| {
            format!(
                "warning: {setting}: the platform at {at} has no user extension property {property:?} (its UserExtensions thing shape lacks it); every user write that sets it would fail with a 500 (add the property to the shape or map the attribute to an existing property)"
            )
        })
        .collect()
}

/// The async runtime, sized from the CPUs this process may use (affinity and cgroup quota).
/// On one CPU it is a single-threaded runtime: a multi-threaded one with one worker still pays
/// for cross-thread wake-ups and for its last-woken-first scheduling, which under many
/// concurrent HTTP/2 streams doubled the p99 latency.
fn runtime() -> Option<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut builder, flavor) = if cpus == 1 {
        (
            tokio::runtime::Builder::new_current_thread(),
            "current_thread",
        )
    } else {
        (tokio::runtime::Builder::new_multi_thread(), "multi_thread")
    };
    match builder.enable_all().build() {
        Ok(rt) => {
            tracing::info!(runtime = flavor, cpus, "async runtime");
            Some(rt)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            None
        }
    }
}

/// One problem per line, each starting with the setting's name, so the list reads like a to-do.
fn report_config_error(e: &config::ConfigError) {
    match e {
        config::ConfigError::Invalid(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found; nothing was started", problems.len());
        }
        other => eprintln!("{other}"),
    }
}
