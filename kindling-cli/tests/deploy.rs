//! The Prometheus files in `deploy/prometheus/`: the configuration and the
//! rules are valid (`promtool check`), and every alert fires on the case
//! that should raise it and stays quiet on the others (`promtool test
//! rules`). The live test in `agent.rs` evaluates the recording rules
//! against a real Prometheus scraping the agent.

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool (Debian package `prometheus`) runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_rules_are_valid() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "kindling-rules.yml"]);
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    promtool(&["test", "rules", "kindling-rules.test.yml"]);
    // every alert of the rules file has a case in the tests
    let rules = std::fs::read_to_string(deploy().join("kindling-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("kindling-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "{a} has no promtool test case"
        );
    }
}
