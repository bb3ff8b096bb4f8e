//! A Kubernetes API server for tests: enough of the real list/watch
//! protocol, over real HTTP/1.1, for kube-rs and kubectl.
//!
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`) in
//!   the legacy form, which both clients fall back to;
//! - lists with `resourceVersion`, `limit` and `continue`, in full or as
//!   `PartialObjectMetadataList` when the client asks for metadata only;
//! - watches as chunked streams of `ADDED` / `MODIFIED` / `DELETED` /
//!   `BOOKMARK` events from a resource version, `410 Gone` (an `ERROR`
//!   event with an `Expired` status) from one older than the compaction
//!   point, and `timeoutSeconds`;
//! - faults on demand: `500`s, dropped watch connections, compaction.
//!
//! Objects are JSON values in the shapes a real cluster returns; the
//! server sets their `resourceVersion` as it stores them.

#![allow(dead_code, reason = "each test uses part of it")]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A resource the server serves: (API path prefix, plural, kind,
/// namespaced).
const RESOURCES: [(&str, &str, &str, bool); 6] = [
    ("/api/v1", "pods", "Pod", true),
    ("/api/v1", "services", "Service", true),
    ("/api/v1", "nodes", "Node", false),
    (
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    ("/apis/apps/v1", "replicasets", "ReplicaSet", true),
    ("/apis/batch/v1", "jobs", "Job", true),
];

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// plural → (namespace, name) → object.
    objects: HashMap<&'static str, BTreeMap<(String, String), Value>>,
    /// (resource version, plural, event type, object).
    events: Vec<(u64, &'static str, &'static str, Value)>,
    /// Watches from a version older than this get `410 Gone`.
    compacted: u64,
    /// plural → requests still to fail with a 500.
    fail: HashMap<String, u32>,
    /// Bumped to drop every open watch connection.
    drop_generation: u64,
    /// (plural, "list" | "watch" | "gone" | "500" | "bookmark") → count.
    counts: HashMap<(String, &'static str), u64>,
}

/// The running server; it stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl ApiServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, st) = (Arc::clone(&s), Arc::clone(&st));
                        std::thread::spawn(move || serve(conn, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server, written to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user:\n    token: test-token\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(path, text).unwrap();
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (lock, cv) = &*self.state;
        let r = f(&mut lock.lock().unwrap());
        cv.notify_all();
        r
    }

    /// Adds or replaces an object (ADDED or MODIFIED), by its kind.
    pub fn put(&self, mut object: Value) {
        let plural = plural_of(object["kind"].as_str().unwrap());
        let key = key_of(&object);
        self.with(|s| {
            s.rv += 1;
            object["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            let objects = s.objects.entry(plural).or_default();
            let kind = if objects.insert(key, object.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            let rv = s.rv;
            s.events.push((rv, plural, kind, object));
        });
    }

    /// Deletes an object (DELETED), by kind, namespace and name.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let plural = plural_of(kind);
        self.with(|s| {
            let key = (namespace.to_owned(), name.to_owned());
            if let Some(mut object) = s.objects.entry(plural).or_default().remove(&key) {
                s.rv += 1;
                object["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                let rv = s.rv;
                s.events.push((rv, plural, "DELETED", object));
            }
        });
    }

    /// The next `n` requests for `plural` fail with a 500.
    pub fn fail_next(&self, plural: &str, n: u32) {
        self.with(|s| {
            s.fail.insert(plural.to_owned(), n);
        });
    }

    /// Closes every open watch connection without ending its stream.
    pub fn drop_watches(&self) {
        self.with(|s| s.drop_generation += 1);
    }

    /// Forgets the event history: a watch from any version before now
    /// gets `410 Gone`, so its client must list again.
    pub fn compact(&self) {
        self.with(|s| {
            s.compacted = s.rv;
            s.events.clear();
        });
    }

    /// How many times `what` happened for `plural`.
    pub fn count(&self, plural: &str, what: &'static str) -> u64 {
        self.with(|s| {
            s.counts
                .get(&(plural.to_owned(), what))
                .copied()
                .unwrap_or(0)
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.with(|s| s.drop_generation += 1);
    }
}

fn plural_of(kind: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| r.2 == kind)
        .map(|r| r.1)
        .unwrap_or_else(|| panic!("kind {kind} is not served"))
}

fn key_of(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_owned(),
        m["name"].as_str().unwrap().to_owned(),
    )
}

struct Request {
    path: String,
    query: HashMap<String, String>,
    accept: String,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head).ok()?;
    let target = req.path?.to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let accept = header("accept").unwrap_or_default();
    // requests here have no body, but skip one if sent
    if let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        std::io::copy(&mut reader.by_ref().take(n), &mut std::io::sink()).ok()?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    Some(Request {
        path: path.to_owned(),
        query,
        accept,
    })
}

fn decode(v: &str) -> String {
    let mut out = Vec::new();
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        410 => "Gone",
        _ => "Internal Server Error",
    };
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar), stop: &AtomicBool) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let ok = match discovery(&req.path) {
            Some(doc) => respond(&mut writer, 200, &doc).is_ok(),
            None => resource(&mut writer, &req, state).is_ok(),
        };
        if !ok {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn discovery(path: &str) -> Option<Value> {
    let resources = |prefix: &str| -> Value {
        let list: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.0 == prefix)
            .map(|r| {
                json!({"name": r.1, "singularName": r.2.to_lowercase(), "namespaced": r.3,
                       "kind": r.2, "verbs": ["get", "list", "watch"]})
            })
            .collect();
        let group_version = prefix
            .trim_start_matches("/apis/")
            .trim_start_matches("/api/");
        json!({"kind": "APIResourceList", "apiVersion": "v1",
               "groupVersion": group_version, "resources": list})
    };
    match path {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})),
        "/apis" => {
            let groups: Vec<Value> = ["discovery.k8s.io", "apps", "batch"]
                .iter()
                .map(|g| {
                    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/version" => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"})),
        _ if RESOURCES.iter().any(|r| r.0 == path) => Some(resources(path)),
        _ => None,
    }
}

/// `(plural, namespace)` of a resource path.
fn route(path: &str) -> Option<(&'static str, Option<String>)> {
    for (prefix, plural, _, _) in RESOURCES {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{plural}") {
            return Some((plural, None));
        }
        if let Some(ns) = rest
            .strip_prefix("/namespaces/")
            .and_then(|r| r.strip_suffix(&format!("/{plural}")))
        {
            return Some((plural, Some(ns.to_owned())));
        }
    }
    None
}

fn metadata_only(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": object["metadata"]})
}

fn resource(
    conn: &mut TcpStream,
    req: &Request,
    state: &(Mutex<State>, Condvar),
) -> std::io::Result<()> {
    let Some((plural, namespace)) = route(&req.path) else {
        return respond(conn, 404, &status(404, "NotFound", "no such path"));
    };
    let watch = matches!(
        req.query.get("watch").map(String::as_str),
        Some("true" | "1")
    );
    let meta_only = req.accept.contains("as=PartialObjectMetadata");
    let mut s = state.0.lock().unwrap();
    let count = |s: &mut State, what| *s.counts.entry((plural.to_owned(), what)).or_default() += 1;
    if let Some(n) = s.fail.get_mut(plural).filter(|n| **n > 0) {
        *n -= 1;
        count(&mut s, "500");
        drop(s);
        return respond(conn, 500, &status(500, "InternalError", "injected fault"));
    }
    let in_ns = |key: &(String, String)| namespace.as_ref().is_none_or(|ns| *ns == key.0);
    // `fieldSelector=a.b=v`: objects whose field a.b is v
    let selector = req
        .query
        .get("fieldSelector")
        .and_then(|f| f.split_once('='));
    if selector.is_some() {
        count(&mut s, "field_selector");
    }
    let selected = |o: &Value| {
        selector.is_none_or(|(path, want)| {
            let got = path.split('.').fold(o, |v, k| &v[k]);
            got.as_str() == Some(want)
        })
    };
    if !watch {
        count(&mut s, "list");
        let all: Vec<&Value> = s
            .objects
            .get(plural)
            .into_iter()
            .flatten()
            .filter(|(k, v)| in_ns(k) && selected(v))
            .map(|(_, v)| v)
            .collect();
        let start: usize = req
            .query
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = req
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(all.len());
        let items: Vec<Value> = all[start.min(end)..end]
            .iter()
            .map(|v| {
                if meta_only {
                    metadata_only(v)
                } else {
                    (*v).clone()
                }
            })
            .collect();
        let kind = RESOURCES.iter().find(|r| r.1 == plural).unwrap().2;
        let mut meta = json!({"resourceVersion": s.rv.to_string()});
        if end < all.len() {
            meta["continue"] = json!(end.to_string());
        }
        let (list_kind, api_version) = if meta_only {
            ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1")
        } else {
            (format!("{kind}List"), "v1")
        };
        let body =
            json!({"kind": list_kind, "apiVersion": api_version, "metadata": meta, "items": items});
        drop(s);
        return respond(conn, 200, &body);
    }
    count(&mut s, "watch");
    let from: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(s.rv);
    let bookmarks = req.query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let chunk = |conn: &mut TcpStream, v: &Value| -> std::io::Result<()> {
        let line = format!("{v}\n");
        write!(conn, "{:x}\r\n{line}\r\n", line.len())?;
        conn.flush()
    };
    if from < s.compacted {
        count(&mut s, "gone");
        drop(s);
        let gone = status(410, "Expired", &format!("too old resource version: {from}"));
        chunk(conn, &json!({"type": "ERROR", "object": gone}))?;
        return write!(conn, "0\r\n\r\n");
    }
    let generation = s.drop_generation;
    let (started, mut sent, mut last_bookmark) = (Instant::now(), from, Instant::now());
    loop {
        let pending: Vec<(u64, &'static str, Value)> = s
            .events
            .iter()
            .filter(|(rv, p, _, o)| *rv > sent && *p == plural && in_ns(&key_of(o)) && selected(o))
            .map(|(rv, _, t, o)| (*rv, *t, o.clone()))
            .collect();
        let now_rv = s.rv;
        let bookmark_due = bookmarks && last_bookmark.elapsed() > Duration::from_millis(500);
        if bookmark_due {
            count(&mut s, "bookmark");
        }
        drop(s);
        for (rv, kind, object) in pending {
            let object = if meta_only {
                metadata_only(&object)
            } else {
                object
            };
            chunk(conn, &json!({"type": kind, "object": object}))?;
            sent = rv;
        }
        if bookmark_due {
            let kind = RESOURCES.iter().find(|r| r.1 == plural).unwrap().2;
            sent = sent.max(now_rv);
            chunk(
                conn,
                &json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1",
                    "metadata": {"resourceVersion": sent.to_string()}}}),
            )?;
            last_bookmark = Instant::now();
        }
        s = state
            .1
            .wait_timeout(state.0.lock().unwrap(), Duration::from_millis(100))
            .unwrap()
            .0;
        if s.drop_generation != generation {
            drop(s);
            // an abrupt end: no final chunk
            let _ = conn.shutdown(Shutdown::Both);
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        if started.elapsed() >= timeout {
            drop(s);
            return write!(conn, "0\r\n\r\n");
        }
    }
}
