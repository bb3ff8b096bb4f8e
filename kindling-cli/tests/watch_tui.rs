//! `kindling watch` on a terminal: the live view, driven in tmux against
//! real traffic (curl to a server of the test's). The screen shows the
//! exchanges with their processes, a filter narrows them, the detail of
//! one opens, the service map lists caller and callee, and at 80×24 it
//! stays readable.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{http_server, privileged, wait_for};

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "tui"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", "tui", k])
                .status()
                .unwrap();
            assert!(ok.success());
            // one key at a time: an Escape followed at once by another
            // key reads as Alt+key
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits for the screen to satisfy `check`; the last screen.
    fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        wait_for(what, Duration::from_secs(30), || {
            screen = self.screen();
            check(&screen)
        });
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn curl(port: u16, path: &str) {
    let ok = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .status()
        .expect("curl runs");
    assert!(ok.success());
}

#[test]
fn the_live_view_shows_filters_details_and_maps_real_traffic() {
    if !privileged("watch's terminal view") {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "tmux is missing");
        eprintln!("skipped: no tmux");
        return;
    }
    let port = http_server();
    let tmux = Tmux {
        socket: format!("kindling-test-{}", std::process::id()),
    };
    let watch = format!("{} watch --port {port}", env!("CARGO_BIN_EXE_kindling"));
    let started = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            "120",
            "-y",
            "30",
            &watch,
        ])
        .status()
        .unwrap();
    assert!(started.success());
    tmux.until("the live view", |s| {
        s.contains("1 Exchanges") && s.contains("lost:")
    });
    for path in ["/tui/1", "/tui/2", "/tui/3", "/fail"] {
        curl(port, path);
    }
    let screen = tmux.until("the exchanges", |s| {
        s.contains("GET /tui/3") && s.contains("GET /fail")
    });
    // each row names its process
    assert!(
        screen
            .lines()
            .any(|l| l.contains("curl ") && l.contains("GET /tui/1")),
        "{screen}"
    );
    assert!(screen.contains("503"), "{screen}");

    // a filter narrows the table
    tmux.keys(&["/", "f", "a", "i", "l", "Enter"]);
    let screen = tmux.until("the filter", |s| !s.contains("GET /tui/1"));
    assert!(screen.contains("GET /fail"), "{screen}");
    assert!(screen.contains("filter \"fail\""), "{screen}");

    // the detail of the selected exchange
    tmux.keys(&["Enter"]);
    let screen = tmux.until("the detail", |s| s.contains("http.request.method = GET"));
    assert!(screen.contains("url.path = /fail"), "{screen}");
    // both ends of /fail match the filter; whichever was reported first
    // is selected, and the detail names its role and its process
    let client = screen.contains(" Client ") && screen.contains("process curl");
    let server = screen.contains(" Server ") && screen.contains("process the_live_view");
    assert!(client || server, "{screen}");
    tmux.keys(&["Escape", "Escape"]);
    tmux.until("the filter cleared", |s| s.contains("GET /tui/1"));

    // the service map: curl → the server
    tmux.keys(&["2"]);
    let screen = tmux.until("the service map", |s| s.contains("→"));
    let edge = screen
        .lines()
        .find(|l| l.contains("curl") && l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no curl edge:\n{screen}"));
    assert!(edge.contains("http"), "{edge}");

    // 80×24 stays readable: the request column and the losses stay
    tmux.cmd()
        .args(["resize-window", "-t", "tui", "-x", "80", "-y", "24"])
        .status()
        .unwrap();
    tmux.keys(&["1"]);
    let screen = tmux.until("the narrow table", |s| s.contains("GET /tui/2"));
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    assert!(screen.contains("request"), "{screen}");
    assert!(screen.contains("lost:"), "{screen}");

    // q quits
    tmux.keys(&["q"]);
    wait_for("watch to quit", Duration::from_secs(10), || {
        !tmux
            .cmd()
            .args(["has-session", "-t", "tui"])
            .status()
            .is_ok_and(|s| s.success())
    });
}
