//! The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, served on
//! its own thread so that scrapes never hold up the capture loop longer
//! than one encoding of the model under its lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use kindling_flow::Metrics;
use tiny_http::{Header, Response, Server, SslConfig};

use super::exposition::{agent_families, AgentCounters};

/// What the endpoint reads.
pub struct Shared {
    /// The flow model, fed by the capture loop.
    pub metrics: Mutex<Metrics>,
    /// The agent's own counters.
    pub counters: AgentCounters,
    /// Labels added to every sample.
    pub cluster: String,
    /// (see `cluster`)
    pub node: String,
    /// The bearer token `/metrics` requires, if any.
    pub token: Option<String>,
    /// The Kubernetes metadata, when the agent names Kubernetes objects.
    pub kubernetes: Option<KubernetesView>,
    /// The packet tracer's model, when the agent traces packets.
    pub net: Option<Mutex<kindling_flow::metrics::NetMetrics>>,
}

/// What `/metrics` shows of the Kubernetes side: the watchers' progress
/// and the workloads of this node's pods.
pub struct KubernetesView {
    /// The metadata store.
    pub store: Arc<std::sync::RwLock<kindling_k8s::store::Store>>,
    /// The watchers' counters.
    pub status: Arc<kindling_k8s::watch::WatchStatus>,
}

impl Shared {
    /// What `/metrics` serves (and the OTLP output sends): the flow
    /// model's series, which carry the cluster and node labels themselves
    /// (`Metrics::with_labels`), and the agent's, given them here.
    pub fn exposition(&self) -> String {
        let flow = self
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .encode();
        let agent = agent_families(&self.counters);
        let labels = [("cluster", &*self.cluster), ("node", &*self.node)];
        let k8s = self.kubernetes.as_ref().map(|k| {
            let store = k.store.read().unwrap_or_else(PoisonError::into_inner);
            (
                k.status.encode_prometheus(),
                store.encode_workload_info(&self.node),
            )
        });
        let (status, workloads) = k8s.unwrap_or_default();
        let net = self.net.as_ref().map_or_else(String::new, |n| {
            n.lock().unwrap_or_else(PoisonError::into_inner).encode()
        });
        let agent = kindling_flow::metrics::relabel(&[&agent, &status, &workloads, &net], &labels);
        let mut text = flow;
        if let Some(cut) = text.rfind("# EOF") {
            text.truncate(cut);
        }
        text.push_str(&agent);
        text
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` (a port in use is an error now, not later) and serves,
/// over TLS when `tls` holds a certificate and key, until `stop` is set.
pub fn start(
    addr: SocketAddr,
    tls: Option<SslConfig>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let server = match tls {
        Some(tls) => Server::https(addr, tls),
        None => Server::http(addr),
    }
    .map_err(|e| anyhow!("listening on {addr}: {e}"))?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let request = match server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(_) => break,
            };
            let path = request.url().split('?').next().unwrap_or("").to_owned();
            let response = match path.as_str() {
                "/metrics" if !authorized(&request, shared.token.as_deref()) => {
                    Response::from_string("a bearer token is required\n")
                        .with_status_code(401)
                        .with_header(header("WWW-Authenticate", "Bearer"))
                }
                "/metrics" => Response::from_string(shared.exposition())
                    .with_header(header("Content-Type", OPENMETRICS)),
                "/healthz" => Response::from_string("ok\n"),
                "/readyz" if shared.counters.ready.load(Ordering::Relaxed) => {
                    Response::from_string("ready\n")
                }
                "/readyz" => {
                    Response::from_string("probe not attached yet\n").with_status_code(503)
                }
                _ => Response::from_string("not found: /metrics, /healthz, /readyz\n")
                    .with_status_code(404),
            };
            // a scraper that went away is its problem, not the agent's
            let _ = request.respond(response);
        }
    }))
}

/// Whether the request carries the token (when one is required).
fn authorized(request: &tiny_http::Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    request.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()))
    })
}

/// Compares without stopping at the first difference (no timing hint).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}
