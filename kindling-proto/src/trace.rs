//! Distributed-trace context carried in request headers: W3C `traceparent`,
//! Zipkin B3 (single `b3` header and `X-B3-*`), Jaeger `uber-trace-id`, and
//! SkyWalking `sw8`.

/// Which propagation format a context came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    /// W3C Trace Context (`traceparent`).
    W3c,
    /// Zipkin B3, single or multi header.
    B3,
    /// Jaeger (`uber-trace-id`).
    Jaeger,
    /// Apache SkyWalking v8 (`sw8`); ids stay base64 as sent.
    Sw8,
}

/// Trace and span ids as sent (hex for W3C, B3 and Jaeger; base64 for sw8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext<'a> {
    /// Format.
    pub format: TraceFormat,
    /// Trace id.
    pub trace_id: &'a str,
    /// The caller's span id.
    pub span_id: &'a str,
}

fn is_hex(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds the first trace context among `headers`, trying the formats in the
/// order above. `get` looks a header up by case-insensitive name.
///
/// # Examples
///
/// ```
/// use kindling_proto::trace::{trace_context, TraceFormat};
///
/// let get = |name: &str| {
///     (name == "traceparent")
///         .then_some(&b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..])
/// };
/// let ctx = trace_context(get).unwrap();
/// assert_eq!(ctx.format, TraceFormat::W3c);
/// assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(ctx.span_id, "00f067aa0ba902b7");
/// ```
pub fn trace_context<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Option<TraceContext<'a>> {
    let text = |name: &str| get(name).and_then(|v| std::str::from_utf8(v).ok());
    if let Some(v) = text("traceparent") {
        let mut p = v.split('-');
        if let (Some(ver), Some(t), Some(s), Some(_flags)) =
            (p.next(), p.next(), p.next(), p.next())
        {
            if is_hex(ver, 2..=2) && ver != "ff" && is_hex(t, 32..=32) && is_hex(s, 16..=16) {
                return Some(TraceContext {
                    format: TraceFormat::W3c,
                    trace_id: t,
                    span_id: s,
                });
            }
        }
    }
    if let Some(v) = text("b3") {
        let mut p = v.split('-');
        if let (Some(t), Some(s)) = (p.next(), p.next()) {
            if is_hex(t, 16..=32) && is_hex(s, 16..=16) {
                return Some(TraceContext {
                    format: TraceFormat::B3,
                    trace_id: t,
                    span_id: s,
                });
            }
        }
    }
    if let (Some(t), Some(s)) = (text("x-b3-traceid"), text("x-b3-spanid")) {
        if is_hex(t, 16..=32) && is_hex(s, 16..=16) {
            return Some(TraceContext {
                format: TraceFormat::B3,
                trace_id: t,
                span_id: s,
            });
        }
    }
    if let Some(v) = text("uber-trace-id") {
        let mut p = v.split(':');
        if let (Some(t), Some(s), Some(_parent), Some(_flags)) =
            (p.next(), p.next(), p.next(), p.next())
        {
            if is_hex(t, 1..=32) && is_hex(s, 1..=16) {
                return Some(TraceContext {
                    format: TraceFormat::Jaeger,
                    trace_id: t,
                    span_id: s,
                });
            }
        }
    }
    if let Some(v) = text("sw8") {
        // sample-traceId-segmentId-spanId-service-instance-endpoint-target
        let p: Vec<&str> = v.splitn(9, '-').collect();
        if p.len() == 8 && (p[0] == "0" || p[0] == "1") && !p[1].is_empty() && !p[3].is_empty() {
            return Some(TraceContext {
                format: TraceFormat::Sw8,
                trace_id: p[1],
                span_id: p[3],
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(pairs: &'a [(&'a str, &'a str)]) -> Option<TraceContext<'a>> {
        trace_context(|n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_bytes())
        })
    }

    #[test]
    fn every_format_is_recognised() {
        let b3 = ctx(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )])
        .unwrap();
        assert_eq!(
            (b3.format, b3.trace_id, b3.span_id),
            (
                TraceFormat::B3,
                "80f198ee56343ba864fe8b2a57d3eff7",
                "e457b5a2e4d86bd1"
            )
        );
        let multi = ctx(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ])
        .unwrap();
        assert_eq!(multi.trace_id, "463ac35c9f6413ad");
        let j = ctx(&[("uber-trace-id", "3e7ae9b6f1a1c2d4:8a3c9e7f6d5b4a21:0:1")]).unwrap();
        assert_eq!(
            (j.format, j.span_id),
            (TraceFormat::Jaeger, "8a3c9e7f6d5b4a21")
        );
        let sw = ctx(&[(
            "sw8",
            "1-YTY3NmJhNjY0YzQ5NDk0ZDg3ZWJkMjk4MjJlOTZjNGE=-MWYyZDJmOGQ4ZDgzNGQ=-3-c2VydmljZQ==-aW5zdGFuY2U=-L2FwaQ==-MTI3LjAuMC4xOjgwODA=",
        )])
        .unwrap();
        assert_eq!((sw.format, sw.span_id), (TraceFormat::Sw8, "3"));
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        assert!(ctx(&[("traceparent", "00-short-00f067aa0ba902b7-01")]).is_none());
        assert!(ctx(&[(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )])
        .is_none());
        assert!(ctx(&[("uber-trace-id", "zz:1:0:1")]).is_none());
        assert!(ctx(&[("sw8", "2-a-b-c")]).is_none());
        assert!(ctx(&[]).is_none());
    }
}
