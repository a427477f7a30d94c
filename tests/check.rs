//! `scimgate check`: a good config passes, every problem of a bad one is named with a fix.

mod common;

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
