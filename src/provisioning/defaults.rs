//! Defaults that name platform entities (a project, mashups). Provisioning hands those names to
//! the platform as they are, so a typo would only show when the first user or group is
//! provisioned; `scimgate check` asks the platform about them beforehand.

use crate::config::ProvisioningConfig;
use crate::platform::{names, EntityKind, Platform, PlatformError};

/// A default that names a project or mashup the platform does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDefault {
    /// The setting as written in the configuration, e.g. `provisioning.user_defaults.project`.
    pub setting: &'static str,
    pub kind: EntityKind,
    pub name: String,
}

/// Every default that names an entity, as (setting, kind, name). Empty names are left out:
/// they clear the value rather than point at an entity.
pub fn named_entities(config: &ProvisioningConfig) -> Vec<(&'static str, EntityKind, &str)> {
    let user = &config.user_defaults;
    let group = &config.group_defaults;
    [
        (
            "provisioning.user_defaults.project",
            EntityKind::Project,
            &user.project,
        ),
        (
            "provisioning.user_defaults.home_mashup",
            EntityKind::Mashup,
            &user.home_mashup,
        ),
        (
            "provisioning.user_defaults.mobile_mashup",
            EntityKind::Mashup,
            &user.mobile_mashup,
        ),
        (
            "provisioning.group_defaults.project",
            EntityKind::Project,
            &group.project,
        ),
    ]
    .into_iter()
    .filter_map(|(setting, kind, name)| {
        let name = name.as_deref()?;
        (!name.trim().is_empty()).then_some((setting, kind, name))
    })
    .collect()
}

/// Asks the platform about every default that names a project or mashup, each name once, and
/// returns those it lacks in setting order. The first failed call ends the check: when the
/// platform cannot answer one question it will not answer the next either.
pub async fn missing_defaults(
    platform: &dyn Platform,
    config: &ProvisioningConfig,
) -> Result<Vec<MissingDefault>, PlatformError> {
    let mut answers: Vec<(EntityKind, String, bool)> = Vec::new();
    let mut missing = Vec::new();
    for (setting, kind, name) in named_entities(config) {
        let known = answers
            .iter()
            .find(|(k, n, _)| *k == kind && names::same(n, name))
            .map(|(_, _, exists)| *exists);
        let exists = match known {
            Some(exists) => exists,
            None => {
                let exists = platform.entity_exists(kind, name).await?;
                answers.push((kind, name.to_string(), exists));
                exists
            }
        };
        if !exists {
            missing.push(MissingDefault {
                setting,
                kind,
                name: name.to_string(),
            });
        }
    }
    Ok(missing)
}
