//! The environment most SCIM suites judge the gateway in: the development platform in this
//! process, the real gateway binary over TLS in front of it, a SCIM client, and the gateway's own
//! native client pointed at the same platform, so a test reads the platform's state straight
//! from it rather than trusting the gateway's answer.

use super::scim::Scim;
use super::{config_toml, self_signed_listener, Gateway};
use scimgate::config::{self, Overrides};
use scimgate::dev::platform::{DevPlatform, Flavor};
use scimgate::platform::{Platform, PlatformError, ThingWorx};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The SCIM bearer token the suites configure: 32 characters, as a real deployment's would be.
pub const TOKEN: &str = "scimgate-test-token-0123456789ab";

/// What differs between suites; `Default` is a stock 10.x platform, bearer-token SCIM and an
/// audit log in the gateway's directory.
#[derive(Default)]
pub struct DevEnvSpec<'a> {
    /// Which platform version the development platform behaves as.
    pub flavor: Option<Flavor>,
    /// Keys of `[platform]` after the app key.
    pub platform: &'a str,
    /// The `[scim]`/`[auth]` tables; `None` is `[scim] bearer_token = TOKEN` plus `scim`.
    pub auth: Option<&'a str>,
    /// More keys for the default `[scim]` table.
    pub scim: &'a str,
    /// Keys of `[provisioning]` (after `audit_log`) followed by any of its sub-tables.
    pub provisioning: &'a str,
    /// Keys of `[upstream]` beyond its URL.
    pub upstream: &'a str,
    /// More environment for the gateway process (secrets).
    pub env: &'a [(&'a str, &'a str)],
    /// `Accept` the SCIM client sends when a request names none.
    pub default_accept: Option<&'static str>,
    /// Keep the platform's state in memory (a tmpfs) where the machine has one: the platform
    /// fsyncs every change, and on a busy disk that alone can outlast a short upstream timeout.
    pub state_in_memory: bool,
}

/// The development platform served on a loopback port, with an Administrator app key; it stops
/// serving when dropped.
pub struct ServedPlatform {
    pub dev: Arc<DevPlatform>,
    pub addr: SocketAddr,
    /// An app key acting as Administrator.
    pub key: String,
    /// The platform's data directory.
    pub dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for ServedPlatform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ServedPlatform {
    /// A stock 10.x platform with its state on disk.
    pub async fn start() -> ServedPlatform {
        ServedPlatform::start_with(None, false, |_| {}).await
    }

    /// `state_in_memory`: on a tmpfs where the machine has one; `prepare` runs before the
    /// platform serves.
    pub async fn start_with(
        flavor: Option<Flavor>,
        state_in_memory: bool,
        prepare: impl FnOnce(&DevPlatform),
    ) -> ServedPlatform {
        scimgate::install_crypto_provider();
        let shm = std::path::Path::new("/dev/shm");
        let dir = if state_in_memory && shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let dev = match flavor {
            Some(flavor) => DevPlatform::open_flavored(dir.path(), flavor).unwrap(),
            None => DevPlatform::open(dir.path()).unwrap(),
        };
        prepare(&dev);
        let key = dev
            .ensure_app_key("scimgate-tests", "Administrator")
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(dev.clone().serve(listener, stop.clone()));
        ServedPlatform {
            dev,
            addr,
            key,
            dir,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway's own native client with this platform's app key.
    pub fn client(&self) -> ThingWorx {
        platform_client(self.addr, &format!("app_key = \"{}\"", self.key))
    }
}

pub struct DevEnv {
    pub gw: Gateway,
    pub scim: Scim,
    /// The development platform itself, for fault injection and direct preparation.
    pub dev: Arc<DevPlatform>,
    pub platform_addr: SocketAddr,
    /// The platform app key the gateway uses.
    pub key: String,
    /// The gateway's own native client, with the gateway's app key.
    pub tw: ThingWorx,
    _platform: ServedPlatform,
}

impl DevEnv {
    pub async fn start(spec: DevEnvSpec<'_>) -> DevEnv {
        DevEnv::start_prepared(spec, |_| {}).await
    }

    /// `prepare` runs on the development platform before the gateway starts (and probes it).
    pub async fn start_prepared(
        spec: DevEnvSpec<'_>,
        prepare: impl FnOnce(&DevPlatform),
    ) -> DevEnv {
        let platform = ServedPlatform::start_with(spec.flavor, spec.state_in_memory, prepare).await;
        let key = platform.key.clone();
        let default_auth = format!("[scim]\nbearer_token = \"{TOKEN}\"\n{}\n", spec.scim);
        let auth = spec.auth.unwrap_or(&default_auth);
        let extra = format!(
            "[platform]\napp_key = \"{key}\"\n{}\n\n{auth}\n\n[provisioning]\naudit_log = \"@DIR@/audit.jsonl\"\n{}\n",
            spec.platform, spec.provisioning
        );
        let toml = config_toml(
            &self_signed_listener("@DIR@/tls"),
            &platform.url(),
            spec.upstream,
            &extra,
        );
        let gw = Gateway::start_with_env(&toml, spec.env).await;
        let scim = Scim::of(&gw, spec.default_accept);
        DevEnv {
            gw,
            scim,
            dev: platform.dev.clone(),
            platform_addr: platform.addr,
            key,
            tw: platform.client(),
            _platform: platform,
        }
    }

    /// A native client with other credentials (Basic opens a platform session, as a browser
    /// login does).
    pub fn platform_as(&self, credentials: &str) -> ThingWorx {
        platform_client(self.platform_addr, credentials)
    }

    pub async fn user_exists(&self, name: &str) -> bool {
        match self.tw.get_user(name).await {
            Ok(_) => true,
            Err(PlatformError::NotFound(_)) => false,
            Err(e) => panic!("get_user {name}: {e}"),
        }
    }

    pub async fn group_exists(&self, name: &str) -> bool {
        match self.tw.get_group(name).await {
            Ok(_) => true,
            Err(PlatformError::NotFound(_)) => false,
            Err(e) => panic!("get_group {name}: {e}"),
        }
    }

    /// The user's extension properties, plus its externalId under "scimExternalId": the term
    /// of its `SCIMExternalId` tag, where a stock platform keeps it.
    pub async fn ext(&self, name: &str) -> scimgate::platform::Extensions {
        let mut ext = self.tw.user_extensions(name).await.unwrap();
        let user = self.tw.get_user(name).await.unwrap();
        if let Some(t) = user.tags.iter().find(|t| t.vocabulary == "SCIMExternalId") {
            ext.insert("scimExternalId".into(), t.term.clone());
        }
        ext
    }

    /// Members of a platform group as sorted `kind:lowercase-name` strings.
    pub async fn members(&self, group: &str) -> Vec<String> {
        let mut m: Vec<String> = self
            .tw
            .group_members(group)
            .await
            .unwrap()
            .into_iter()
            .map(|m| format!("{}:{}", m.kind.as_str(), m.name.to_lowercase()))
            .collect();
        m.sort();
        m
    }
}

/// A native client to a development platform, built as the gateway builds its own.
pub fn platform_client(addr: SocketAddr, credentials: &str) -> ThingWorx {
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{addr}\"\n[platform]\n{credentials}\n"
    );
    let config = config::parse(&text, std::path::Path::new("."), &Overrides::default()).unwrap();
    let client = scimgate::proxy::build_upstream_client(&config.upstream).unwrap();
    ThingWorx::new(client, &config.upstream, config.platform.as_ref().unwrap()).unwrap()
}
