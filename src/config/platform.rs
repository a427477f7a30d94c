//! The `[platform]` section (how the gateway calls the platform's native API) and the
//! `[import]` of the platform's own settings files.

use super::secret::{Secret, SecretSource};
use super::{
    import, raw, ExtensionAccess, NameLookup, PlatformConfig, PlatformCredentials, Validator,
};

impl Validator<'_> {
    /// The platform's own settings files; scimgate's TOML wins wherever both speak.
    pub(super) fn import(&mut self, raw: &raw::RawImport) -> import::Imported {
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

    pub(super) fn platform(&mut self, p: raw::RawPlatform) -> Option<PlatformConfig> {
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
}
