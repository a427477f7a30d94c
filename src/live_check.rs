//! `scimgate check --live [--probe]`: whether the platform behind `[platform]` can do what the
//! configuration asks of it, before an identity provider finds out. Each line is a verdict on
//! one prerequisite; every failure names the setting or platform object and the fix.

use crate::config::{self, ExtensionAccess, ProvisioningConfig};
use crate::platform::{
    Extensions, Member, NewGroup, NewUser, Platform, PlatformError, ThingWorx, VocabularyState,
};
use crate::tag::Tag;

/// Groups whose members may use the management services provisioning needs.
const ADMIN_GROUPS: [&str; 2] = ["Administrators", "SecurityAdministrators"];

/// The verdicts so far, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failures: usize,
}

impl Report {
    fn ok(&mut self, what: impl Into<String>) {
        self.lines.push(format!("ok: {}", what.into()));
    }

    fn note(&mut self, what: impl Into<String>) {
        self.lines.push(format!("note: {}", what.into()));
    }

    fn fail(&mut self, what: impl Into<String>, fix: impl AsRef<str>) {
        self.failures += 1;
        self.lines
            .push(format!("FAIL: {} (fix: {})", what.into(), fix.as_ref()));
    }
}

/// Runs the live verification against `platform`; `probe` adds the round trip on a throw-away
/// user and group.
pub async fn verify(
    platform: &ThingWorx,
    config: &config::Config,
    probe: bool,
    probe_suffix: &str,
) -> Report {
    let mut report = Report::default();
    let provisioning = &config.provisioning;
    let key_setting = match config.platform.as_ref().map(|p| &p.credentials) {
        Some(config::PlatformCredentials::Basic { .. }) => {
            "platform.username and platform.password"
        }
        _ => "platform.app_key",
    };

    // The credentials, and their privileges.
    let me = match platform.current_user().await {
        Ok(me) => {
            report.ok(format!("the credentials authenticate as {me:?}"));
            me
        }
        Err(e) => {
            let fix = match e {
                PlatformError::Unauthorized { .. } => format!(
                    "set {key_setting} to a valid application key (Composer → Security → Application Keys), bound to a member of Administrators"
                ),
                _ => "check upstream.url and that the platform is running".to_string(),
            };
            report.fail(
                format!("the platform did not accept the gateway's credentials: {e}"),
                fix,
            );
            return report;
        }
    };
    match platform.user_groups(&me).await {
        Ok(groups) => {
            let admin = crate::platform::names::same(&me, "Administrator")
                || groups.iter().any(|g| {
                    ADMIN_GROUPS
                        .iter()
                        .any(|a| crate::platform::names::same(a, &g.name))
                });
            if admin {
                report.ok(format!("{me:?} is in Administrators"));
            } else {
                report.fail(
                    format!("{me:?} is not a member of Administrators (or SecurityAdministrators): creating and deleting users and groups will be refused"),
                    format!("add the user {me:?} to the group Administrators on the platform, or bind {key_setting} to a user that is"),
                );
            }
        }
        Err(e) => report.fail(
            format!("cannot read the groups of {me:?}: {e}"),
            format!("bind {key_setting} to a member of Administrators"),
        ),
    }

    // How this platform behaves where versions differ.
    match platform.names_case_sensitive().await {
        Ok(true) => report.ok("the platform finds names only as spelled (ThingWorx 8.x); the gateway matches names from SCIM ids against its lists"),
        Ok(false) => report.ok("the platform finds names ignoring case (ThingWorx 9.x/10.x)"),
        Err(e) => report.fail(
            format!("cannot tell how the platform looks names up: {e}"),
            "set platform.names = \"case-insensitive\" (9.x/10.x) or \"case-sensitive\" (8.x)",
        ),
    }
    match platform.extension_reads().await {
        Ok(ExtensionAccess::ConfigurationTable) => report.ok(
            "user extension values are read with GetConfigurationTable {\"tableName\":\"UserExtensions\"}",
        ),
        Ok(_) => report.ok("user extension values are read with GetPropertyValues"),
        Err(e) => report.fail(
            format!("cannot probe how user extension values are read: {e}"),
            "set platform.extensions = \"configuration-table\" or \"property-values\"",
        ),
    }

    // Every mapped extension property.
    let settings = crate::scim::mapping::property_settings(provisioning);
    match platform.user_extension_properties().await {
        Ok(Some(defined)) => {
            let mut all = true;
            for (setting, property) in &settings {
                if !defined.iter().any(|d| d == property) {
                    all = false;
                    report.fail(
                        format!("{setting} = {property:?}: the UserExtensions thing shape has no such property; every user write that sets it would fail"),
                        format!("add the STRING property {property:?} to the UserExtensions thing shape, or map the attribute to an existing property"),
                    );
                }
            }
            if all {
                report.ok(format!(
                    "the UserExtensions thing shape has every mapped property ({})",
                    settings.len()
                ));
            }
        }
        Ok(None) => report.note("the platform does not list the UserExtensions properties"),
        Err(e) => report.fail(
            format!("cannot read the UserExtensions thing shape's properties: {e}"),
            "check that the gateway's user may read ThingShapes/UserExtensions",
        ),
    }

    // externalId storage.
    let vocabularies = [
        (
            "provisioning.user_external_id_vocabulary",
            if provisioning.external_id_property.is_some() {
                None
            } else {
                provisioning.user_external_id_vocabulary.as_deref()
            },
        ),
        (
            "provisioning.group_external_id_vocabulary",
            provisioning.group_external_id_vocabulary.as_deref(),
        ),
    ];
    for (setting, vocabulary) in vocabularies {
        let Some(vocabulary) = vocabulary else {
            continue;
        };
        match platform.vocabulary(vocabulary).await {
            Ok(Some(VocabularyState::Dynamic)) => report.ok(format!(
                "{setting}: the model tag vocabulary {vocabulary:?} exists and is dynamic"
            )),
            Ok(Some(VocabularyState::Missing)) => report.fail(
                format!("{setting}: the platform has no model tag vocabulary {vocabulary:?}; every create that carries an externalId would fail"),
                format!("create the dynamic model tag vocabulary {vocabulary:?} on the platform (Composer → Modeling → Model Tags, \"Dynamic\" ticked), or set {setting} = \"\" to drop externalIds"),
            ),
            Ok(Some(VocabularyState::Static)) => report.fail(
                format!("{setting}: the model tag vocabulary {vocabulary:?} is static, so new terms (externalIds) are refused"),
                format!("make {vocabulary:?} dynamic on the platform"),
            ),
            Ok(Some(VocabularyState::Unknown)) => report.note(format!(
                "{setting}: the vocabulary {vocabulary:?} exists; the platform did not say whether it is dynamic (it must be)"
            )),
            Ok(None) => {}
            Err(e) => report.fail(
                format!("{setting}: cannot read the model tag vocabulary {vocabulary:?}: {e}"),
                format!("check that {vocabulary:?} exists as a dynamic model tag vocabulary"),
            ),
        }
    }

    // Default projects, mashups and tags.
    match crate::provisioning::missing_defaults(platform, provisioning).await {
        Ok(missing) if missing.is_empty() => {
            if !crate::provisioning::named_entities(provisioning).is_empty() {
                report.ok("every default project and mashup exists");
            }
        }
        Ok(missing) => {
            for m in missing {
                let kind = m.kind.as_str().to_lowercase();
                report.fail(
                    format!("{}: the platform has no {kind} {:?}", m.setting, m.name),
                    format!(
                        "create the {kind} {:?} on the platform or correct {}",
                        m.name, m.setting
                    ),
                );
            }
        }
        Err(e) => report.fail(
            format!("cannot list projects and mashups: {e}"),
            "check the gateway's privileges (Administrators)",
        ),
    }
    let default_tags = [
        (
            "provisioning.user_defaults.tags",
            &provisioning.user_defaults.tags,
        ),
        (
            "provisioning.group_defaults.tags",
            &provisioning.group_defaults.tags,
        ),
    ];
    for (setting, tags) in default_tags {
        for tag in tags.iter().flatten() {
            match platform.vocabulary(&tag.vocabulary).await {
                Ok(Some(VocabularyState::Missing)) => report.fail(
                    format!("{setting}: {tag} names the model tag vocabulary {:?}, which does not exist; every create would fail", tag.vocabulary),
                    format!("create the vocabulary {:?} (with the term {:?}, or dynamic) or correct {setting}", tag.vocabulary, tag.term),
                ),
                Ok(Some(VocabularyState::Static)) => report.ok(format!(
                    "{setting}: the vocabulary of {tag} exists (static: the term {:?} must exist in it, which this check cannot see)",
                    tag.term
                )),
                Ok(Some(_)) => report.ok(format!("{setting}: the vocabulary of {tag} exists")),
                Ok(None) => {}
                Err(e) => report.fail(
                    format!("{setting}: cannot read the vocabulary of {tag}: {e}"),
                    "check that the vocabulary exists",
                ),
            }
        }
    }

    // Listing.
    match platform.list_users().await {
        Ok(users) => report.ok(format!("GetEntityList lists users ({})", users.len())),
        Err(e) => report.fail(
            format!("GetEntityList {{\"type\":\"User\"}} failed: {e}"),
            "check the gateway's privileges (Administrators)",
        ),
    }
    match platform.list_groups().await {
        Ok(groups) => report.ok(format!("GetEntityList lists groups ({})", groups.len())),
        Err(e) => report.fail(
            format!("GetEntityList {{\"type\":\"Group\"}} failed: {e}"),
            "check the gateway's privileges (Administrators)",
        ),
    }

    if probe {
        round_trip(platform, provisioning, probe_suffix, &mut report).await;
    }
    report
}

/// Records one probe step.
fn step<T>(
    report: &mut Report,
    what: &str,
    result: Result<T, PlatformError>,
    fix: &str,
) -> Option<T> {
    match result {
        Ok(v) => {
            report.ok(format!("probe: {what}"));
            Some(v)
        }
        Err(e) => {
            report.fail(format!("probe: {what}: {e}"), fix);
            None
        }
    }
}

fn external_id_tags(
    vocabulary: Option<&String>,
    defaults: &Option<Vec<Tag>>,
    term: &str,
) -> Vec<Tag> {
    let mut tags = defaults.clone().unwrap_or_default();
    if let Some(vocabulary) = vocabulary {
        tags.push(Tag {
            vocabulary: vocabulary.clone(),
            term: term.to_string(),
        });
    }
    tags
}

/// A full round trip on a throw-away user and group, as provisioning would make it, cleaned up
/// whatever happens.
async fn round_trip(
    platform: &ThingWorx,
    provisioning: &ProvisioningConfig,
    suffix: &str,
    report: &mut Report,
) {
    let user = format!("scimgate-probe-{suffix}");
    let group = format!("scimgate-probe-group-{suffix}");
    let user_vocabulary = match &provisioning.external_id_property {
        Some(_) => None,
        None => provisioning.user_external_id_vocabulary.as_ref(),
    };
    let defaults = &provisioning.user_defaults;
    let created = step(
        report,
        &format!("create the user {user:?} with the user defaults"),
        platform
            .create_user(&NewUser {
                name: user.clone(),
                password: None,
                description: defaults.description.clone().unwrap_or_default(),
                tags: external_id_tags(user_vocabulary, &defaults.tags, "probe-external-id"),
                home_mashup: defaults.home_mashup.clone(),
                mobile_mashup: defaults.mobile_mashup.clone(),
                groups: Vec::new(),
            })
            .await,
        "see the failures above (defaults, vocabularies, privileges)",
    )
    .is_some();
    if created {
        probe_user(platform, provisioning, &user, user_vocabulary, report).await;
        probe_group(platform, provisioning, &user, &group, report).await;
        step(
            report,
            "disable the user",
            platform.set_user_enabled(&user, false).await,
            "the gateway's user must be allowed DisableUser",
        );
        match platform.is_user_enabled(&user).await {
            Ok(false) => report.ok("probe: the user reads back disabled"),
            Ok(true) => report.fail(
                "probe: the user still reads back enabled after DisableUser",
                "check the platform's DisableUser",
            ),
            Err(e) => report.fail(
                format!("probe: IsEnabled failed: {e}"),
                "check the platform's IsEnabled",
            ),
        }
        step(
            report,
            "end the user's sessions",
            platform.terminate_sessions(&user).await,
            "the gateway's user must be allowed CurrentSessionInfo.TerminateUserSessions",
        );
    }
    // Cleanup, whatever happened: nothing is left behind.
    let mut left = Vec::new();
    for (kind, name) in [("group", &group), ("user", &user)] {
        let exists = match kind {
            "group" => platform.get_group(name).await.map(|_| ()),
            _ => platform.get_user(name).await.map(|_| ()),
        };
        match exists {
            Err(PlatformError::NotFound(_)) => continue,
            Err(e) => {
                left.push(format!("{kind} {name:?} (cannot tell: {e})"));
                continue;
            }
            Ok(()) => {}
        }
        let deleted = match kind {
            "group" => platform.delete_group(name).await,
            _ => platform.delete_user(name).await,
        };
        step(
            report,
            &format!("delete the {kind} {name:?}"),
            deleted,
            "delete it by hand",
        );
        let gone = match kind {
            "group" => platform.get_group(name).await.map(|_| ()),
            _ => platform.get_user(name).await.map(|_| ()),
        };
        if !matches!(gone, Err(PlatformError::NotFound(_))) {
            left.push(format!("{kind} {name:?}"));
        }
    }
    if left.is_empty() {
        report.ok("probe: nothing was left behind");
    } else {
        report.fail(
            format!("probe: left behind on the platform: {}", left.join(", ")),
            "delete these by hand",
        );
    }
}

async fn probe_user(
    platform: &ThingWorx,
    provisioning: &ProvisioningConfig,
    user: &str,
    user_vocabulary: Option<&String>,
    report: &mut Report,
) {
    let defaults = &provisioning.user_defaults;
    if let Some(project) = defaults.project.as_deref().filter(|p| !p.is_empty()) {
        step(
            report,
            &format!("set the user's project {project:?}"),
            platform.set_user_project(user, project).await,
            "correct provisioning.user_defaults.project",
        );
    }
    // Every mapped attribute (and the externalId property), set and read back.
    let mut values = Extensions::new();
    for property in provisioning.user_attributes.values() {
        values.insert(property.clone(), format!("probe-{property}"));
    }
    if let Some(property) = &provisioning.external_id_property {
        values.insert(property.clone(), "probe-external-id".into());
    }
    if !values.is_empty() {
        let written = step(
            report,
            &format!("set {} mapped extension properties", values.len()),
            platform.set_user_extensions(user, &values).await,
            "see the UserExtensions failures above, or set platform.extensions",
        )
        .is_some();
        if written {
            match platform.user_extensions(user).await {
                Ok(read) => {
                    let wrong: Vec<&String> = values
                        .iter()
                        .filter(|(k, v)| read.get(*k) != Some(*v))
                        .map(|(k, _)| k)
                        .collect();
                    if wrong.is_empty() {
                        report.ok("probe: every mapped extension property reads back");
                    } else {
                        report.fail(
                            format!("probe: these extension properties did not read back: {}", wrong.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(", ")),
                            "set platform.extensions to the other reading mechanism (\"configuration-table\" or \"property-values\") and probe again",
                        );
                    }
                }
                Err(e) => report.fail(
                    format!("probe: reading the extension properties failed: {e}"),
                    "set platform.extensions to the other reading mechanism and probe again",
                ),
            }
        }
    }
    if let Some(vocabulary) = user_vocabulary {
        match platform.get_user(user).await {
            Ok(u)
                if u.tags
                    .iter()
                    .any(|t| &t.vocabulary == vocabulary && t.term == "probe-external-id") =>
            {
                report.ok("probe: the externalId tag reads back")
            }
            Ok(u) => report.fail(
                format!(
                    "probe: the externalId tag did not read back (tags: {})",
                    Tag::join(&u.tags)
                ),
                format!("check the vocabulary {vocabulary:?}"),
            ),
            Err(e) => report.fail(
                format!("probe: reading the user failed: {e}"),
                "check the platform",
            ),
        }
    }
}

async fn probe_group(
    platform: &ThingWorx,
    provisioning: &ProvisioningConfig,
    user: &str,
    group: &str,
    report: &mut Report,
) {
    let defaults = &provisioning.group_defaults;
    let created = step(
        report,
        &format!("create the group {group:?} with the group defaults"),
        platform
            .create_group(&NewGroup {
                name: group.to_string(),
                description: defaults.description.clone().unwrap_or_default(),
                project: defaults.project.clone(),
                tags: external_id_tags(
                    provisioning.group_external_id_vocabulary.as_ref(),
                    &defaults.tags,
                    "probe-group-external-id",
                ),
            })
            .await,
        "see the failures above (defaults, vocabularies, privileges)",
    )
    .is_some();
    if !created {
        return;
    }
    let member = Member::user(user);
    let added = step(
        report,
        "add the user to the group",
        platform.add_group_member(group, &member).await,
        "the gateway's user must be allowed AddMember",
    )
    .is_some();
    if added {
        match platform.group_members(group).await {
            Ok(m) if m.iter().any(|x| x.is(&member)) => {
                report.ok("probe: the membership reads back")
            }
            Ok(_) => report.fail(
                "probe: the new member is not listed by GetGroupMembers",
                "check the platform",
            ),
            Err(e) => report.fail(
                format!("probe: GetGroupMembers failed: {e}"),
                "check the platform",
            ),
        }
        step(
            report,
            "remove the user from the group",
            platform.remove_group_member(group, &member).await,
            "the gateway's user must be allowed DeleteMember",
        );
        match platform.group_members(group).await {
            Ok(m) if !m.iter().any(|x| x.is(&member)) => report.ok("probe: the removal reads back"),
            Ok(_) => report.fail(
                "probe: the member is still listed after DeleteMember",
                "check the platform",
            ),
            Err(e) => report.fail(
                format!("probe: GetGroupMembers failed: {e}"),
                "check the platform",
            ),
        }
    }
}
