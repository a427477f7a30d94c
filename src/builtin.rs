//! What the platform has built in, which the configuration is checked against and provisioning
//! obeys: its own accounts and groups (and the one way names are compared with them), the SCIM
//! attributes a user's extension properties can hold, and the longest password it accepts. Kept
//! below `config` so parsing a configuration needs nothing from the layers that use one.

use std::collections::BTreeMap;
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

/// SCIM attributes a user extension property can hold, named by SCIM path with the
/// multi-valued `type` as a segment (`emails.work`, `addresses.work.locality`).
const SLOTS: [&str; 34] = around_simple_user_attributes(
    [
        "name.givenName",
        "name.middleName",
        "name.familyName",
        "name.formatted",
        "name.honorificPrefix",
        "name.honorificSuffix",
    ],
    [
        "emails.work",
        "emails.home",
        "emails.other",
        "phoneNumbers.work",
        "phoneNumbers.home",
        "phoneNumbers.mobile",
        "phoneNumbers.fax",
        "phoneNumbers.pager",
        "phoneNumbers.other",
        "addresses.work.streetAddress",
        "addresses.work.locality",
        "addresses.work.region",
        "addresses.work.postalCode",
        "addresses.work.country",
        "addresses.work.formatted",
        "enterprise.employeeNumber",
        "enterprise.costCenter",
        "enterprise.organization",
        "enterprise.division",
        "enterprise.department",
    ],
);

pub fn known_slots() -> Vec<&'static str> {
    SLOTS.to_vec()
}

pub fn is_known_slot(slot: &str) -> bool {
    SLOTS.contains(&slot)
}

/// The platform's fixed SCIM ↔ user-extension mapping.
pub fn default_user_attributes() -> BTreeMap<String, String> {
    [
        ("name.givenName", "firstName"),
        ("name.middleName", "middleName"),
        ("name.familyName", "lastName"),
        ("displayName", "fullName"),
        ("title", "title"),
        ("emails.work", "emailAddress"),
        ("emails.home", "altEmailAddresses"),
        ("phoneNumbers.work", "workPhone"),
        ("phoneNumbers.home", "homePhone"),
        ("phoneNumbers.mobile", "mobilePhone"),
        ("phoneNumbers.pager", "smsAddress"),
        ("addresses.work.streetAddress", "mailingAddress"),
        ("addresses.work.locality", "city"),
        ("addresses.work.region", "state"),
        ("addresses.work.postalCode", "zipCode"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// The longest password the platform accepts (ThingWorx 9.x/10.x: 14–128 characters).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The SCIM core user attributes that are a single string each (RFC 7643 §4.1.1), in the
/// schema's order: both protocol codecs and the schema description walk them alike.
pub const SIMPLE_USER_ATTRIBUTES: [&str; 8] = [
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "profileUrl",
];

/// `before`, the simple user attributes, then `after`: a list of user attributes in the
/// schema's order that spells the simple ones only here. Evaluated when compiled; a length that
/// does not add up is a compile error.
pub const fn around_simple_user_attributes<const B: usize, const A: usize, const N: usize>(
    before: [&'static str; B],
    after: [&'static str; A],
) -> [&'static str; N] {
    assert!(N == B + SIMPLE_USER_ATTRIBUTES.len() + A);
    let mut out = [""; N];
    let mut i = 0;
    while i < B {
        out[i] = before[i];
        i += 1;
    }
    let mut i = 0;
    while i < SIMPLE_USER_ATTRIBUTES.len() {
        out[B + i] = SIMPLE_USER_ATTRIBUTES[i];
        i += 1;
    }
    let mut i = 0;
    while i < A {
        out[B + SIMPLE_USER_ATTRIBUTES.len() + i] = after[i];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simple_attributes_stand_in_the_schemas_place() {
        assert_eq!(SLOTS[5], "name.honorificSuffix");
        assert_eq!(SLOTS[6..14], SIMPLE_USER_ATTRIBUTES);
        assert_eq!(SLOTS[14], "emails.work");
        assert_eq!(SLOTS[33], "enterprise.department");
        assert!(is_known_slot("profileUrl") && is_known_slot("addresses.work.formatted"));
    }

    #[test]
    fn default_mapping_uses_only_known_slots() {
        for slot in default_user_attributes().keys() {
            assert!(is_known_slot(slot), "{slot}");
        }
    }
}
