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
    pub reload: RawReload,
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
    pub allowed_upgrades: Option<Vec<String>>,
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
pub struct RawReload {
    pub watch: Option<bool>,
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
    pub names: Option<String>,
    pub extensions: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvisioning {
    #[serde(default)]
    pub user_exclusions: Vec<String>,
    pub group_exclusions: Option<Vec<String>>,
    pub deprovision: Option<String>,
    pub max_users: Option<i64>,
    pub password_min_length: Option<i64>,
    pub terminate_sessions_on_config_change: Option<bool>,
    pub external_id_property: Option<String>,
    pub user_external_id_vocabulary: Option<String>,
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

#[cfg(test)]
mod tests {
    //! The example configuration documents exactly the settings the parser accepts. The parser's
    //! keys are not listed by hand: they are read from its own refusals of an unknown key.
    use super::RawConfig;
    use std::collections::BTreeSet;

    const EXAMPLE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/scimgate.example.toml"
    ));
    const PROBE: &str = "__probe__";

    /// One step of a path: a key, and whether it holds an array of tables.
    type Step = (String, bool);

    /// A document that puts the probe key in the table at `path`.
    fn probe_document(path: &[Step]) -> String {
        let mut doc = String::new();
        for depth in 1..=path.len() {
            let dotted = path[..depth]
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let (_, array) = &path[depth - 1];
            if *array {
                doc.push_str(&format!("[[{dotted}]]\n"));
            } else if depth == path.len() {
                doc.push_str(&format!("[{dotted}]\n"));
            }
        }
        doc.push_str(&format!("{PROBE} = 0\n"));
        doc
    }

    /// The fields the table at `path` accepts, when it is a table of named settings.
    fn fields_at(path: &[Step]) -> Option<Vec<String>> {
        let message = match toml::from_str::<RawConfig>(&probe_document(path)) {
            Ok(_) => return None,
            Err(e) => e.to_string(),
        };
        let refusal = format!("unknown field `{PROBE}`");
        let at = message.find(&refusal)?;
        let rest = &message[at + refusal.len()..];
        if rest.contains("there are no fields") {
            return Some(Vec::new());
        }
        let expected = &rest[rest.find("expected")?..];
        let line = expected.lines().next().unwrap_or_default();
        Some(
            line.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Every setting path the parser accepts, tables included.
    fn parser_paths(path: &mut Vec<Step>, out: &mut BTreeSet<String>) {
        let Some(fields) = fields_at(path) else {
            return;
        };
        for field in fields {
            for array in [false, true] {
                path.push((field.clone(), array));
                let nested = fields_at(path).is_some();
                if nested || array {
                    let dotted = path
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(".");
                    if nested || !out.contains(&dotted) {
                        out.insert(dotted);
                    }
                }
                if nested {
                    parser_paths(path, out);
                    path.pop();
                    break;
                }
                path.pop();
            }
        }
    }

    fn is_key_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// Every setting path the example names, as a setting or in a commented-out line, with the
    /// tables whose keys are free-form (maps) left out of the comparison.
    fn example_paths() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut table = String::new();
        for raw_line in EXAMPLE.lines() {
            let line = raw_line.trim_start_matches([' ', '#']).trim_start();
            if let Some(header) = line.strip_prefix('[') {
                let header = header.trim_start_matches('[');
                if let Some(end) = header.find(']') {
                    let name = &header[..end];
                    if !name.is_empty() && name.chars().all(|c| is_key_char(c) || c == '.') {
                        table = name.to_string();
                        out.insert(table.clone());
                    }
                }
                continue;
            }
            let Some(eq) = line.find('=') else { continue };
            let key = line[..eq].trim();
            if key.is_empty() || !key.chars().all(is_key_char) {
                continue;
            }
            let full = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            let value = line[eq + 1..].trim_start();
            if let Some(inline) = value.strip_prefix('{') {
                for part in inline.split(',') {
                    if let Some((k, _)) = part.split_once('=') {
                        let k = k.trim();
                        if !k.is_empty() && k.chars().all(is_key_char) {
                            out.insert(format!("{full}.{k}"));
                        }
                    }
                }
            }
            out.insert(full);
        }
        out
    }

    #[test]
    fn the_example_documents_every_setting_the_parser_accepts_and_no_other() {
        let mut parser = BTreeSet::new();
        parser_paths(&mut Vec::new(), &mut parser);
        assert!(parser.len() > 50, "the probe found too little: {parser:?}");
        for known in ["upstream.url", "auth.jwt.jwks_url", "listeners.tls.cert"] {
            assert!(parser.contains(known), "{known} not found: {parser:?}");
        }
        let example = example_paths();
        // Under a map (group mappings, attribute mappings, required claims) keys are the user's.
        let maps: Vec<String> = example
            .iter()
            .filter(|p| parser.contains(*p) && fields_at(&steps(p)).is_none())
            .cloned()
            .collect();
        let undocumented: Vec<&String> = parser.difference(&example).collect();
        assert!(
            undocumented.is_empty(),
            "settings the parser accepts that config/scimgate.example.toml does not document: {undocumented:?}"
        );
        let unknown: Vec<&String> = example
            .difference(&parser)
            .filter(|p| !maps.iter().any(|m| p.starts_with(&format!("{m}."))))
            .collect();
        assert!(
            unknown.is_empty(),
            "settings in config/scimgate.example.toml the parser does not accept: {unknown:?}"
        );
    }

    /// `path` as steps, marking the parts that are arrays of tables.
    fn steps(path: &str) -> Vec<Step> {
        let mut out: Vec<Step> = Vec::new();
        for key in path.split('.') {
            let mut as_array = out.clone();
            as_array.push((key.to_string(), true));
            let array = fields_at(&as_array).is_some() && {
                let mut as_table = out.clone();
                as_table.push((key.to_string(), false));
                fields_at(&as_table).is_none()
            };
            out.push((key.to_string(), array));
        }
        out
    }
}
