//! Labels added to every sample of an OpenMetrics text exposition: how an
//! agent puts its `cluster` and `node` on series it did not make.

use std::fmt::Write as _;

/// The exposition of `parts` (OpenMetrics texts, each may end in `# EOF`)
/// as one text, with `labels` added to every sample ahead of its own (a
/// label with an empty value is left out), ending in one `# EOF`.
///
/// # Examples
///
/// ```
/// let flow = "# TYPE a counter\na_total{x=\"1\"} 2\n# EOF\n";
/// let out = kindling_flow::metrics::relabel(&[flow, "b 3\n"], &[("node", "n1"), ("cluster", "")]);
/// assert_eq!(out, "# TYPE a counter\na_total{node=\"n1\",x=\"1\"} 2\nb{node=\"n1\"} 3\n# EOF\n");
/// ```
pub fn relabel(parts: &[&str], labels: &[(&str, &str)]) -> String {
    let mut extra = String::new();
    for (k, v) in labels {
        if !v.is_empty() {
            let _ = write!(extra, "{k}=\"{}\",", escape(v));
        }
    }
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 64);
    for part in parts {
        let part = part.trim_end();
        let part = part.strip_suffix("# EOF").unwrap_or(part);
        for line in part.lines() {
            push_line(&mut out, line, &extra);
        }
    }
    out.push_str("# EOF\n");
    out
}

/// One line, a sample's label set widened by `extra` (`k="v",` pairs).
fn push_line(out: &mut String, line: &str, extra: &str) {
    if line.is_empty() {
        return;
    }
    if line.starts_with('#') || extra.is_empty() {
        out.push_str(line);
    } else {
        // a sample: the name ends at its label set or its value
        let cut = line.find(['{', ' ']).unwrap_or(line.len());
        let (name, rest) = line.split_at(cut);
        out.push_str(name);
        out.push('{');
        match rest.strip_prefix('{') {
            Some(labels) if labels.starts_with('}') => {
                out.push_str(extra.trim_end_matches(','));
                out.push_str(labels);
            }
            Some(labels) => {
                out.push_str(extra);
                out.push_str(labels);
            }
            None => {
                out.push_str(extra.trim_end_matches(','));
                out.push('}');
                out.push_str(rest);
            }
        }
    }
    out.push('\n');
}

/// A label value as the text format wants it: `\`, `"` and newlines
/// escaped. Values from traffic (paths, process names, DNS names) may hold
/// any of them, and `prometheus-client` writes label values as they are:
/// one raw quote would make Prometheus reject the whole scrape.
///
/// # Examples
///
/// ```
/// assert_eq!(kindling_flow::metrics::escape_label_value("a\"b"), r#"a\"b"#);
/// ```
pub fn escape(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_owned();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_go_on_every_sample_and_one_eof_ends_it() {
        let flow = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\"} 2\nb 3\nc{} 4\n# EOF\n";
        let labels = [("cluster", "prod \"eu\""), ("node", "n1")];
        let out = relabel(&[flow, "d_total 5\n"], &labels);
        assert_eq!(
            out,
            "# HELP a_total A.\n# TYPE a counter\n\
             a_total{cluster=\"prod \\\"eu\\\"\",node=\"n1\",x=\"1\"} 2\n\
             b{cluster=\"prod \\\"eu\\\"\",node=\"n1\"} 3\n\
             c{cluster=\"prod \\\"eu\\\"\",node=\"n1\"} 4\n\
             d_total{cluster=\"prod \\\"eu\\\"\",node=\"n1\"} 5\n# EOF\n"
        );
        let bare = relabel(&[flow], &[("cluster", ""), ("node", "")]);
        assert_eq!(bare.matches("# EOF").count(), 1);
        assert!(bare.contains("a_total{x=\"1\"} 2\nb 3\n"), "{bare}");
    }
}
