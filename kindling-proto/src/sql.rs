//! SQL text for observability: literals replaced by `?`, and the operation
//! and first table for bounded metric labels (`SELECT users`).

/// A statement with its literals removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Upper-case first keyword (`SELECT`, `INSERT`, `CALL`, …).
    pub operation: String,
    /// First table named after FROM, INTO, UPDATE, JOIN or TABLE, if any.
    pub table: Option<String>,
    /// The statement with string, number and hex literals as `?` and runs of
    /// whitespace collapsed.
    pub normalized: String,
}

/// Longest statement text kept (bytes); longer text is cut with `…`.
pub const MAX_TEXT: usize = 4096;

/// Redacts and summarises one statement.
///
/// # Examples
///
/// ```
/// let s = kindling_proto::sql::summarize(b"select * from users where name = 'ann' and id in (1, 2)");
/// assert_eq!(s.operation, "SELECT");
/// assert_eq!(s.table.as_deref(), Some("users"));
/// assert_eq!(s.normalized, "select * from users where name = ? and id in (?, ?)");
/// ```
pub fn summarize(sql: &[u8]) -> Summary {
    let text = String::from_utf8_lossy(sql);
    let normalized = normalize(&text);
    let words: Vec<&str> = normalized
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let operation = words
        .first()
        .map(|w| w.to_ascii_uppercase())
        .unwrap_or_default();
    let table = words.windows(2).find_map(|w| {
        // compared in place: upper-casing every word allocated
        let is_intro = ["FROM", "INTO", "JOIN", "TABLE", "UPDATE"]
            .iter()
            .any(|kw| w[0].eq_ignore_ascii_case(kw));
        (is_intro && w[1] != "?" && !w[1].eq_ignore_ascii_case("select"))
            .then(|| w[1].trim_matches(|c| c == '`' || c == '"').to_owned())
    });
    Summary {
        operation,
        table,
        normalized,
    }
}

fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    let mut chars = text.chars().peekable();
    let mut prev_word = false; // last emitted char was part of an identifier
    let mut space = false;
    while let Some(c) = chars.next() {
        if out.len() >= MAX_TEXT {
            out.push('…');
            break;
        }
        if c.is_whitespace() {
            space = true;
            prev_word = false;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        match c {
            '\'' | '"' => {
                // quoted literal, with '' / \' escapes
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push('?');
                prev_word = false;
            }
            '0'..='9' if !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
                {
                    chars.next();
                }
                out.push('?');
                prev_word = false;
            }
            _ => {
                out.push(c);
                prev_word = c.is_alphanumeric() || c == '_' || c == '`' || c == '$';
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_tables() {
        let s = summarize(b"INSERT INTO `orders` (id, note) VALUES (42, 'it''s \\'x\\'')");
        assert_eq!(
            (s.operation.as_str(), s.table.as_deref()),
            ("INSERT", Some("orders"))
        );
        assert_eq!(
            s.normalized,
            "INSERT INTO `orders` (id, note) VALUES (?, ?)"
        );
        let s = summarize(b"update t1 set c = 0x1F where k2 = 3.5e2");
        assert_eq!(
            (s.table.as_deref(), s.normalized.as_str()),
            (Some("t1"), "update t1 set c = ? where k2 = ?")
        );
        let s = summarize(b"  SELECT\n  1");
        assert_eq!(
            (s.operation.as_str(), s.table, s.normalized.as_str()),
            ("SELECT", None, "SELECT ?")
        );
        let s = summarize(b"select a from (select b from inner_t) x join other_t on 1=1");
        assert_eq!(s.table.as_deref(), Some("inner_t"));
    }
}
