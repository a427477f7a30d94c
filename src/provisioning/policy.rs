//! The provisioning rules that decide before anything reaches the platform: exclusion lists and
//! identity-provider group mappings. Names are compared through [`policy_key`], which folds every
//! spelling a client could use to slip past a list.

use crate::config::ProvisioningConfig;
use std::collections::{HashMap, HashSet};
use unicode_normalization::UnicodeNormalization;

/// Users the platform needs to run; never touched through SCIM whatever the configuration says.
pub const BUILT_IN_USERS: [&str; 3] = ["Administrator", "SuperUser", "System"];
/// The platform's built-in groups (and `Guests`, which some versions have); never provisioned.
pub const BUILT_IN_GROUPS: [&str; 9] = [
    "Administrators",
    "ComposerUsers",
    "Designers",
    "Developers",
    "SecurityAdministrators",
    "SolutionCentralDevelopers",
    "SolutionCentralSiteAdministrators",
    "Users",
    "Guests",
];

/// Whether a name is one of the platform's own accounts, in any spelling.
pub fn is_built_in_user(name: &str) -> bool {
    let key = policy_key(name);
    BUILT_IN_USERS.iter().any(|b| policy_key(b) == key)
}

/// The form a name takes for every policy comparison: percent-decoded, Unicode compatibility
/// forms folded (NFKC turns `Ａｄｍｉｎ` into `Admin`), invisible format characters dropped,
/// surrounding and repeated whitespace removed, and case folded.
pub fn policy_key(name: &str) -> String {
    let decoded = percent_decode(name);
    let folded: String = decoded
        .nfkc()
        .filter(|c| !is_invisible(*c))
        .collect::<String>()
        .to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E0FFF}')
}

fn percent_decode(s: &str) -> String {
    // Decoding repeatedly defeats double encoding (`%2541` → `%41` → `A`).
    let mut current = s.to_string();
    for _ in 0..3 {
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[derive(Debug)]
pub struct Policy {
    pub config: ProvisioningConfig,
    excluded_users: HashSet<String>,
    excluded_groups: HashSet<String>,
    /// IdP group key → platform group name.
    inbound: HashMap<String, String>,
    /// Platform group key → IdP group name.
    outbound: HashMap<String, String>,
}

impl Policy {
    pub fn new(config: ProvisioningConfig) -> Self {
        let excluded_users = BUILT_IN_USERS
            .iter()
            .map(|s| s.to_string())
            .chain(config.user_exclusions.iter().cloned())
            .map(|n| policy_key(&n))
            .collect();
        let excluded_groups = BUILT_IN_GROUPS
            .iter()
            .map(|s| s.to_string())
            .chain(config.group_exclusions.iter().cloned())
            .map(|n| policy_key(&n))
            .collect();
        let mut inbound = HashMap::new();
        let mut outbound = HashMap::new();
        for (idp, platform) in &config.group_mappings {
            inbound.insert(policy_key(idp), platform.clone());
            outbound
                .entry(policy_key(platform))
                .or_insert_with(|| idp.clone());
        }
        Self {
            config,
            excluded_users,
            excluded_groups,
            inbound,
            outbound,
        }
    }

    pub fn is_user_excluded(&self, name: &str) -> bool {
        self.excluded_users.contains(&policy_key(name))
    }

    pub fn is_group_excluded(&self, platform_name: &str) -> bool {
        self.excluded_groups.contains(&policy_key(platform_name))
    }

    /// The platform group an identity provider's group name stands for.
    pub fn platform_group(&self, idp_name: &str) -> String {
        self.inbound
            .get(&policy_key(idp_name))
            .cloned()
            .unwrap_or_else(|| idp_name.trim().to_string())
    }

    /// The name the identity provider knows a platform group by.
    pub fn idp_group(&self, platform_name: &str) -> String {
        self.outbound
            .get(&policy_key(platform_name))
            .cloned()
            .unwrap_or_else(|| platform_name.to_string())
    }

    /// Whether a group is the target of an explicit mapping: the only way an excluded group's
    /// membership may change.
    pub fn is_mapped_target(&self, platform_name: &str) -> bool {
        self.outbound.contains_key(&policy_key(platform_name))
    }

    /// Whether the identity provider may see the group at all.
    pub fn is_group_visible(&self, platform_name: &str) -> bool {
        !self.is_group_excluded(platform_name) || self.is_mapped_target(platform_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeprovisionMode, GroupDefaults, UserDefaults};

    fn config() -> ProvisioningConfig {
        ProvisioningConfig {
            user_exclusions: vec!["svc-backup".into()],
            group_exclusions: vec![],
            deprovision: DeprovisionMode::Delete,
            max_users: None,
            password_min_length: 14,
            terminate_sessions_on_config_change: false,
            external_id_property: None,
            user_external_id_vocabulary: None,
            group_external_id_vocabulary: None,
            audit_log: None,
            user_defaults: UserDefaults::default(),
            group_defaults: GroupDefaults::default(),
            group_mappings: vec![("IdP Admins".into(), "Administrators".into())],
            user_attributes: Default::default(),
        }
    }

    #[test]
    fn built_in_users_are_excluded_in_every_spelling() {
        let p = Policy::new(config());
        for spelling in [
            "Administrator",
            "administrator",
            "  ADMINISTRATOR ",
            "Administr%61tor",
            "Administr%2561tor",
            "Ａｄｍｉｎｉｓｔｒａｔｏｒ",
            "Admin\u{200B}istrator",
            "Admin\u{00AD}istrator",
            "superuser",
            "SYSTEM",
            "SVC-Backup",
        ] {
            assert!(p.is_user_excluded(spelling), "{spelling:?} slipped through");
        }
        assert!(!p.is_user_excluded("jdoe"));
        assert!(!p.is_user_excluded("Administrator2"));
    }

    #[test]
    fn built_in_groups_stay_excluded_even_if_configured_away() {
        let p = Policy::new(config());
        for g in [
            "Administrators",
            "users",
            "Guests",
            "securityadministrators",
        ] {
            assert!(p.is_group_excluded(g), "{g}");
        }
        assert!(!p.is_group_excluded("Engineering"));
    }

    #[test]
    fn mappings_apply_both_ways_and_make_the_target_visible() {
        let p = Policy::new(config());
        assert_eq!(p.platform_group("idp admins"), "Administrators");
        assert_eq!(p.platform_group("Engineering"), "Engineering");
        assert_eq!(p.idp_group("ADMINISTRATORS"), "IdP Admins");
        assert!(p.is_group_visible("Administrators"));
        assert!(!p.is_group_visible("Designers"));
        assert!(p.is_group_visible("Engineering"));
    }
}
