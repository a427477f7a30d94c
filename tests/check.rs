//! `scimgate check`: a good config passes, every problem of a bad one is named with a fix.

mod common;

use common::dev_env::ServedPlatform;
use common::*;
use std::process::{Command, Stdio};

fn good_config() -> String {
    config_toml(
        &plain_listener(),
        "http://127.0.0.1:8080",
        "request_timeout = \"30s\"",
        "[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]\n",
    )
}

#[test]
fn good_config_passes() {
    let out = run_check(&good_config());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "exit {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.contains("configuration OK"), "stdout: {stdout}");
}

#[test]
fn config_path_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scimgate.toml");
    std::fs::write(&path, good_config()).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .env("SCIMGATE_CONFIG", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "stdout: {stdout}");
}

#[test]
fn every_semantic_problem_is_reported_with_its_setting_and_a_fix() {
    let toml = r#"
[[listeners]]
address = "not-an-address"

[[listeners]]
address = "127.0.0.1:0"
tls = { cert = "@DIR@/missing/tls.crt", key = "@DIR@/missing/tls.key" }

[upstream]
url = "ftp://x"

[proxy]
trusted_proxies = ["10.0.0.0/33"]

[limits]
max_connections = 0

[admin]
address = "127.0.0.1:0"
"#;
    let out = run_check(toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit status {}", out.status);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let lines: Vec<&str> = stderr.lines().collect();
    for setting in [
        "listeners[0].address",
        "listeners[1].tls",
        "upstream.url",
        "proxy.trusted_proxies",
        "limits.max_connections",
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(setting))
            .unwrap_or_else(|| panic!("no stderr line starts with {setting}:\n{stderr}"));
        assert!(
            line.to_ascii_lowercase().contains("fix"),
            "no fix hint in: {line}"
        );
    }
}

#[test]
fn unknown_key_is_an_error() {
    let toml = format!("{}[limits]\nbogus = 1\n", good_config());
    let out = run_check(&toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit status {}", out.status);
    assert!(
        stderr.contains("bogus"),
        "the unknown key is not named:\n{stderr}"
    );
}

#[test]
fn missing_required_settings_are_reported() {
    let out = run_check("[admin]\naddress = \"127.0.0.1:0\"\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit status {}", out.status);
    assert!(
        stderr.lines().any(|l| l.starts_with("listeners")),
        "missing listeners not reported:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("upstream")),
        "missing upstream.url not reported:\n{stderr}"
    );
}

#[test]
fn harness_json_parser_reads_a_log_line() {
    let j = parse_json(
        r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"listening","listener":"gateway","address":"127.0.0.1:43211","tls":true,"n":200,"x":{"a":[1,2.5,null]},"s":"q\"\u00e9"}"#,
    )
    .unwrap();
    assert_eq!(j.message(), "listening");
    assert_eq!(j.str_field("tls").as_deref(), Some("true"));
    assert_eq!(j.str_field("n").as_deref(), Some("200"));
    assert_eq!(j.str_field("s").as_deref(), Some("q\"é"));
    assert!(parse_json("not json").is_none());
}

fn stdout_of(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "stdout: {stdout}");
    stdout
}

fn warnings(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

#[test]
fn a_mapping_into_an_excluded_group_warns_until_it_is_declared_on_purpose() {
    let mapped = config_toml(
        &plain_listener(),
        "http://127.0.0.1:8080",
        "",
        "[provisioning.group_mappings]\n\"Platform Admins\" = \"Administrators\"\n",
    );
    let stdout = stdout_of(&run_check(&mapped));
    let w = warnings(&stdout);
    assert_eq!(w.len(), 1, "{stdout}");
    assert!(
        w[0].contains("\"Platform Admins\"") && w[0].contains("excluded group \"Administrators\""),
        "{stdout}"
    );
    assert!(
        w[0].contains("provisioning.excluded_groups_mapped_on_purpose"),
        "the warning does not say how to declare it intended: {stdout}"
    );

    let declared = mapped.replace(
        "[provisioning.group_mappings]",
        "[provisioning]\nexcluded_groups_mapped_on_purpose = [\"administrators\"]\n\n[provisioning.group_mappings]",
    );
    let stdout = stdout_of(&run_check(&declared));
    assert!(warnings(&stdout).is_empty(), "{stdout}");
}

fn with_defaults(upstream: &str, platform: &str, user: &str, group: &str) -> String {
    config_toml(
        &plain_listener(),
        upstream,
        "",
        &format!(
            "{platform}\n[provisioning.user_defaults]\n{user}\n[provisioning.group_defaults]\n{group}\n"
        ),
    )
}

/// `scimgate check` runs as a separate process; the platform keeps serving meanwhile.
async fn check_async(toml: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || run_check(&toml))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_checked_live_against_the_platform() {
    let platform = ServedPlatform::start().await;
    let url = format!("http://{}", platform.addr);
    let with_key = format!("[platform]\napp_key = \"{}\"\n", platform.key);
    let toml = with_defaults(
        &url,
        &with_key,
        "project = \"NoSuchProject\"\nhome_mashup = \"home\"\nmobile_mashup = \"NoSuchMashup\"",
        "project = \"MyProject\"",
    );
    let stdout = stdout_of(&check_async(toml).await);
    let w = warnings(&stdout);
    assert_eq!(w.len(), 2, "{stdout}");
    assert!(
        w[0].starts_with("warning: provisioning.user_defaults.project: ")
            && w[0].contains("has no project \"NoSuchProject\""),
        "{stdout}"
    );
    assert!(
        w[1].starts_with("warning: provisioning.user_defaults.mobile_mashup: ")
            && w[1].contains("has no mashup \"NoSuchMashup\""),
        "{stdout}"
    );
    for present in ["home_mashup", "group_defaults", "skipped"] {
        assert!(!stdout.contains(present), "{present}: {stdout}");
    }
    assert!(!stdout.contains(&platform.key), "the app key was printed");

    // The defaults config/scimgate.example.toml suggests all exist on the development platform.
    let toml = with_defaults(
        &url,
        &with_key,
        "project = \"MyProject\"\nhome_mashup = \"Home\"\nmobile_mashup = \"MobileHome\"",
        "project = \"MyProject\"",
    );
    let stdout = stdout_of(&check_async(toml).await);
    assert!(warnings(&stdout).is_empty(), "{stdout}");
    // The one note is the list of user attributes the mapping does not store.
    let notes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{stdout}");
    assert!(
        notes[0].starts_with("note: the attribute mapping does not store"),
        "{stdout}"
    );

    // Reached, but the key is refused: a warning, and still no failed check.
    let toml = with_defaults(
        &url,
        "[platform]\napp_key = \"not-the-key\"\n",
        "project = \"MyProject\"",
        "",
    );
    let stdout = stdout_of(&check_async(toml).await);
    let w = warnings(&stdout);
    assert_eq!(w.len(), 1, "{stdout}");
    assert!(
        w[0].contains("live check of the provisioning defaults skipped")
            && w[0].contains("refused the gateway's credentials"),
        "{stdout}"
    );
    assert!(!stdout.contains("not-the-key"), "the app key was printed");
}

#[test]
fn an_unreachable_platform_skips_the_live_check_with_a_note() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = with_defaults(
        &format!("http://127.0.0.1:{port}"),
        "[platform]\napp_key = \"some-key\"\n",
        "project = \"MyProject\"",
        "",
    );
    let stdout = stdout_of(&run_check(&toml));
    let note = stdout
        .lines()
        .find(|l| l.starts_with("note: live check of the provisioning defaults skipped"))
        .unwrap_or_else(|| panic!("no skipped note: {stdout}"));
    assert!(
        note.contains(&format!("http://127.0.0.1:{port}")) && note.contains("unavailable"),
        "{note}"
    );
    assert!(warnings(&stdout).is_empty(), "{stdout}");

    // Without [platform] there is nothing to ask with; the note says so.
    let toml = with_defaults("http://127.0.0.1:8080", "", "home_mashup = \"Home\"", "");
    let stdout = stdout_of(&run_check(&toml));
    assert!(
        stdout.contains(
            "live check of the provisioning defaults skipped: there is no [platform] table"
        ),
        "{stdout}"
    );
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/platform/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn scim_and_saml_group_mappings_that_disagree_are_reported() {
    let toml = config_toml(
        &plain_listener(),
        "http://127.0.0.1:8080",
        "",
        &format!(
            "[provisioning]\nexcluded_groups_mapped_on_purpose = [\"Administrators\"]\n\n\
             [provisioning.group_mappings]\n\"platform admins\" = \"Administrators\"\n\
             \"Engineering\" = \"Engineering Team\"\n\"Contractors\" = \"External\"\n\n\
             [import]\nsso_group_mappings = \"{}\"\n",
            fixture("sso-group-mappings.json")
        ),
    );
    let stdout = stdout_of(&run_check(&toml));
    let w = warnings(&stdout);
    assert_eq!(w.len(), 1, "{stdout}");
    assert!(
        w[0].contains("\"Engineering\" maps to \"Engineering Team\" in provisioning.group_mappings (SCIM) but to \"Developers\""),
        "{stdout}"
    );
    // One-sided mappings are notes; agreeing ones (any spelling) and same-name rows are silent.
    for needle in [
        "note: the identity provider's group \"Contractors\" is mapped to \"External\" in provisioning.group_mappings (SCIM) but not in the SSO authenticator's table",
        "note: the identity provider's group \"Auditors\" is mapped to \"SecurityAuditors\" in the SSO authenticator's table",
        "row 5 lacks a group name",
    ] {
        assert!(stdout.contains(needle), "{needle}:\n{stdout}");
    }
    for quiet in ["Platform Admins", "platform admins", "\"Operators\""] {
        assert!(!stdout.contains(quiet), "{quiet}:\n{stdout}");
    }

    // A file that is not a mapping table is a problem with the setting's name and a fix.
    let toml = toml.replace("sso-group-mappings.json", "sso-settings-entra.json");
    let out = run_check(&toml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("import.sso_group_mappings: "))
        .unwrap_or_else(|| panic!("setting not named:\n{stderr}"));
    assert!(
        line.contains("neither an infotable") && line.contains("(fix: "),
        "{line}"
    );
}
