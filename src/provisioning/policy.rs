//! The provisioning rules that decide before anything reaches the platform: exclusion lists and
//! identity-provider group mappings. Names are compared through [`policy_key`], which folds every
//! spelling a client could use to slip past a list.

use crate::builtin::{policy_key, BUILT_IN_GROUPS, BUILT_IN_USERS};
use crate::config::ProvisioningConfig;
use std::collections::{HashMap, HashSet};

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
