//! What the CLI's test binaries share.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::process::Command;

/// The `kindling` binary under test.
pub fn kindling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kindling"))
}

/// True when the test may load BPF. Without privileges a local run skips
/// with a printed reason; under `CI=true` it fails loudly instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test}: CI must run as root"
    );
    eprintln!("skipping {test}: needs root");
    false
}
