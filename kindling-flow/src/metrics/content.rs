//! What an exchange's request and response say, as label values: the
//! request content of a server series (HTTP method and templated path, SQL
//! operation and table, Redis command, DNS question type) and its response
//! content (status, or what went wrong).
//!
//! URL paths are templated so that one resource per id does not make one
//! series per id.

use crate::record::Exchange;
use crate::ErrorKind;

/// The attributes a server series' request content is made of: HTTP
/// method and path (templated later), SQL operation and table, Redis
/// command, DNS question type.
pub(super) fn content_parts(x: &Exchange) -> [&str; 2] {
    x.protocol.request_keys().map(|k| match k {
        "" => "",
        k => x.attributes.get(k).unwrap_or(""),
    })
}

/// Writes the request content of `x` into `out` (cleared first): its
/// [`content_parts`] joined by a space, an HTTP path templated.
pub(super) fn request_content_into(out: &mut String, x: &Exchange) {
    let [first, second] = content_parts(x);
    out.clear();
    match x.protocol {
        kindling_proto::ProtocolId::Http => {
            out.push_str(first);
            out.push(' ');
            template_path_into(out, second);
        }
        _ if second.is_empty() => out.push_str(first),
        _ => {
            out.push_str(first);
            out.push(' ');
            out.push_str(second);
        }
    }
}

/// The response content of `x`: its protocol's status attribute, else
/// what went wrong, else `ok`.
pub(super) fn response_content(x: &Exchange) -> &str {
    x.attributes
        .get(x.protocol.status_key())
        .unwrap_or(match x.error {
            Some(ErrorKind::NoResponse) => "NoResponse",
            Some(ErrorKind::Reset) => "Reset",
            Some(ErrorKind::Incomplete) => "Incomplete",
            Some(_) => "error",
            None => "ok",
        })
}

/// Replaces the parts of a URL path that identify one resource by a
/// placeholder, so that `/users/42/orders/9f1c…` becomes
/// `/users/{id}/orders/{hex}`.
///
/// # Examples
///
/// ```
/// use kindling_flow::metrics::template_path;
///
/// assert_eq!(template_path("/users/42"), "/users/{id}");
/// assert_eq!(
///     template_path("/o/123e4567-e89b-12d3-a456-426614174000/items"),
///     "/o/{uuid}/items"
/// );
/// assert_eq!(template_path("/blob/9f1c0a7d3e5b2c4a"), "/blob/{hex}");
/// assert_eq!(template_path("/static/app.js"), "/static/app.js");
/// ```
pub fn template_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    template_path_into(&mut out, path);
    out
}

/// [`template_path`] appended to `out`.
fn template_path_into(out: &mut String, path: &str) {
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(template_segment(seg));
    }
}

fn template_segment(seg: &str) -> &str {
    let hex = |c: char| c.is_ascii_hexdigit();
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        "{id}"
    } else if seg.len() == 36
        && seg.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                hex(c)
            }
        })
    {
        "{uuid}"
    } else if seg.len() >= 12 && seg.chars().all(hex) && seg.bytes().any(|b| b.is_ascii_digit()) {
        "{hex}"
    } else {
        seg
    }
}
