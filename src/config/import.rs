//! Drop-in settings: the platform's own `platform-settings.json` and `sso-settings.json`, read
//! as they are and translated into scimgate's terms. Only two sections matter
//! (`PlatformSettingsConfig.SCIMSettings` and `SCIMAccessTokenServicesSettings`); everything
//! else is skipped, and every skipped key is named in a note so the operator knows what was
//! not taken over. Notes and errors name keys, never values, so a secret can't leak through them.

use super::{Secret, SecretSource};
use serde_json::{Map, Value};
use std::path::Path;

/// What the platform's own settings files say, in scimgate's terms. Each field is None when the files do not speak to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    /// `enableSCIM`
    pub scim_enabled: Option<bool>,
    /// `autoStart`
    pub scim_auto_start: Option<bool>,
    /// Entra form (issuer + jwtPublicKeyUrl present): one JWT provider.
    pub jwt: Option<ImportedJwt>,
    /// PingFederate form (checkTokenEndpointUrl present): introspection.
    pub introspection: Option<ImportedIntrospection>,
    /// `scimAdminName` (informational: the platform user SCIM runs as)
    pub scim_admin_name: Option<String>,
    /// One line per ignored key or noteworthy fact, for the operator (never containing secret values).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedJwt {
    pub issuer: String,
    pub jwks_url: String,
    /// `authScimOAuthClientId` and `clientId`, deduplicated, non-empty ones.
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedIntrospection {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `authScimOAuthClientId`
    pub client_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {message}")]
    Json { path: String, message: String },
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
}

const PLATFORM_ROLE: &str = "platform-settings.json";
const SSO_ROLE: &str = "sso-settings.json";
const PLATFORM_SECTION: &str = "PlatformSettingsConfig";
const SCIM_SECTION: &str = "SCIMSettings";
const TOKEN_SECTION: &str = "SCIMAccessTokenServicesSettings";

/// Reads the two files (either may be absent) and reports every problem at once.
pub fn import(
    platform_settings: Option<&Path>,
    sso_settings: Option<&Path>,
) -> Result<Imported, Vec<ImportError>> {
    let mut errors = Vec::new();
    let mut read = |path: Option<&Path>| -> Option<(String, String)> {
        let path = path?;
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Some((shown, text)),
            Err(source) => {
                errors.push(ImportError::Read {
                    path: shown,
                    source,
                });
                None
            }
        }
    };
    let platform = read(platform_settings);
    let sso = read(sso_settings);
    let mut importer = Importer {
        out: Imported::default(),
        errors,
    };
    if let Some((path, text)) = &platform {
        importer.platform(path, text);
    }
    if let Some((path, text)) = &sso {
        importer.sso(path, text);
    }
    importer.finish()
}

/// Same as [`import`] from text; problems name the file by its role (`platform-settings.json`,
/// `sso-settings.json`).
pub fn import_str(
    platform_settings: Option<&str>,
    sso_settings: Option<&str>,
) -> Result<Imported, Vec<ImportError>> {
    let mut importer = Importer {
        out: Imported::default(),
        errors: Vec::new(),
    };
    if let Some(text) = platform_settings {
        importer.platform(PLATFORM_ROLE, text);
    }
    if let Some(text) = sso_settings {
        importer.sso(SSO_ROLE, text);
    }
    importer.finish()
}

struct Importer {
    out: Imported,
    errors: Vec<ImportError>,
}

impl Importer {
    fn finish(self) -> Result<Imported, Vec<ImportError>> {
        if self.errors.is_empty() {
            Ok(self.out)
        } else {
            Err(self.errors)
        }
    }

    fn shape(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ImportError::Shape {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn note(&mut self, path: &str, message: impl AsRef<str>) {
        self.out.notes.push(format!("{path}: {}", message.as_ref()));
    }

    /// The document's top-level object, or None after recording why not.
    fn document(&mut self, path: &str, text: &str) -> Option<Map<String, Value>> {
        // Files edited on Windows often start with a byte-order mark, which JSON does not allow.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) => {
                self.shape(path, "the top level is not a JSON object");
                None
            }
            Err(e) => {
                self.errors.push(ImportError::Json {
                    path: path.to_string(),
                    message: e.to_string(),
                });
                None
            }
        }
    }

    /// `name` inside `parent` as an object: None when absent (or null), or after a Shape error.
    fn section<'v>(
        &mut self,
        path: &str,
        parent: &'v Map<String, Value>,
        name: &str,
        shown: &str,
    ) -> Option<&'v Map<String, Value>> {
        match parent.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                self.shape(
                    path,
                    format!("{shown} is {}, not an object", json_type(other)),
                );
                None
            }
        }
    }

    fn skipped(&mut self, path: &str, map: &Map<String, Value>, kept: &str, within: Option<&str>) {
        let names: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| *k != kept)
            .collect();
        if names.is_empty() {
            return;
        }
        let place = match within {
            Some(parent) => format!("section(s) of {parent}"),
            None => "top-level section(s)".to_string(),
        };
        self.note(
            path,
            format!(
                "skipped {} other {place} (not read by scimgate): {}",
                names.len(),
                names.join(", ")
            ),
        );
    }

    fn platform(&mut self, path: &str, text: &str) {
        let Some(doc) = self.document(path, text) else {
            return;
        };
        self.skipped(path, &doc, PLATFORM_SECTION, None);
        let Some(config) = self.section(path, &doc, PLATFORM_SECTION, PLATFORM_SECTION) else {
            if !doc.contains_key(PLATFORM_SECTION) {
                self.note(
                    path,
                    format!("no {PLATFORM_SECTION} section; nothing taken from this file"),
                );
            }
            return;
        };
        self.skipped(path, config, SCIM_SECTION, Some(PLATFORM_SECTION));
        let shown = format!("{PLATFORM_SECTION}.{SCIM_SECTION}");
        let Some(scim) = self.section(path, config, SCIM_SECTION, &shown) else {
            if !config.contains_key(SCIM_SECTION) {
                self.note(
                    path,
                    format!("no {shown} section; SCIM enablement not taken from this file"),
                );
            }
            return;
        };
        for (key, _) in scim.iter() {
            match key.as_str() {
                "enableSCIM" | "autoStart" => {}
                "ignorePFTestConnections" => self.note(
                    path,
                    format!(
                        "{shown}.ignorePFTestConnections ignored \
                         (a setting of the platform's built-in SCIM, which scimgate replaces)"
                    ),
                ),
                other => self.note(path, format!("{shown}.{other} ignored (unknown key)")),
            }
        }
        self.out.scim_enabled = self.boolean(path, scim, &shown, "enableSCIM");
        self.out.scim_auto_start = self.boolean(path, scim, &shown, "autoStart");
    }

    fn boolean(
        &mut self,
        path: &str,
        section: &Map<String, Value>,
        shown: &str,
        key: &str,
    ) -> Option<bool> {
        match section.get(key)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.shape(
                    path,
                    format!(
                        "{shown}.{key} is neither true nor false (found {})",
                        json_type(other)
                    ),
                );
                None
            }
        }
    }

    /// A string value, trimmed; absent, null and empty all mean "not given".
    fn string(
        &mut self,
        path: &str,
        section: &Map<String, Value>,
        shown: &str,
        key: &str,
    ) -> Option<String> {
        match section.get(key)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_string()),
            other => {
                self.shape(
                    path,
                    format!("{shown}.{key} is {}, not a string", json_type(other)),
                );
                None
            }
        }
    }

    fn sso(&mut self, path: &str, text: &str) {
        let Some(doc) = self.document(path, text) else {
            return;
        };
        self.skipped(path, &doc, TOKEN_SECTION, None);
        let Some(tokens) = self.section(path, &doc, TOKEN_SECTION, TOKEN_SECTION) else {
            if !doc.contains_key(TOKEN_SECTION) {
                self.note(
                    path,
                    format!(
                        "no {TOKEN_SECTION} section; no SCIM token settings taken from this file"
                    ),
                );
            }
            return;
        };
        let s = TOKEN_SECTION;
        for (key, _) in tokens.iter() {
            match key.as_str() {
                "scimAdminName"
                | "authScimOAuthClientId"
                | "clientId"
                | "clientSecret"
                | "issuer"
                | "jwtPublicKeyUrl"
                | "checkTokenEndpointUrl" => {}
                "userAuthenticationConverterClassName" => self.note(
                    path,
                    format!(
                        "{s}.userAuthenticationConverterClassName ignored \
                         (scimgate reads the introspection answer itself)"
                    ),
                ),
                other => self.note(path, format!("{s}.{other} ignored (unknown key)")),
            }
        }

        let admin = self.string(path, tokens, s, "scimAdminName");
        let scim_client = self.string(path, tokens, s, "authScimOAuthClientId");
        let client_id = self.string(path, tokens, s, "clientId");
        let issuer = self.string(path, tokens, s, "issuer");
        let jwks_url = self.string(path, tokens, s, "jwtPublicKeyUrl");
        let endpoint = self.string(path, tokens, s, "checkTokenEndpointUrl");
        // The secret is read as a string like the rest, but only resolved when it is used.
        let secret_spec = self.string(path, tokens, s, "clientSecret");

        if let Some(name) = &admin {
            self.note(
                path,
                format!(
                    "{s}.scimAdminName: the platform's built-in SCIM ran as {name:?}; \
                     scimgate calls the platform with its own [platform] credentials"
                ),
            );
        }
        self.out.scim_admin_name = admin;

        // Entra ID form: tokens are JWTs checked against the tenant's keys.
        match (issuer, jwks_url) {
            (Some(issuer), Some(jwks_url)) => {
                let mut audiences: Vec<String> = Vec::new();
                for id in [&scim_client, &client_id].into_iter().flatten() {
                    if !audiences.contains(id) {
                        audiences.push(id.clone());
                    }
                }
                if audiences.is_empty() {
                    self.note(
                        path,
                        format!(
                            "{s} names no authScimOAuthClientId or clientId, \
                             so the imported JWT provider has no audience"
                        ),
                    );
                }
                self.out.jwt = Some(ImportedJwt {
                    issuer,
                    jwks_url,
                    audiences,
                });
            }
            (Some(_), None) => self.shape(
                path,
                format!("{s}.issuer is given without {s}.jwtPublicKeyUrl; give both or neither"),
            ),
            (None, Some(_)) => self.shape(
                path,
                format!("{s}.jwtPublicKeyUrl is given without {s}.issuer; give both or neither"),
            ),
            (None, None) => {}
        }

        // PingFederate form: tokens are opaque and checked at the introspection endpoint.
        if let Some(endpoint) = endpoint {
            let id = client_id.clone();
            if id.is_none() {
                self.shape(
                    path,
                    format!("{s}.checkTokenEndpointUrl is given without {s}.clientId, which introspection needs"),
                );
            }
            let secret = match &secret_spec {
                None => {
                    self.shape(
                        path,
                        format!("{s}.checkTokenEndpointUrl is given without {s}.clientSecret, which introspection needs"),
                    );
                    None
                }
                Some(spec) => self.secret(path, spec),
            };
            if let (Some(client_id), Some(client_secret)) = (id, secret) {
                self.out.introspection = Some(ImportedIntrospection {
                    endpoint,
                    client_id,
                    client_secret,
                    client_ids: scim_client.iter().cloned().collect(),
                });
            }
        } else if secret_spec.is_some() {
            self.note(
                path,
                format!(
                    "{s}.clientSecret not used (only introspection, \
                     the checkTokenEndpointUrl form, needs it)"
                ),
            );
        }

        if self.out.jwt.is_none()
            && self.out.introspection.is_none()
            && !self.errors.iter().any(|e| is_about(e, path))
        {
            self.note(
                path,
                format!(
                    "{s} has neither issuer + jwtPublicKeyUrl (Entra ID) nor \
                     checkTokenEndpointUrl (PingFederate); no token validation taken from it"
                ),
            );
        }
    }

    fn secret(&mut self, path: &str, spec: &str) -> Option<Secret> {
        match SecretSource::parse(spec).resolve() {
            Ok(secret) => Some(secret),
            Err(why) => {
                // `why` names where the secret was looked for (variable, file), never its value.
                self.shape(
                    path,
                    format!(
                        "{TOKEN_SECTION}.clientSecret cannot be resolved: {why} \
                         (give it as env:NAME, file:/path or inline)"
                    ),
                );
                None
            }
        }
    }
}

/// One row of the SSO authenticator's group-mapping table: the identity provider's group, and
/// the platform group SAML sign-in puts its members in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoGroupMapping {
    pub idp_group: String,
    pub platform_group: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsoGroupMappings {
    pub mappings: Vec<SsoGroupMapping>,
    /// Rows skipped and the like, for the operator.
    pub notes: Vec<String>,
}

/// Column names the authenticator's table has carried across versions and export tools,
/// compared ignoring case; the first one present wins.
const IDP_GROUP_COLUMNS: [&str; 3] = ["identityProviderGroupName", "ssoGroupName", "idpGroupName"];
const PLATFORM_GROUP_COLUMNS: [&str; 3] = ["twxGroupName", "thingworxGroupName", "groupName"];

/// Reads the SSO authenticator's group-mapping table as exported to JSON: an infotable
/// (`{"rows":[...]}`, with or without its `dataShape`) or a plain array of rows.
pub fn sso_group_mappings(path: &Path) -> Result<SsoGroupMappings, Vec<ImportError>> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => sso_group_mappings_str(&shown, &text),
        Err(source) => Err(vec![ImportError::Read {
            path: shown,
            source,
        }]),
    }
}

/// Same as [`sso_group_mappings`] from text; `shown` names the file in problems and notes.
pub fn sso_group_mappings_str(
    shown: &str,
    text: &str,
) -> Result<SsoGroupMappings, Vec<ImportError>> {
    let shape = |message: String| {
        vec![ImportError::Shape {
            path: shown.to_string(),
            message,
        }]
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![ImportError::Json {
            path: shown.to_string(),
            message: e.to_string(),
        }]
    })?;
    let (rows, declared) = match &value {
        Value::Array(rows) => (rows, Vec::new()),
        Value::Object(table) => match table.get("rows") {
            Some(Value::Array(rows)) => (rows, declared_fields(table)),
            Some(other) => {
                return Err(shape(format!("rows is {}, not an array", json_type(other))))
            }
            None => {
                return Err(shape(
                    "neither an infotable ({\"rows\": [...]}) nor an array of rows".to_string(),
                ))
            }
        },
        other => {
            return Err(shape(format!(
                "the top level is {}, not an infotable or an array of rows",
                json_type(other)
            )))
        }
    };
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match row {
            Value::Object(o) => objects.push((i + 1, o)),
            other => errors.extend(shape(format!(
                "row {} is {}, not an object",
                i + 1,
                json_type(other)
            ))),
        }
    }
    let mut out = SsoGroupMappings::default();
    let no_rows = format!("{shown}: the table has no rows; the SSO authenticator maps no group");
    if rows.is_empty() && declared.is_empty() {
        out.notes.push(no_rows);
        return Ok(out);
    }
    let present: Vec<&str> = declared
        .iter()
        .map(String::as_str)
        .chain(
            objects
                .iter()
                .flat_map(|(_, o)| o.keys().map(String::as_str)),
        )
        .collect();
    let column = |candidates: &[&str]| -> Option<String> {
        candidates.iter().find_map(|c| {
            present
                .iter()
                .any(|p| p.eq_ignore_ascii_case(c))
                .then(|| c.to_string())
        })
    };
    let mut found: Vec<&str> = present.clone();
    found.sort_unstable_by_key(|c| c.to_ascii_lowercase());
    found.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let found = if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    };
    let idp_column = column(&IDP_GROUP_COLUMNS);
    let platform_column = column(&PLATFORM_GROUP_COLUMNS);
    for (missing, side, candidates) in [
        (
            idp_column.is_none(),
            "identity provider's group",
            &IDP_GROUP_COLUMNS,
        ),
        (
            platform_column.is_none(),
            "platform group",
            &PLATFORM_GROUP_COLUMNS,
        ),
    ] {
        if missing {
            errors.extend(shape(format!(
                "no column names the {side} (looked for {}, in any case; the table has: {found})",
                candidates.join(", ")
            )));
        }
    }
    let (Some(idp_column), Some(platform_column)) = (idp_column, platform_column) else {
        return Err(errors);
    };
    for (number, row) in objects {
        let cell = |column: &str| -> Result<Option<String>, String> {
            let value = row
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(column))
                .map(|(_, v)| v);
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(other) => Err(format!(
                    "row {number}: {column} is {}, not a string",
                    json_type(other)
                )),
            }
        };
        match (cell(&idp_column), cell(&platform_column)) {
            (Ok(Some(idp_group)), Ok(Some(platform_group))) => out.mappings.push(SsoGroupMapping {
                idp_group,
                platform_group,
            }),
            (Ok(_), Ok(_)) => out.notes.push(format!(
                "{shown}: row {number} lacks a group name on one side; skipped"
            )),
            (idp, platform) => {
                for message in [idp.err(), platform.err()].into_iter().flatten() {
                    errors.extend(shape(message));
                }
            }
        }
    }
    if rows.is_empty() {
        out.notes.push(no_rows);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Field names an infotable's data shape declares (`dataShape.fieldDefinitions`), so the
/// columns are known even when the table has no rows.
fn declared_fields(table: &Map<String, Value>) -> Vec<String> {
    table
        .get("dataShape")
        .and_then(|d| d.get("fieldDefinitions"))
        .and_then(Value::as_object)
        .map(|defs| defs.keys().cloned().collect())
        .unwrap_or_default()
}

fn is_about(e: &ImportError, file: &str) -> bool {
    match e {
        ImportError::Read { path, .. }
        | ImportError::Json { path, .. }
        | ImportError::Shape { path, .. } => path == file,
    }
}

/// A JSON value's type, as an error message names it ("a string", "an array").
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ENTRA_SECRET: &str = "fake-entra-scim-secret-not-real";
    const PING_SECRET: &str = "fake-pingfederate-scim-secret-not-real";
    const TENANT_ISSUER: &str = "https://sts.windows.net/00000000-0000-0000-0000-000000000000/";
    const ENTRA_KEYS: &str = "https://login.microsoftonline.com/common/discovery/keys";
    const PING_INTROSPECT: &str = "https://pingfederate.example:9031/as/introspect.oauth2";
    const ENTRA_APP: &str = "11111111-2222-3333-4444-555555555555";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/platform")
            .join(name)
    }

    fn has_note(imported: &Imported, needle: &str) -> bool {
        imported.notes.iter().any(|n| n.contains(needle))
    }

    fn no_secret_anywhere(imported: &Imported, secret: &str) {
        assert!(!format!("{imported:?}").contains(secret));
        for note in &imported.notes {
            assert!(!note.contains(secret), "note leaks the secret: {note}");
        }
    }

    fn without_notes(mut imported: Imported) -> Imported {
        imported.notes.clear();
        imported
    }

    #[test]
    fn platform_settings_fixture() {
        let got = import(Some(&fixture("platform-settings.json")), None).unwrap();
        assert_eq!(
            without_notes(got.clone()),
            Imported {
                scim_enabled: Some(true),
                scim_auto_start: Some(false),
                ..Imported::default()
            }
        );
        assert!(has_note(
            &got,
            "SCIMSettings.ignorePFTestConnections ignored"
        ));
        assert!(has_note(
            &got,
            "skipped 1 other top-level section(s) (not read by scimgate): PersistenceProviderPackageConfigs"
        ));
        assert!(has_note(
            &got,
            "skipped 3 other section(s) of PlatformSettingsConfig"
        ));
        assert!(has_note(&got, "BasicSettings"));
        // Values of skipped sections never make it into the notes.
        for n in &got.notes {
            assert!(!n.contains("fake-db-password") && !n.contains("fake-admin-password"));
        }
        assert!(got.notes[0].contains(&fixture("platform-settings.json").display().to_string()));
    }

    #[test]
    fn entra_fixture() {
        let got = import(None, Some(&fixture("sso-settings-entra.json"))).unwrap();
        assert_eq!(
            without_notes(got.clone()),
            Imported {
                jwt: Some(ImportedJwt {
                    issuer: TENANT_ISSUER.into(),
                    jwks_url: ENTRA_KEYS.into(),
                    audiences: vec![ENTRA_APP.into()],
                }),
                scim_admin_name: Some("Administrator".into()),
                ..Imported::default()
            }
        );
        assert!(has_note(&got, "skipped 3 other top-level section(s)"));
        assert!(has_note(
            &got,
            "AccessTokenServicesSettings, BasicSettings, SSOSettings"
        ));
        assert!(has_note(&got, "clientSecret not used"));
        assert!(has_note(&got, "\"Administrator\""));
        no_secret_anywhere(&got, ENTRA_SECRET);
    }

    #[test]
    fn pingfederate_fixture() {
        let got = import(None, Some(&fixture("sso-settings-pingfederate.json"))).unwrap();
        assert_eq!(
            without_notes(got.clone()),
            Imported {
                introspection: Some(ImportedIntrospection {
                    endpoint: PING_INTROSPECT.into(),
                    client_id: "SCIMClient".into(),
                    client_secret: Secret::new(PING_SECRET),
                    client_ids: vec!["SCIMClient".into()],
                }),
                ..Imported::default()
            }
        );
        assert!(has_note(
            &got,
            "SCIMAccessTokenServicesSettings.userAuthenticationConverterClassName ignored"
        ));
        assert!(has_note(&got, "skipped 4 other top-level section(s)"));
        no_secret_anywhere(&got, PING_SECRET);
    }

    #[test]
    fn both_files_together() {
        let got = import(
            Some(&fixture("platform-settings.json")),
            Some(&fixture("sso-settings-pingfederate.json")),
        )
        .unwrap();
        assert_eq!(got.scim_enabled, Some(true));
        assert_eq!(got.scim_auto_start, Some(false));
        assert!(got.introspection.is_some());
        assert!(got.jwt.is_none());
        assert_eq!(import(None, None).unwrap(), Imported::default());
    }

    #[test]
    fn string_and_json_booleans() {
        for (enable, auto, want) in [
            ("\"TRUE\"", "\"False\"", (true, false)),
            ("true", "false", (true, false)),
            ("false", "\" true \"", (false, true)),
        ] {
            let text = format!(
                r#"{{"PlatformSettingsConfig": {{"SCIMSettings": {{"enableSCIM": {enable}, "autoStart": {auto}}}}}}}"#
            );
            let got = import_str(Some(&text), None).unwrap();
            assert_eq!(
                (got.scim_enabled, got.scim_auto_start),
                (Some(want.0), Some(want.1))
            );
            assert!(got.notes.is_empty(), "{:?}", got.notes);
        }
        let text = r#"{"PlatformSettingsConfig": {"SCIMSettings": {"enableSCIM": "yes"}}}"#;
        let errs = import_str(Some(text), None).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "platform-settings.json: PlatformSettingsConfig.SCIMSettings.enableSCIM is neither true nor false (found a string)"
        );
    }

    #[test]
    fn unknown_keys_produce_notes() {
        let platform = r#"{"PlatformSettingsConfig": {"SCIMSettings": {"enableSCIM": true, "frobnicate": 1}}}"#;
        let sso = r#"{"SCIMAccessTokenServicesSettings": {"issuer": "https://i.example/",
            "jwtPublicKeyUrl": "https://i.example/keys", "clientId": "a", "authScimOAuthClientId": "b",
            "scopes": "x"}}"#;
        let got = import_str(Some(platform), Some(sso)).unwrap();
        assert!(has_note(
            &got,
            "platform-settings.json: PlatformSettingsConfig.SCIMSettings.frobnicate ignored"
        ));
        assert!(has_note(
            &got,
            "sso-settings.json: SCIMAccessTokenServicesSettings.scopes ignored"
        ));
        // authScimOAuthClientId first, then clientId; duplicates and empties dropped.
        assert_eq!(got.jwt.unwrap().audiences, vec!["b", "a"]);
        let sso = r#"{"SCIMAccessTokenServicesSettings": {"issuer": "https://i.example/",
            "jwtPublicKeyUrl": "https://i.example/keys", "clientId": "", "authScimOAuthClientId": null}}"#;
        let got = import_str(None, Some(sso)).unwrap();
        assert!(got.jwt.as_ref().unwrap().audiences.is_empty());
        assert!(has_note(&got, "no audience"));
    }

    #[test]
    fn both_forms_fill_both() {
        let sso = format!(
            r#"{{"SCIMAccessTokenServicesSettings": {{"issuer": "{TENANT_ISSUER}",
            "jwtPublicKeyUrl": "{ENTRA_KEYS}", "checkTokenEndpointUrl": "{PING_INTROSPECT}",
            "clientId": "SCIMClient", "authScimOAuthClientId": "SCIMClient", "clientSecret": "{PING_SECRET}"}}}}"#
        );
        let got = import_str(None, Some(&sso)).unwrap();
        assert_eq!(got.jwt.as_ref().unwrap().audiences, vec!["SCIMClient"]);
        let intro = got.introspection.as_ref().unwrap();
        assert_eq!(intro.client_secret.expose(), PING_SECRET);
        no_secret_anywhere(&got, PING_SECRET);
    }

    #[test]
    fn secret_from_a_file_and_an_unresolvable_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client-secret");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let sso = format!(
            r#"{{"SCIMAccessTokenServicesSettings": {{"checkTokenEndpointUrl": "{PING_INTROSPECT}",
            "clientId": "SCIMClient", "clientSecret": "file:{}"}}}}"#,
            file.display()
        );
        let got = import_str(None, Some(&sso)).unwrap();
        assert_eq!(
            got.introspection.unwrap().client_secret.expose(),
            "from-the-file"
        );

        let sso = format!(
            r#"{{"SCIMAccessTokenServicesSettings": {{"checkTokenEndpointUrl": "{PING_INTROSPECT}",
            "clientId": "SCIMClient", "clientSecret": "env:SCIMGATE_IMPORT_TEST_SURELY_UNSET"}}}}"#
        );
        let errs = import_str(None, Some(&sso)).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("SCIMAccessTokenServicesSettings.clientSecret"),
            "{msg}"
        );
        assert!(msg.contains("SCIMGATE_IMPORT_TEST_SURELY_UNSET"), "{msg}");
    }

    #[test]
    fn malformed_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform-settings.json");
        std::fs::write(&path, "{\"PlatformSettingsConfig\": {").unwrap();
        let errs = import(Some(&path), None).unwrap_err();
        assert_eq!(errs.len(), 1);
        match &errs[0] {
            ImportError::Json { path: shown, .. } => assert_eq!(shown, &path.display().to_string()),
            other => panic!("expected a Json error, got {other:?}"),
        }
        assert!(errs[0]
            .to_string()
            .starts_with(&format!("{} is not valid JSON", path.display())));

        let errs = import_str(None, Some("not json")).unwrap_err();
        assert!(matches!(&errs[0], ImportError::Json { path, .. } if path == "sso-settings.json"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let sso = dir.path().join("sso-settings.json");
        std::fs::write(
            &sso,
            format!(
                r#"{{"SCIMAccessTokenServicesSettings": {{"issuer": "{TENANT_ISSUER}",
                "checkTokenEndpointUrl": 42, "scimAdminName": ["x"],
                "clientSecret": "env:SCIMGATE_IMPORT_TEST_SURELY_UNSET"}}}}"#
            ),
        )
        .unwrap();
        let errs = import(Some(&missing), Some(&sso)).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(matches!(&errs[0], ImportError::Read { .. }), "{text:?}");
        assert!(text[0].contains("nope.json"));
        for needle in [
            "scimAdminName is an array, not a string",
            "checkTokenEndpointUrl is a number, not a string",
            "issuer is given without SCIMAccessTokenServicesSettings.jwtPublicKeyUrl",
        ] {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "{needle}: {text:?}"
            );
        }
        assert_eq!(errs.len(), 4, "{text:?}");

        let platform = r#"{"PlatformSettingsConfig": {"SCIMSettings": "on"}}"#;
        let sso = format!(
            r#"{{"SCIMAccessTokenServicesSettings": {{"checkTokenEndpointUrl": "{PING_INTROSPECT}"}}}}"#
        );
        let errs = import_str(Some(platform), Some(&sso)).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{text:?}");
        assert!(text[0].contains("PlatformSettingsConfig.SCIMSettings is a string, not an object"));
        assert!(text[1].contains("without SCIMAccessTokenServicesSettings.clientId"));
        assert!(text[2].contains("without SCIMAccessTokenServicesSettings.clientSecret"));
    }

    #[test]
    fn missing_sections_are_noted_not_refused() {
        let got = import_str(Some(r#"{"Other": {}}"#), Some("{}")).unwrap();
        assert_eq!(without_notes(got.clone()), Imported::default());
        assert!(has_note(&got, "no PlatformSettingsConfig section"));
        assert!(has_note(&got, "no SCIMAccessTokenServicesSettings section"));
        let got = import_str(
            Some(r#"{"PlatformSettingsConfig": {}}"#),
            Some(r#"{"SCIMAccessTokenServicesSettings": {"clientId": "x"}}"#),
        )
        .unwrap();
        assert!(has_note(
            &got,
            "no PlatformSettingsConfig.SCIMSettings section"
        ));
        assert!(has_note(&got, "neither issuer + jwtPublicKeyUrl"));
        let errs = import_str(Some("[1]"), None).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "platform-settings.json: the top level is not a JSON object"
        );
    }

    fn mapping(idp: &str, platform: &str) -> SsoGroupMapping {
        SsoGroupMapping {
            idp_group: idp.into(),
            platform_group: platform.into(),
        }
    }

    #[test]
    fn sso_group_mappings_fixture() {
        let path = fixture("sso-group-mappings.json");
        let got = sso_group_mappings(&path).unwrap();
        assert_eq!(
            got.mappings,
            vec![
                mapping("Platform Admins", "Administrators"),
                mapping("Engineering", "Developers"),
                mapping("Operators", "Operators"),
                mapping("Auditors", "SecurityAuditors"),
            ]
        );
        assert_eq!(
            got.notes,
            vec![format!(
                "{}: row 5 lacks a group name on one side; skipped",
                path.display()
            )]
        );
    }

    #[test]
    fn sso_group_mappings_accept_every_column_spelling_and_both_forms() {
        for (idp, platform) in [
            ("identityProviderGroupName", "twxGroupName"),
            ("SSOGROUPNAME", "thingworxgroupname"),
            ("idpGroupName", "groupName"),
        ] {
            let rows = format!(r#"[{{"{idp}": " A ", "{platform}": "B", "other": 1}}]"#);
            for text in [
                rows.clone(),
                format!(r#"{{"rows": {rows}}}"#),
                format!("\u{feff}{{\"dataShape\": {{}}, \"rows\": {rows}}}"),
            ] {
                let got = sso_group_mappings_str("t.json", &text).unwrap();
                assert_eq!(got.mappings, vec![mapping("A", "B")], "{text}");
                assert!(got.notes.is_empty(), "{:?}", got.notes);
            }
        }
        // The more specific platform column wins over the generic groupName.
        let got = sso_group_mappings_str(
            "t.json",
            r#"[{"groupName": "x", "ssoGroupName": "A", "twxGroupName": "B"}]"#,
        )
        .unwrap();
        assert_eq!(got.mappings, vec![mapping("A", "B")]);
        // An empty table maps nothing, and says so.
        for text in ["[]", r#"{"rows": []}"#] {
            let got = sso_group_mappings_str("t.json", text).unwrap();
            assert!(got.mappings.is_empty());
            assert!(got.notes[0].contains("no rows"), "{:?}", got.notes);
        }
    }

    #[test]
    fn sso_group_mappings_without_known_columns_say_what_was_looked_for() {
        let errs = sso_group_mappings_str("t.json", r#"[{"from": "A", "to": "B"}]"#).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(
            text[0],
            "t.json: no column names the identity provider's group (looked for identityProviderGroupName, ssoGroupName, idpGroupName, in any case; the table has: from, to)"
        );
        assert!(
            text[1].contains("no column names the platform group (looked for twxGroupName, thingworxGroupName, groupName"),
            "{text:?}"
        );
        // Declared columns count even without rows.
        let errs = sso_group_mappings_str(
            "t.json",
            r#"{"dataShape": {"fieldDefinitions": {"ssoGroupName": {}}}, "rows": []}"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("platform group"),
            "{}",
            errs[0]
        );

        for (text, needle) in [
            ("{", "is not valid JSON"),
            ("42", "the top level is a number"),
            (r#"{"mappings": []}"#, "neither an infotable"),
            (r#"{"rows": {}}"#, "rows is an object, not an array"),
            (
                r#"[{"ssoGroupName": "A", "twxGroupName": 7}, "x"]"#,
                "row 2 is a string",
            ),
        ] {
            let errs = sso_group_mappings_str("t.json", text).unwrap_err();
            assert!(
                errs.iter().any(|e| e.to_string().contains(needle)),
                "{text}: {errs:?}"
            );
        }
        let errs =
            sso_group_mappings_str("t.json", r#"[{"ssoGroupName": "A", "twxGroupName": 7}]"#)
                .unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "t.json: row 1: twxGroupName is a number, not a string"
        );
        let missing = Path::new("/nonexistent/sso-group-mappings.json");
        assert!(matches!(
            &sso_group_mappings(missing).unwrap_err()[0],
            ImportError::Read { .. }
        ));
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let text =
            "\u{feff}{\"PlatformSettingsConfig\": {\"SCIMSettings\": {\"autoStart\": true}}}";
        assert_eq!(
            import_str(Some(text), None).unwrap().scim_auto_start,
            Some(true)
        );
    }
}
