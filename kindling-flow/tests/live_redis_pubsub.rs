//! Pub/sub on the real kernel against a real redis-server: redis-cli
//! subscribers over RESP2 and RESP3 (`-3`: `HELLO 3`, confirmations and
//! messages come as pushes) and a publisher. Every (un)subscription is
//! answered by its first confirmation; messages delivered to subscribers
//! are counted as such, never as errors, unpaired responses or requests
//! left unanswered. Needs root and redis-server/redis-cli; without them the
//! test skips with a reason, except under `CI=true`, where it fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::live::{self, Drain};
use common::servers::Killed;
use kindling_flow::{Config, Role};
use kindling_probe::ProbeBuilder;

fn cli(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new("redis-cli");
    c.args(["-p", &port.to_string()]).args(args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// One round: a subscriber to two channels, three messages published to
/// one of them, then the subscriber is stopped.
fn round(port: u16, resp3: bool) {
    let mut args = vec![];
    if resp3 {
        args.push("-3");
    }
    args.extend(["subscribe", "news", "sport"]);
    let subscriber = Killed(cli(port, &args).spawn().unwrap());
    // published messages reach the subscriber once it is subscribed
    let start = Instant::now();
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "pubsub", "numsub", "news"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).lines().nth(1) == Some("1") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        assert!(cli(port, &["publish", "news", &format!("item {i}")])
            .status()
            .unwrap()
            .success());
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(subscriber);
}

#[test]
fn subscriptions_pair_and_messages_are_counted() {
    if !live::ready(
        "subscriptions_pair_and_messages_are_counted",
        &["redis-server", "redis-cli"],
    ) {
        return;
    }
    let port = live::free_port();
    let dir = live::temp_dir("pubsub");
    let mut probe = live::load(ProbeBuilder::new().port(port));
    let server = common::servers::redis_server(port, &dir);
    round(port, false);
    round(port, true);

    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let exchanges = live::exchanges(&out, |x| x.protocol == "redis");
    assert!(
        exchanges.iter().all(|x| x.error.is_none() && !x.pending),
        "{exchanges:#?}"
    );
    for role in [Role::Client, Role::Server] {
        let subscribes: Vec<_> = exchanges
            .iter()
            .filter(|x| {
                x.role == role && x.attributes.get("db.operation.name") == Some("SUBSCRIBE")
            })
            .collect();
        assert_eq!(
            subscribes.len(),
            2,
            "{role:?}: one per round: {exchanges:#?}"
        );
        let publishes = exchanges
            .iter()
            .filter(|x| x.role == role && x.attributes.get("db.operation.name") == Some("PUBLISH"))
            .count();
        assert_eq!(publishes, 6, "{role:?}");
    }
    let stats = pipeline.stats();
    // three messages per round, seen by the subscriber and sent by the server
    assert_eq!(stats.messages_delivered, 12, "{stats:?}");
    assert_eq!(stats.unpaired_responses, 0, "{stats:?}");
}
