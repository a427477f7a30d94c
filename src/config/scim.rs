//! The `[scim]` section: the SCIM base path and the service's own switches.

use super::secret::SecretSource;
use super::{raw, ScimSettings, Validator, DEFAULT_SCIM_BASE_PATH};

impl Validator<'_> {
    pub(super) fn scim_settings(&mut self, raw: &raw::RawScim) -> ScimSettings {
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

    pub(super) fn scim_base_path(&mut self, raw: Option<String>) -> String {
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
