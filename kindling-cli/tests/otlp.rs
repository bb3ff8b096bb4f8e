//! The agent's OpenTelemetry output against receivers speaking real OTLP
//! (the `opentelemetry-proto` definitions, over gRPC with tonic and over
//! HTTP/protobuf), while real HTTP traffic runs: spans with the exchange's
//! attributes and phases, the metrics, secrets kept out, a collector that is
//! away (drops counted, the agent unharmed) and comes back, and SIGTERM
//! flushing what is queued.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, get, http_server, kindling, privileged, terminate, wait_for, Stop};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;

/// What a receiver got.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Received {
    /// Every span so far, with its resource.
    fn spans(&self) -> Vec<(Resource, Span)> {
        let mut out = Vec::new();
        for req in self.traces.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((rs.resource.clone().unwrap_or_default(), s.clone()));
                    }
                }
            }
        }
        out
    }

    /// The names of every metric received.
    fn metric_names(&self) -> Vec<String> {
        self.metrics
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Everything received, as the bytes on the wire.
    fn wire_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for r in self.traces.lock().unwrap().iter() {
            b.extend(r.encode_to_vec());
        }
        for r in self.metrics.lock().unwrap().iter() {
            b.extend(r.encode_to_vec());
        }
        b
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on `port`, until the test process ends.
fn grpc_receiver(port: u16) -> Received {
    let received = Received::default();
    let r = received.clone();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .add_service(MetricsServiceServer::new(r))
                .serve(addr)
                .await
                .expect("the gRPC receiver serves");
        });
    });
    wait_for("the gRPC receiver", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    received
}

/// An OTLP/HTTP (protobuf) receiver on `port`, until the test process ends.
fn http_receiver(port: u16) -> Received {
    let received = Received::default();
    let r = received.clone();
    let server = tiny_http::Server::http(("127.0.0.1", port)).expect("the HTTP receiver binds");
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            let ok = match request.url() {
                "/v1/traces" => ExportTraceServiceRequest::decode(body.as_slice())
                    .map(|m| r.traces.lock().unwrap().push(m))
                    .is_ok(),
                "/v1/metrics" => ExportMetricsServiceRequest::decode(body.as_slice())
                    .map(|m| r.metrics.lock().unwrap().push(m))
                    .is_ok(),
                _ => false,
            };
            let status = if ok { 200 } else { 400 };
            let _ = request.respond(tiny_http::Response::empty(status));
        }
    });
    received
}

fn curl(url: &str, extra: &[&str]) {
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .args(extra)
        .arg(url)
        .status()
        .expect("curl runs");
    assert!(status.success(), "curl {url}");
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(kvs: &[KeyValue], key: &str) -> Option<String> {
    match attr(kvs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn agent(listen: u16, web: u16, otlp: &[&str]) -> Stop {
    let child = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--port", &web.to_string()])
        .args(["--cluster", "otel-cluster", "--node", "otel-node"])
        .args(otlp)
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let agent = Stop(child);
    wait_for("/readyz", Duration::from_secs(30), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    agent
}

#[test]
fn a_grpc_collector_gets_spans_and_metrics_and_sigterm_flushes_them() {
    if !privileged("OTLP over gRPC") {
        return;
    }
    let web = http_server();
    let collector = free_port();
    let received = grpc_receiver(collector);
    let listen = free_port();
    let agent = agent(
        listen,
        web,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{collector}"),
            "--otlp-interval",
            "1",
            "--keep-query-value",
            "page",
        ],
    );
    let secret_headers = [
        "-H",
        "Authorization: Bearer hdr-secret-456",
        "-H",
        "Cookie: session=cookie-secret-789",
    ];
    for _ in 0..5 {
        curl(
            &format!("http://127.0.0.1:{web}/items/42?page=2&api_key=topsecret123"),
            &secret_headers,
        );
    }
    for _ in 0..3 {
        curl(&format!("http://127.0.0.1:{web}/fail"), &[]);
    }
    wait_for("8 server spans", Duration::from_secs(20), || {
        received
            .spans()
            .iter()
            .filter(|(_, s)| s.kind == SpanKind::Server as i32)
            .count()
            >= 8
    });
    let spans = received.spans();
    let server: Vec<&(Resource, Span)> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32)
        .collect();
    let client: Vec<&(Resource, Span)> = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(server.len(), 8, "one server span per request");
    assert_eq!(client.len(), 8, "curl's side too");
    let (resource, ok) = server
        .iter()
        .find(|(_, s)| s.name == "GET /items/{id}")
        .copied()
        .expect("a span named by method and path template");
    assert_eq!(
        string(&ok.attributes, "url.path").as_deref(),
        Some("/items/42")
    );
    assert_eq!(
        string(&ok.attributes, "url.query").as_deref(),
        Some("page=2&api_key=?"),
        "the allow-listed value is kept, the other redacted"
    );
    assert_eq!(
        attr(&ok.attributes, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        attr(&ok.attributes, "server.port"),
        Some(&Value::IntValue(i64::from(web)))
    );
    assert!(ok.status.is_none(), "a 200 is no error");
    let phases: Vec<&str> = ok.events.iter().map(|e| e.name.as_str()).collect();
    assert!(
        phases.ends_with(&["send", "wait", "download"]),
        "{phases:?}"
    );
    assert!(ok.end_time_unix_nano > ok.start_time_unix_nano);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        wall.abs_diff(ok.start_time_unix_nano) < 120_000_000_000,
        "Unix timestamps"
    );
    assert_eq!(
        string(&resource.attributes, "k8s.cluster.name").as_deref(),
        Some("otel-cluster")
    );
    assert_eq!(
        string(&resource.attributes, "host.name").as_deref(),
        Some("otel-node")
    );
    let failed = server
        .iter()
        .filter(|(_, s)| {
            attr(&s.attributes, "http.response.status_code") == Some(&Value::IntValue(503))
        })
        .count();
    assert_eq!(failed, 3);
    assert!(server.iter().all(|(_, s)| {
        let is_503 =
            attr(&s.attributes, "http.response.status_code") == Some(&Value::IntValue(503));
        let error = s
            .status
            .as_ref()
            .is_some_and(|st| st.code == StatusCode::Error as i32);
        is_503 == error
    }));
    assert!(
        client
            .iter()
            .all(|(r, _)| string(&r.attributes, "service.name").as_deref() == Some("curl")),
        "the client spans are curl's"
    );
    wait_for("the metrics", Duration::from_secs(20), || {
        received
            .metric_names()
            .iter()
            .any(|n| n == "kindling_entity_request")
    });
    assert!(received
        .metric_names()
        .iter()
        .any(|n| n == "kindling_agent_events"));

    // what SIGTERM finds queued is sent before the agent exits
    for _ in 0..4 {
        curl(&format!("http://127.0.0.1:{web}/last"), &secret_headers);
    }
    let err = terminate(agent);
    let last = received
        .spans()
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Server as i32 && s.name == "GET /last")
        .count();
    assert_eq!(last, 4, "the spans queued at SIGTERM were sent: {err}");
    let wire = received.wire_bytes();
    for secret in ["topsecret123", "hdr-secret-456", "cookie-secret-789"] {
        assert!(
            !wire.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} reached the collector"
        );
        assert!(!err.contains(secret), "{secret} in the agent's log");
    }
}

#[test]
fn a_collector_that_is_away_costs_counted_drops_and_export_resumes_when_it_returns() {
    if !privileged("OTLP with the collector away") {
        return;
    }
    let web = http_server();
    let collector = free_port();
    let listen = free_port();
    let agent = agent(
        listen,
        web,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{collector}"),
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-queue",
            "16",
            "--otlp-max-retry",
            "2",
            "--log-format",
            "json",
        ],
    );
    for _ in 0..60 {
        curl(&format!("http://127.0.0.1:{web}/away"), &[]);
    }
    let dropped = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("kindling_agent_output_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut metrics = String::new();
    wait_for("drops to be counted", Duration::from_secs(30), || {
        metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
        dropped(&metrics) > 0
    });
    assert!(
        metrics.contains("kindling_agent_output_queue_depth{"),
        "{metrics}"
    );
    assert!(get(listen, "/healthz").is_some_and(|(s, _)| s == 200));

    // the collector comes back: new spans get through
    let received = http_receiver(collector);
    wait_for("export to resume", Duration::from_secs(40), || {
        curl(&format!("http://127.0.0.1:{web}/back"), &[]);
        std::thread::sleep(Duration::from_millis(500));
        received
            .spans()
            .iter()
            .any(|(_, s)| s.name == "GET /back" && s.kind == SpanKind::Server as i32)
    });
    let metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let exported = metrics
        .lines()
        .find(|l| l.starts_with("kindling_agent_output_exported_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(exported > 0, "{metrics}");
    let err = terminate(agent);
    assert!(
        err.contains("OTLP"),
        "the failed exports were logged: {err}"
    );
    // --log-format json: every line an object with a level and a message
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        !received.metric_names().is_empty(),
        "the last metrics went out at SIGTERM"
    );
}

/// Secrets of database logins: Redis `AUTH` (and the `CONFIG SET` that
/// sets the password), a MariaDB login with a password, a stored value and
/// a SQL literal. None reaches `/metrics`, the JSON lines, the spans and
/// metrics a collector gets, or the agent's log; the exchanges themselves do.
#[test]
fn database_logins_leave_no_secret_in_any_output() {
    if !privileged("secrets of database logins") {
        return;
    }
    let dir = common::temp_dir("otlp-secrets");
    let redis = free_port();
    let _redis = common::servers::redis_server(redis, &dir);
    let mysql = free_port();
    let maria = common::servers::MariaDb::start(mysql, "otlp-secrets");
    assert!(common::servers::admin(
        &maria.socket,
        "CREATE DATABASE shop; CREATE USER app@'127.0.0.1' IDENTIFIED BY 'maria-pw-secret'; \
         GRANT ALL ON shop.* TO app@'127.0.0.1'"
    ));
    let collector = free_port();
    let received = grpc_receiver(collector);
    let listen = free_port();
    let json = dir.join("exchanges.jsonl");
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--port", &format!("{redis},{mysql}")])
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{collector}")])
        .args(["--otlp-interval", "1"])
        .arg("--json-out")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let agent = Stop(agent);
    wait_for("/readyz", Duration::from_secs(30), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let redis_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.to_string(), "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    redis_cli(&["CONFIG", "SET", "requirepass", "redis-pw-secret"]);
    redis_cli(&[
        "-a",
        "redis-pw-secret",
        "SET",
        "session:1",
        "value-secret-777",
    ]);
    let got = redis_cli(&["-a", "redis-pw-secret", "GET", "session:1"]);
    assert!(got.contains("value-secret-777"));
    let login = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uapp", "-A"])
        .args(["-P", &mysql.to_string(), "-pmaria-pw-secret", "shop"])
        .args(["-e", "SELECT 'literal-secret-555'"])
        .output()
        .expect("mariadb runs");
    assert!(login.status.success(), "{login:?}");
    let protocol = |s: &Span| string(&s.attributes, "kindling.protocol");
    wait_for("the database spans", Duration::from_secs(20), || {
        let spans = received.spans();
        let has = |p: &str| spans.iter().any(|(_, s)| protocol(s).as_deref() == Some(p));
        has("redis") && has("mysql")
    });
    wait_for("the metrics", Duration::from_secs(20), || {
        !received.metric_names().is_empty()
    });
    let metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(metrics.contains("protocol=\"redis\""), "{metrics}");
    let err = terminate(agent);
    let json = std::fs::read_to_string(&json).unwrap();
    assert!(json.contains("\"protocol\":\"mysql\""), "{json}");
    assert!(
        json.contains("AUTH"),
        "the AUTH exchange is reported: {json}"
    );
    let wire = received.wire_bytes();
    for secret in [
        "redis-pw-secret",
        "value-secret-777",
        "maria-pw-secret",
        "literal-secret-555",
    ] {
        let found = |text: &[u8]| text.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found(metrics.as_bytes()), "{secret} in /metrics");
        assert!(!found(json.as_bytes()), "{secret} in the JSON lines");
        assert!(!found(&wire), "{secret} reached the collector");
        assert!(!found(err.as_bytes()), "{secret} in the agent's log");
    }
    drop(maria);
    let _ = std::fs::remove_dir_all(&dir);
}
