//! Drawing the live view: a tab line, the chosen view, the keys, and the
//! losses (always on screen).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row as TableRow, Table, TableState, Wrap};
use ratatui::Frame;

use super::state::{Row, Sort, State, View};
use crate::output::duration;

/// Width of the phase bar, in cells.
const BAR: usize = 12;

/// Draws everything.
pub fn render(f: &mut Frame<'_>, s: &State) {
    let [tabs, body, keys, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(tab_line(s), tabs);
    match s.view {
        View::Exchanges if s.detail => detail(f, s, body),
        View::Exchanges => exchanges(f, s, body),
        View::Map => map(f, s, body),
        View::Tcp => tcp(f, s, body),
        View::Dns => dns(f, s, body),
    }
    let keys_text = if s.typing {
        format!(
            "filter: {}▏  (Enter to apply, Esc to stop typing)",
            s.filter
        )
    } else {
        "1-4/Tab view  / filter  e errors  s slow  d sort  p pause  ↑↓ select  Enter detail  Esc clear  q quit"
            .to_owned()
    };
    f.render_widget(
        Paragraph::new(keys_text).style(Style::new().fg(Color::Black).bg(Color::Gray)),
        keys,
    );
    f.render_widget(status_line(s), status);
}

fn tab_line(s: &State) -> Paragraph<'static> {
    let mut spans = vec![Span::styled(
        " kindling ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for (view, name) in [
        (View::Exchanges, "1 Exchanges"),
        (View::Map, "2 Service map"),
        (View::Tcp, "3 TCP health"),
        (View::Dns, "4 DNS"),
    ] {
        let style = if s.view == view {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {name} "), style));
    }
    Paragraph::new(Line::from(spans))
}

fn status_line(s: &State) -> Paragraph<'static> {
    let mut text = s.losses.clone();
    let mut flags = Vec::new();
    if !s.filter.is_empty() {
        flags.push(format!("filter \"{}\"", s.filter));
    }
    if s.errors_only {
        flags.push("errors only".to_owned());
    }
    if s.slow_only {
        flags.push("slow only".to_owned());
    }
    if s.sort == Sort::Duration {
        flags.push("slowest first".to_owned());
    }
    if s.paused {
        flags.push("PAUSED".to_owned());
    }
    if s.rows_dropped > 0 {
        flags.push(format!("{} oldest rows let go", s.rows_dropped));
    }
    if !flags.is_empty() {
        text = format!("{text} | {}", flags.join(", "));
    }
    Paragraph::new(text).style(Style::new().fg(Color::Yellow))
}

/// `HH:MM:SS.mmm` (UTC) of an exchange's Unix time.
fn clock(ts_ns: i64) -> String {
    let ms = ts_ns.div_euclid(1_000_000);
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// The connect / send / wait / download bar of an exchange.
fn phase_bar(r: &Row) -> Line<'static> {
    let p = &r.x.phases;
    let parts = [
        (p.connect.unwrap_or(0), Color::Blue),
        (p.send, Color::Green),
        (p.wait, Color::Yellow),
        (p.download, Color::Cyan),
    ];
    let total: u64 = parts.iter().map(|(d, _)| d).sum::<u64>().max(1);
    let mut spans = Vec::new();
    let mut used = 0;
    for (i, (d, color)) in parts.iter().enumerate() {
        let cells = if i == parts.len() - 1 {
            BAR - used
        } else {
            ((*d as f64 / total as f64) * BAR as f64).round() as usize
        }
        .min(BAR - used);
        if *d > 0 && cells > 0 {
            spans.push(Span::styled("█".repeat(cells), Style::new().fg(*color)));
        } else if cells > 0 {
            spans.push(Span::raw(" ".repeat(cells)));
        }
        used += cells;
    }
    Line::from(spans)
}

fn exchanges(f: &mut Frame<'_>, s: &State, area: Rect) {
    let rows = s.shown();
    // narrow terminals (80 columns) drop the phase bar and keep the request
    let wide = area.width >= 110;
    let mut titles = vec![
        "time", "process", "proto", "peer", "request", "status", "duration",
    ];
    if wide {
        titles.push("phases");
    }
    let header = TableRow::new(titles).style(Style::new().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|r| {
        let style = if r.error {
            Style::new().fg(Color::Red)
        } else if r.x.slow {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        let peer = match r.x.role {
            kindling_flow::Role::Client => r.x.dst,
            kindling_flow::Role::Server => r.x.src,
        };
        let mut cells = vec![
            Line::from(clock(r.x.ts)),
            Line::from(format!("{} {}", r.x.comm, r.x.pid)),
            Line::from(r.x.protocol.as_str()),
            Line::from(peer.to_string()),
            Line::from(r.request.clone()),
            Line::from(r.result.clone()),
            Line::from(duration(r.x.duration_ns)),
        ];
        if wide {
            cells.push(phase_bar(r));
        }
        TableRow::new(cells).style(style)
    });
    let mut widths = vec![
        Constraint::Length(12),
        Constraint::Length(if wide { 22 } else { 12 }),
        Constraint::Length(5),
        Constraint::Length(if wide { 21 } else { 15 }),
        Constraint::Min(12),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    if wide {
        widths.push(Constraint::Length(BAR as u16));
    }
    let table = Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default();
    if !rows.is_empty() {
        state.select(Some(s.selected.min(rows.len() - 1)));
    }
    f.render_stateful_widget(table, area, &mut state);
}

fn detail(f: &mut Frame<'_>, s: &State, area: Rect) {
    let rows = s.shown();
    let Some(r) = rows.get(s.selected.min(rows.len().saturating_sub(1))) else {
        f.render_widget(Paragraph::new("no exchange selected (Esc)"), area);
        return;
    };
    let x = &r.x;
    let mut lines = vec![
        Line::from(format!(
            "{} {} {} {:?}  {} → {}",
            clock(x.ts),
            x.protocol,
            r.request,
            x.role,
            x.src,
            x.dst
        )),
        Line::from(format!(
            "process {} (pid {}, thread {})   result {}   duration {}{}",
            x.comm,
            x.pid,
            x.tid,
            r.result,
            duration(x.duration_ns),
            if x.slow { " (slow)" } else { "" }
        )),
        Line::from(format!(
            "phases: connect {}  send {}  wait {}  download {}",
            x.phases.connect.map_or("-".to_owned(), duration),
            duration(x.phases.send),
            duration(x.phases.wait),
            duration(x.phases.download)
        )),
        Line::from(format!(
            "bytes: request {}  response {}   error {}   partial {}",
            x.request_bytes,
            x.response_bytes,
            x.error.map_or("none".to_owned(), |e| e.as_str().to_owned()),
            x.partial
        )),
        Line::from(""),
        Line::from(Span::styled(
            "attributes",
            Style::new().add_modifier(Modifier::BOLD),
        )),
    ];
    for (k, v) in x.attributes.iter() {
        lines.push(Line::from(format!("  {k} = {v}")));
    }
    for (title, map) in [("this end", &x.resource), ("the other end", &x.peer)] {
        if !map.is_empty() {
            lines.push(Line::from(Span::styled(
                title,
                Style::new().add_modifier(Modifier::BOLD),
            )));
            for (k, v) in map {
                lines.push(Line::from(format!("  {k} = {v}")));
            }
        }
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn map(f: &mut Frame<'_>, s: &State, area: Rect) {
    let mut edges: Vec<_> = s.map.iter().collect();
    edges.sort_by_key(|e| std::cmp::Reverse(e.1.calls));
    let header = TableRow::new([
        "caller", "", "callee", "proto", "calls", "rate/s", "errors", "p99",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let body = edges.into_iter().map(|((caller, callee, proto), e)| {
        let style = if e.errors > 0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        TableRow::new(vec![
            caller.clone(),
            "→".to_owned(),
            callee.clone(),
            proto.as_str().to_owned(),
            e.calls.to_string(),
            format!("{:.1}", e.rate()),
            e.errors.to_string(),
            duration(e.p99()),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    f.render_widget(Table::new(body, widths).header(header), area);
}

fn tcp(f: &mut Frame<'_>, s: &State, area: Rect) {
    let t = &s.tcp;
    let mean = t
        .connect_ns
        .checked_div(t.connects)
        .map_or_else(|| "-".to_owned(), duration);
    let mut lines = vec![
        Line::from(format!("connects: {} (mean {mean})", t.connects)),
        Line::from(format!(
            "failed connects: {}",
            join(
                t.failed
                    .iter()
                    .map(|(errno, n)| format!("errno {errno}: {n}"))
            )
        )),
        Line::from(format!(
            "resets: {} sent, {} received",
            t.resets[0], t.resets[1]
        )),
        Line::from(format!(
            "retransmits: {}",
            join(t.retransmits.iter().map(|(peer, n)| format!("{peer}: {n}")))
        )),
        Line::from(format!(
            "drops: {}",
            join(t.drops.iter().map(|(reason, n)| format!("{reason}: {n}")))
        )),
        Line::from(Span::styled(
            "smoothed RTT by peer",
            Style::new().add_modifier(Modifier::BOLD),
        )),
    ];
    for (peer, rtt) in t.rtt.iter().take(area.height.saturating_sub(6) as usize) {
        lines.push(Line::from(format!("  {peer}  {rtt} µs")));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
}

fn join(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn dns(f: &mut Frame<'_>, s: &State, area: Rect) {
    let mut names: Vec<_> = s.names.iter().collect();
    // failing first, then the slowest
    names.sort_by_key(|n| std::cmp::Reverse((n.1.failures, n.1.slowest)));
    let header = TableRow::new(["name", "lookups", "failures", "slowest", "last answer"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let body = names.into_iter().map(|(name, n)| {
        let style = if n.failures > 0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        TableRow::new(vec![
            name.clone(),
            n.lookups.to_string(),
            n.failures.to_string(),
            duration(n.slowest),
            n.last_code.clone(),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(12),
    ];
    f.render_widget(Table::new(body, widths).header(header), area);
}
