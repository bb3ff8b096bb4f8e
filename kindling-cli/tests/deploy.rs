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
    promtool(&["check", "config", "central.yml"]);
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
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "{a} has no promtool test case"
        );
    }
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards")
}

/// Every dashboard of `deploy/grafana/dashboards/`, parsed.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn dashboards_are_grafana_models_querying_the_datasource_variable() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "dns.json",
            "overview.json",
            "service-map.json",
            "tcp.json",
            "workload.json"
        ]
    );
    let mut uids = std::collections::HashSet::new();
    for (name, d) in &all {
        assert!(
            d["uid"].as_str().is_some_and(|u| uids.insert(u.to_owned())),
            "{name}: a unique uid"
        );
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Kindling / ")),
            "{name}"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |v: &str| vars.iter().any(|x| x["name"] == v);
        assert!(
            var("datasource") && var("cluster") && var("node"),
            "{name}: variables"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name}");
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}/{title}");
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_u64(), "{name}/{title}: gridPos.{k}");
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}/{title}: a query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}/{title}");
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(
                    expr.contains("cluster=~\"$cluster\""),
                    "{name}/{title}: {expr}"
                );
            }
        }
    }
    // what generate.py writes
    let dir = std::env::temp_dir().join(format!("kindling-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("python3")
        .arg(dashboards_dir().join("../generate.py"))
        .arg(&dir)
        .output()
        .expect("python3 runs");
    assert!(status.status.success());
    for (name, d) in &all {
        let fresh: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        assert_eq!(&fresh, d, "{name} is not what generate.py writes: run it");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `deploy/kubernetes/kindling.yaml` parses as the Kubernetes objects it
/// declares (typed by `k8s-openapi`) and holds what the agent needs:
/// capabilities instead of `privileged`, the host's PIDs, read-only mounts,
/// its node's name, and read-only access to the kinds it watches.
#[test]
fn kubernetes_manifests_are_the_objects_the_agent_needs() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::rbac::v1::ClusterRole;

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/kindling.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("the manifests are YAML");
    let of_kind = |kind: &str| -> serde_json::Value {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Service"
        ]
    );

    let ds: DaemonSet = serde_json::from_value(of_kind("DaemonSet")).expect("a DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("kindling-agent"));
    let agent = &pod.containers[0];
    let security = agent.security_context.as_ref().unwrap();
    assert_ne!(security.privileged, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    let mut added = caps.add.clone().unwrap();
    added.sort();
    assert_eq!(
        added,
        ["BPF", "NET_ADMIN", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"]
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let mounts = agent.volume_mounts.as_ref().unwrap();
    for path in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path}"));
        assert_eq!(m.read_only, Some(true), "{path}");
    }
    let env = agent.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "KINDLING_NODE").unwrap();
    let field = node
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    // the agent accepts what the manifest passes it
    let args = agent.args.as_ref().unwrap();
    assert_eq!(args[0], "agent");
    let kubernetes = env
        .iter()
        .find(|e| e.name == "KINDLING_KUBERNETES")
        .unwrap();
    assert_eq!(kubernetes.value.as_deref(), Some("on"));

    let role: ClusterRole = serde_json::from_value(of_kind("ClusterRole")).expect("a ClusterRole");
    let mut granted = Vec::new();
    for rule in role.rules.unwrap() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["get", "list", "watch"], "read-only");
        for group in rule.api_groups.unwrap() {
            for r in rule.resources.clone().unwrap() {
                granted.push(format!("{group}/{r}"));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/nodes",
            "/pods",
            "/services",
            "apps/replicasets",
            "batch/jobs",
            "discovery.k8s.io/endpointslices"
        ]
    );
    let service: Service = serde_json::from_value(of_kind("Service")).expect("a Service");
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 9500);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| &args[i + 1]);
    assert_eq!(listen.map(String::as_str), Some("0.0.0.0:9500"));
}

/// The Helm chart's templates, rendered with the few constructs of Helm's
/// template language they use (`helm` itself is not installable here): a
/// path (`.Values.a.b`, `.Release.Name`, `.Release.Namespace`,
/// `.Chart.AppVersion`), `| quote`, `toYaml … | nindent N`, `if … end`,
/// and the `{{-` / `-}}` whitespace trims. Anything else fails the test,
/// so the chart cannot grow syntax this renderer would get wrong.
mod helm {
    use serde_json::Value;

    pub struct Context {
        pub values: Value,
        pub release: &'static str,
        pub namespace: &'static str,
        pub app_version: String,
    }

    impl Context {
        fn lookup(&self, path: &str) -> Value {
            let mut parts = path.trim_start_matches('.').split('.');
            let root = parts.next().unwrap_or_default();
            let start = match root {
                "Values" => self.values.clone(),
                "Release" => serde_json::json!({"Name": self.release, "Namespace": self.namespace}),
                "Chart" => serde_json::json!({"AppVersion": self.app_version}),
                other => panic!("unsupported template root .{other}"),
            };
            parts.fold(start, |v, k| v.get(k).cloned().unwrap_or(Value::Null))
        }
    }

    fn truthy(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        }
    }

    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    fn pipeline(action: &str, cx: &Context) -> String {
        let mut stages = action.split('|').map(str::trim);
        let first = stages.next().unwrap();
        let mut out = match first.split_once(' ') {
            Some(("toYaml", path)) => serde_saphyr::to_string(&cx.lookup(path.trim()))
                .unwrap()
                .trim_end()
                .to_owned(),
            None if first.starts_with('.') => text(&cx.lookup(first)),
            _ => panic!("unsupported template action {{{{ {action} }}}}"),
        };
        for stage in stages {
            out = match stage.split_once(' ') {
                None if stage == "quote" => format!("{out:?}"),
                Some(("nindent", n)) => {
                    let pad = " ".repeat(n.parse().unwrap());
                    out.lines().map(|l| format!("\n{pad}{l}")).collect()
                }
                _ => panic!("unsupported template function {stage}"),
            };
        }
        out
    }

    pub fn render(template: &str, cx: &Context) -> String {
        let mut out = String::new();
        let mut shown = vec![true];
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            let (before, after) = rest.split_at(open);
            let close = after.find("}}").expect("an action ends");
            let action = &after[2..close];
            let trim_left = action.starts_with('-');
            let trim_right = action.ends_with('-');
            let action = action.trim_matches('-').trim();
            let before = if trim_left { before.trim_end() } else { before };
            if shown.iter().all(|s| *s) {
                out.push_str(before);
            }
            rest = &after[close + 2..];
            if trim_right {
                rest = rest.trim_start();
            }
            if let Some(cond) = action.strip_prefix("if ") {
                let on = truthy(&cx.lookup(cond.trim()));
                shown.push(on);
            } else if action == "end" {
                shown.pop();
                assert!(!shown.is_empty(), "an end without an if");
            } else if action.starts_with("/*") || action.starts_with('#') {
                // a comment
            } else if shown.iter().all(|s| *s) {
                out.push_str(&pipeline(action, cx));
            }
        }
        assert_eq!(shown.len(), 1, "an if without an end");
        out.push_str(rest);
        out
    }
}

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kindling")
}

/// Every object the chart renders with `values` overriding its defaults.
fn render_chart(overrides: serde_json::Value) -> Vec<serde_json::Value> {
    let dir = chart_dir();
    let mut values: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap()).unwrap();
    fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }
    merge(&mut values, overrides);
    let chart: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("Chart.yaml")).unwrap()).unwrap();
    let cx = helm::Context {
        values,
        release: "kindling-agent",
        namespace: "kindling",
        app_version: chart["appVersion"].as_str().unwrap().to_owned(),
    };
    let mut templates: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    templates.sort();
    let mut docs = Vec::new();
    for t in templates {
        let rendered = helm::render(&std::fs::read_to_string(&t).unwrap(), &cx);
        let parsed: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered)
            .unwrap_or_else(|e| panic!("{} renders to invalid YAML: {e}\n{rendered}", t.display()));
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    docs
}

/// With its defaults the chart renders exactly the plain manifests (but
/// the Namespace, which `helm install --create-namespace` makes); its
/// values reach the DaemonSet: cluster name, OTLP endpoint, resources.
#[test]
fn the_helm_chart_renders_the_manifests_and_takes_its_values() {
    use k8s_openapi::api::apps::v1::DaemonSet;

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/kindling.yaml");
    let plain: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let key = |d: &serde_json::Value| format!("{}/{}", d["kind"], d["metadata"]["name"]);
    let mut plain: Vec<serde_json::Value> = plain
        .into_iter()
        .filter(|d| d["kind"] != "Namespace")
        .collect();
    plain.sort_by_key(key);
    let mut rendered = render_chart(serde_json::json!({}));
    rendered.sort_by_key(key);
    assert_eq!(rendered.len(), plain.len());
    for (r, p) in rendered.iter().zip(&plain) {
        assert_eq!(r, p, "the chart's {} differs from the manifest's", key(p));
    }

    let docs = render_chart(serde_json::json!({
        "cluster": "prod-eu",
        "otlp": {"endpoint": "http://otel-collector.observability:4317"},
        "clusterCidrs": "10.96.0.0/12",
        "resources": {"limits": {"memory": "512Mi"}},
        "image": {"tag": "0.2.0"},
        "nodeLocal": true,
    }));
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap()
        .clone();
    let ds: DaemonSet = serde_json::from_value(ds).expect("a DaemonSet");
    let agent = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    let env = |name: &str| {
        agent
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("KINDLING_CLUSTER").as_deref(), Some("prod-eu"));
    assert_eq!(
        env("KINDLING_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(env("KINDLING_OTLP_PROTOCOL").as_deref(), Some("grpc"));
    assert_eq!(
        env("KINDLING_CLUSTER_CIDRS").as_deref(),
        Some("10.96.0.0/12")
    );
    assert_eq!(env("KINDLING_K8S_NODE_LOCAL").as_deref(), Some("true"));
    assert_eq!(agent.image.as_deref(), Some("kindling/agent:0.2.0"));
    let limits = agent.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "512Mi");
    // no OTLP endpoint: no OTLP settings at all
    let docs = render_chart(serde_json::json!({}));
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("KINDLING_OTLP"), "{text}");
}
