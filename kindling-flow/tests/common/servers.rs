//! Throwaway servers for live tests (redis-server, mariadbd) that stop
//! with the test. Only the standard library: the CLI's tests include this
//! file too.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed (and reaped) when dropped, even when the test fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A throwaway redis-server on `port` (no persistence, files in `dir`),
/// once it answers.
pub fn redis_server(port: u16, dir: &Path) -> Killed {
    let server = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );
    let start = Instant::now();
    while !Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "redis-server never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// `mariadb` as root over the unix socket (not traced: not TCP).
pub fn admin(socket: &Path, sql: &str) -> bool {
    Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "--socket"])
        .arg(socket)
        .args(["-e", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A throwaway `mariadbd` on a loopback port, its data directory removed
/// when dropped.
pub struct MariaDb {
    server: Option<Killed>,
    /// Its unix socket (for [`admin`]).
    pub socket: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl MariaDb {
    /// Installs a fresh data directory and starts the server; returns once
    /// it answers over its unix socket.
    pub fn start(port: u16, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kindling-mysql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let socket = dir.join("sock");
        // One installation at a time: two bootstraps side by side failed
        // once in CI (the tests of this file run in parallel).
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let installing = INSTALL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let installed = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            // no Linux AIO contexts (a host-wide budget, aio-max-nr)
            .arg("--innodb-use-native-aio=0")
            .output()
            .expect("mariadb-install-db runs");
        drop(installing);
        assert!(
            installed.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        let server = Killed(
            Command::new("mariadbd")
                .args(["--no-defaults", "--user=root", "--skip-log-bin"])
                .arg("--innodb-use-native-aio=0")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
                .arg("--max-connections=10")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mariadbd starts"),
        );
        let start = Instant::now();
        while !admin(&socket, "SELECT 1") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mariadbd never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            server: Some(server),
            socket,
            dir,
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
