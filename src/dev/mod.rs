//! `scimgate dev`: the development platform and the gateway in front of it, in one process, so a
//! newcomer sees the product work with one command.

pub mod issuer;
pub mod platform;

use crate::config::{self, ConfigError, Overrides};
use crate::fsutil::{write_atomically, Access};
use crate::server::{Bound, ServerError};
use issuer::Issuer;
use platform::{DevPlatform, DevPlatformError, Flavor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// The application key the gateway uses to call the development platform.
pub const GATEWAY_APP_KEY_NAME: &str = "scimgate-gateway";
pub const GATEWAY_APP_KEY_FILE: &str = "gateway.appkey";
/// The bearer token identity providers (and the newcomer's curl) present to SCIM.
pub const SCIM_TOKEN_FILE: &str = "scim.token";
pub const AUDIT_LOG_FILE: &str = "audit.jsonl";

pub struct DevOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub platform_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub log_format: String,
    pub log_level: String,
    /// Faults the development platform injects from the start (`--faults`).
    pub faults: Option<platform::FaultSpec>,
    /// Which ThingWorx version the development platform behaves like.
    pub flavor: Flavor,
    /// Emulated platform latency and its jitter (`--platform-latency`, `--platform-latency-jitter`).
    pub latency: (std::time::Duration, std::time::Duration),
    /// PBKDF2 iterations for passwords set from now on (`--password-hash-iterations`).
    pub password_iterations: std::num::NonZeroU32,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("development platform: {0}")]
    Platform(#[from] DevPlatformError),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {address} for the development platform: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Server(#[from] ServerError),
    #[error("development token issuer: {0}")]
    Issuer(#[from] issuer::IssuerError),
}

pub async fn run(options: DevOptions) -> Result<(), DevError> {
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| DevError::Io { path, source }
    };
    std::fs::create_dir_all(&options.data_dir).map_err(io_error(&options.data_dir))?;
    let data_dir = std::fs::canonicalize(&options.data_dir).map_err(io_error(&options.data_dir))?;

    let platform = DevPlatform::open_with(&data_dir, options.flavor, options.password_iterations)?;
    tracing::info!(
        flavor = options.flavor.as_str(),
        "development platform flavor"
    );
    let key = platform.ensure_app_key(GATEWAY_APP_KEY_NAME, "Administrator")?;
    let key_file = data_dir.join(GATEWAY_APP_KEY_FILE);
    write_atomically(&key_file, key.as_bytes(), Access::OwnerOnly).map_err(io_error(&key_file))?;

    let token_file = data_dir.join(SCIM_TOKEN_FILE);
    if !token_file.exists() {
        let token = crate::random::token().map_err(|e| DevError::Io {
            path: token_file.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&token_file, token.as_bytes(), Access::OwnerOnly)
            .map_err(io_error(&token_file))?;
    }

    let issuer = Issuer::open(&data_dir, true)?;
    let jwks_socket = tokio::net::TcpListener::bind((options.platform_listen.ip(), 0))
        .await
        .map_err(|source| DevError::Bind {
            address: options.platform_listen,
            source,
        })?;
    let jwks_address = jwks_socket.local_addr().map_err(|source| DevError::Bind {
        address: options.platform_listen,
        source,
    })?;
    tracing::info!(listener = "jwks", address = %jwks_address, tls = false, "listening");
    tokio::spawn(issuer::serve_jwks(jwks_socket, issuer.jwks()));

    let platform_socket = tokio::net::TcpListener::bind(options.platform_listen)
        .await
        .map_err(|source| DevError::Bind {
            address: options.platform_listen,
            source,
        })?;
    let platform_address = platform_socket
        .local_addr()
        .map_err(|source| DevError::Bind {
            address: options.platform_listen,
            source,
        })?;
    tracing::info!(listener = "platform", address = %platform_address, tls = false, "listening");

    let tls_dir = data_dir.join("tls");
    let config_text = format!(
        "[[listeners]]\naddress = {listen}\ntls = {{ self_signed = true, self_signed_dir = {tls_dir} }}\n\n\
         [upstream]\nurl = {upstream}\n\n\
         [admin]\naddress = {admin}\n\n\
         [log]\nformat = {format}\nlevel = {level}\n\n\
         [platform]\napp_key = {key_ref}\n\n\
         [scim]\nbearer_token = {token_ref}\n\n\
         [provisioning]\naudit_log = {audit}\npassword_min_length = {password_min}\n\n\
         [[auth.jwt]]\nissuer = {issuer}\naudiences = [{audience}]\njwks_url = {jwks}\n\
         algorithms = [\"ES256\"]\nadmin_scopes = [{scope}]\n",
        listen = toml_string(&options.listen.to_string()),
        tls_dir = toml_string(&tls_dir.display().to_string()),
        upstream = toml_string(&format!("http://{platform_address}")),
        admin = toml_string(&options.admin_listen.to_string()),
        format = toml_string(&options.log_format),
        level = toml_string(&options.log_level),
        key_ref = toml_string(&format!("file:{}", key_file.display())),
        token_ref = toml_string(&format!("file:{}", token_file.display())),
        audit = toml_string(&data_dir.join(AUDIT_LOG_FILE).display().to_string()),
        password_min = options.flavor.min_password_chars(),
        issuer = toml_string(issuer::ISSUER),
        audience = toml_string(issuer::AUDIENCE),
        jwks = toml_string(&format!("http://{jwks_address}/jwks.json")),
        scope = toml_string(issuer::ADMIN_SCOPE),
    );
    let config = config::parse(&config_text, &data_dir, &Overrides::default())?;
    // A `slow` answer must come after the gateway has given up on it.
    platform.set_slow_default(config.upstream.request_timeout + std::time::Duration::from_secs(1));
    platform.set_latency(options.latency.0, options.latency.1);
    if let Some(spec) = options.faults {
        platform.set_faults(spec);
    }
    let bound = Bound::bind(config).await?;
    let gateway_address = bound
        .gateway_addresses()
        .first()
        .copied()
        .unwrap_or(options.listen);
    print_banner(
        &data_dir,
        gateway_address,
        platform_address,
        bound.admin_address(),
    );

    let stop_platform = CancellationToken::new();
    let platform_task = tokio::spawn(platform.serve(platform_socket, stop_platform.clone()));
    let served = bound.serve().await;
    stop_platform.cancel();
    let _ = platform_task.await;
    served?;
    Ok(())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn print_banner(data: &Path, gateway: SocketAddr, platform: SocketAddr, admin: SocketAddr) {
    let host = if gateway.ip().is_loopback() || gateway.ip().is_unspecified() {
        format!("localhost:{}", gateway.port())
    } else {
        gateway.to_string()
    };
    let cert = data
        .join("tls")
        .join(crate::server::tls::SELF_SIGNED_CERT_FILE);
    let key = data.join(GATEWAY_APP_KEY_FILE);
    // The running binary, not a bare `scimgate`: after `cargo run` none is on the PATH.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "scimgate".to_string());
    println!(
        "\nscimgate development environment is running (Ctrl-C to stop)\n\
         \x20 gateway   https://{host}/   (self-signed certificate: {cert})\n\
         \x20 platform  http://{platform}/Thingworx   (development platform; state in {data})\n\
         \x20 admin     http://{admin}/readyz\n\
         \x20 secrets   Administrator password in {data}/administrator.password, gateway app key in {key},\n\
         \x20           SCIM bearer token in {token}; audit log in {data}/{audit}\n\
         \nNext, provision a user through SCIM 1.1 and list users:\n\
         \x20 curl --cacert {cert} -H \"Authorization: Bearer $(cat {token})\" -H 'Content-Type: application/json' \
         -d '{{\"userName\":\"jdoe@example.com\",\"name\":{{\"givenName\":\"Jane\",\"familyName\":\"Doe\"}}}}' \
         https://{host}/Thingworx/SCIMProvider/SCIM/Users\n\
         \x20 curl --cacert {cert} -H \"Authorization: Bearer $(cat {token})\" https://{host}/Thingworx/SCIMProvider/SCIM/Users\n\
         \nOr with an OAuth token from the development issuer (a JWT, checked like Entra ID's):\n\
         \x20 curl --cacert {cert} -H \"Authorization: Bearer $({exe} token --data-dir {data})\" https://{host}/Thingworx/SCIMProvider/SCIM/Users\n\
         \nOr call the platform's native API through the gateway:\n\
         \x20 curl --cacert {cert} -H \"appKey: $(cat {key})\" -H 'Accept: application/json' \
         -H 'Content-Type: application/json' -d '{{\"type\":\"User\"}}' \
         https://{host}/Thingworx/Resources/EntityServices/Services/GetEntityList\n",
        cert = cert.display(),
        data = data.display(),
        key = key.display(),
        token = data.join(SCIM_TOKEN_FILE).display(),
        audit = AUDIT_LOG_FILE,
    );
}
