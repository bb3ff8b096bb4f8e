//! The Kubernetes metadata saved beside a recording (`CAPTURE.k8s.json`),
//! so that a replay on any machine names the pods, workloads and services
//! the recording host knew.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kindling_k8s::store::{Snapshot, Store};

/// The file's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The recording node (loopback addresses are its).
    node: String,
    snapshot: Snapshot,
}

/// Where `record` saves the metadata of `capture`.
pub fn beside(capture: &Path) -> PathBuf {
    let mut name = capture.as_os_str().to_owned();
    name.push(".k8s.json");
    PathBuf::from(name)
}

/// Writes `store`'s metadata (readable by the owner only, as the capture).
pub fn save(path: &Path, store: &Store, node: &str) -> Result<()> {
    let saved = Saved {
        node: node.to_owned(),
        snapshot: store.snapshot(),
    };
    let json = serde_json::to_vec(&saved)?;
    let mut file = crate::output::create_private(path)?;
    file.write_all(&json)
        .with_context(|| format!("writing {}", path.display()))
}

/// The store and node `save` wrote.
pub fn load(path: &Path) -> Result<(Store, String)> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let saved: Saved = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not Kubernetes metadata saved by record",
            path.display()
        )
    })?;
    // deleted pods keep the expiry they were saved with
    Ok((Store::from_snapshot(saved.snapshot, 0), saved.node))
}
