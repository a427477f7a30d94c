//! The `[provisioning]` section, and the checks across sections that protect it: settings
//! that would surprise an operator, group mappings into excluded groups, and group mappings
//! that disagree with the SSO authenticator's.

use super::{
    import, raw, AuthConfig, DeprovisionMode, GroupDefaults, ListenerConfig, ProvisioningConfig,
    UserDefaults, Validator, DEFAULT_PASSWORD_MIN_LENGTH,
};

impl Validator<'_> {
    /// Valid but likely not what the operator meant: reported by `check` and at start.
    pub(super) fn surprises(
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
    pub(super) fn mapped_on_purpose(&mut self, raw: Vec<String>) -> Vec<String> {
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
    pub(super) fn sso_group_mappings(
        &mut self,
        raw: Option<&str>,
        provisioning: &ProvisioningConfig,
    ) {
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

    pub(super) fn provisioning(&mut self, p: raw::RawProvisioning) -> ProvisioningConfig {
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
}

/// Where `provisioning.group_mappings` (SCIM) and the SSO authenticator's table (SAML sign-in)
/// disagree about an identity provider's group, compared in the folded form the provisioning
/// policy uses: a warning when both map it, to different platform groups; a note when only one
/// maps it.
pub(super) fn compare_group_mappings(
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
