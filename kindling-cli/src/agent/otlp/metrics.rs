//! The `/metrics` exposition as OTLP metrics: one model, two outputs, so a
//! collector sees the very series Prometheus scrapes (same names, same
//! labels as data-point attributes; counters as cumulative monotonic sums,
//! histograms with their explicit bounds).

use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};

use super::string_kv;

/// What a `# TYPE` line declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One family being read: its metadata and the points read so far.
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    numbers: Vec<NumberDataPoint>,
    histograms: Vec<(Labels, HistogramPoint)>,
}

/// A histogram's samples, gathered from its `_bucket`, `_sum` and `_count`
/// lines.
#[derive(Debug, Default)]
struct HistogramPoint {
    /// (upper bound, cumulative count), `+Inf` included.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// Times the points carry: the start of their cumulative window and now.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When the agent started counting, Unix nanoseconds.
    pub start_ns: u64,
    /// When the values were read, Unix nanoseconds.
    pub now_ns: u64,
}

/// The OTLP metrics of an OpenMetrics text exposition (as the flow model
/// and the agent write it). Lines it does not understand are skipped and
/// counted in the second value.
pub fn from_exposition(text: &str, window: Window) -> (Vec<Metric>, usize) {
    let mut out = Vec::new();
    let mut family: Option<Family> = None;
    let mut help: Option<(String, String)> = None;
    let mut skipped = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), text.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.extend(family.take().map(|f| finish(f, window)));
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match kind {
                "counter" => Kind::Counter,
                "histogram" => Kind::Histogram,
                "gauge" | "unknown" | "info" => Kind::Gauge,
                _ => {
                    skipped += 1;
                    continue;
                }
            };
            let help = match help.take() {
                Some((n, h)) if n == name => h,
                _ => String::new(),
            };
            family = Some(Family {
                name: name.to_owned(),
                help: help.trim_end_matches('.').to_owned(),
                kind,
                numbers: Vec::new(),
                histograms: Vec::new(),
            });
        } else if line.starts_with('#') || line.is_empty() {
        } else if let Some(f) = family.as_mut() {
            if sample(f, line, window).is_none() {
                skipped += 1;
            }
        } else {
            skipped += 1;
        }
    }
    out.extend(family.map(|f| finish(f, window)));
    (out, skipped)
}

/// Adds one sample line to its family; `None` for a line that does not
/// parse or does not belong.
fn sample(f: &mut Family, line: &str, window: Window) -> Option<()> {
    let (name, labels, value) = parse_sample(line)?;
    let suffix = name.strip_prefix(f.name.as_str())?;
    match (f.kind, suffix) {
        (Kind::Counter, "_total") | (Kind::Gauge, "") => {
            f.numbers.push(NumberDataPoint {
                attributes: labels.iter().map(|(k, v)| string_kv(k, v)).collect(),
                start_time_unix_nano: if f.kind == Kind::Counter {
                    window.start_ns
                } else {
                    0
                },
                time_unix_nano: window.now_ns,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            });
        }
        // a counter's creation time is the window's start already
        (Kind::Counter, "_created") => {}
        (Kind::Histogram, "_bucket" | "_sum" | "_count") => {
            let mut labels = labels;
            let le = labels
                .iter()
                .position(|(k, _)| k == "le")
                .map(|i| labels.remove(i).1);
            let point = match f.histograms.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, p)) => p,
                None => {
                    f.histograms.push((labels, HistogramPoint::default()));
                    &mut f.histograms.last_mut()?.1
                }
            };
            match (suffix, le) {
                ("_bucket", Some(le)) => {
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    point.buckets.push((bound, value as u64));
                }
                ("_sum", None) => point.sum = value,
                ("_count", None) => point.count = value as u64,
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}

/// The metric of a family read to its end.
fn finish(f: Family, window: Window) -> Metric {
    let data = match f.kind {
        Kind::Counter => Data::Sum(Sum {
            data_points: f.numbers,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge => Data::Gauge(Gauge {
            data_points: f.numbers,
        }),
        Kind::Histogram => Data::Histogram(Histogram {
            data_points: f
                .histograms
                .into_iter()
                .map(|(labels, p)| histogram_point(&labels, p, window))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    Metric {
        name: f.name,
        description: f.help,
        data: Some(data),
        ..Default::default()
    }
}

/// Prometheus' cumulative `le` buckets as OTLP's per-bucket counts.
fn histogram_point(
    labels: &[(String, String)],
    mut p: HistogramPoint,
    w: Window,
) -> HistogramDataPoint {
    p.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bucket_counts = Vec::with_capacity(p.buckets.len());
    let mut below = 0;
    for &(_, cumulative) in &p.buckets {
        bucket_counts.push(cumulative.saturating_sub(below));
        below = cumulative;
    }
    let explicit_bounds = p
        .buckets
        .iter()
        .map(|b| b.0)
        .filter(|b| b.is_finite())
        .collect();
    HistogramDataPoint {
        attributes: labels.iter().map(|(k, v)| string_kv(k, v)).collect(),
        start_time_unix_nano: w.start_ns,
        time_unix_nano: w.now_ns,
        count: p.count,
        sum: Some(p.sum),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

/// A sample's label pairs, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",…} value [timestamp]` → its parts, escapes undone.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let cut = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(cut);
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            rest = &r[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The points a metric holds.
#[cfg(test)]
pub fn points(m: &Metric) -> usize {
    match &m.data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_flow::{Metrics, MetricsConfig, Stats};

    const W: Window = Window {
        start_ns: 1,
        now_ns: 2,
    };

    #[test]
    fn counters_gauges_and_histograms_keep_names_labels_and_values() {
        let text = "# HELP req_total Requests.\n# TYPE req counter\n\
                    req_total{path=\"/a \\\"b\\\"\",code=\"200\"} 3\nreq_total 4\n\
                    # TYPE conns gauge\nconns 7\n\
                    # TYPE lat histogram\n\
                    lat_sum{p=\"x\"} 1.5\nlat_count{p=\"x\"} 4\n\
                    lat_bucket{le=\"0.1\",p=\"x\"} 1\nlat_bucket{le=\"1.0\",p=\"x\"} 3\n\
                    lat_bucket{le=\"+Inf\",p=\"x\"} 4\n# EOF\n";
        let (m, skipped) = from_exposition(text, W);
        assert_eq!(skipped, 0);
        assert_eq!(m.len(), 3);
        let Some(Data::Sum(sum)) = &m[0].data else {
            panic!("{:?}", m[0])
        };
        assert!(sum.is_monotonic);
        assert_eq!(m[0].name, "req");
        let first = &sum.data_points[0];
        assert_eq!(first.attributes[0].key, "path");
        assert_eq!(
            format!("{:?}", first.attributes[0].value),
            format!("{:?}", string_kv("", "/a \"b\"").value)
        );
        assert_eq!(first.value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!(sum.data_points[1].attributes.len(), 0);
        let Some(Data::Histogram(h)) = &m[2].data else {
            panic!("{:?}", m[2])
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 2, 1]);
        assert_eq!((p.count, p.sum), (4, Some(1.5)));
        assert_eq!(p.attributes.len(), 1, "le is no attribute");
    }

    #[test]
    fn the_flow_models_whole_exposition_converts_without_a_skipped_line() {
        let mut model = Metrics::new(MetricsConfig::default());
        model.update_stats(&Stats::default());
        let (m, skipped) = from_exposition(&model.encode(), W);
        assert_eq!(skipped, 0);
        assert!(m.iter().any(|m| m.name == "kindling_flow_events"));
        assert!(m.iter().all(|m| !m.name.ends_with("_total")));
        assert!(m.iter().map(points).sum::<usize>() > 0);
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let (m, skipped) = from_exposition("x 1\n# TYPE a counter\na_total{b=\"1 2\n", W);
        assert_eq!(skipped, 2);
        assert_eq!(points(&m[0]), 0);
    }
}
