//! What the live view shows, kept from the pipeline's outputs: the recent
//! exchanges (bounded), the service map, TCP health and DNS, and the
//! person's choices (view, filters, sorting, selection, pause).

use std::collections::{BTreeMap, HashMap, VecDeque};

use kindling_flow::{Exchange, Output, ProtocolId, Role, TcpEventKind};

use crate::output::summary;

/// Most exchanges kept for the table (the oldest go first, counted).
pub const MAX_ROWS: usize = 5_000;
/// Most service-map edges and DNS names (more are counted, not shown).
const MAX_KEYS: usize = 2_000;
/// Durations kept per edge for its p99 (a sliding window).
const WINDOW: usize = 512;

/// The four views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Exchanges, like a browser's network panel.
    Exchanges,
    /// Callers → callees.
    Map,
    /// Retransmits, resets, RTT, failed connects, drops.
    Tcp,
    /// Names resolved: slowest and failing.
    Dns,
}

/// How the exchange table is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Newest first.
    Time,
    /// Slowest first.
    Duration,
}

/// One exchange as the table shows it.
#[derive(Clone, Debug)]
pub struct Row {
    /// The exchange itself (its detail view shows everything).
    pub x: Exchange,
    /// Result column.
    pub result: String,
    /// Request column.
    pub request: String,
    /// An error.
    pub error: bool,
}

/// A caller → callee edge.
#[derive(Debug, Default)]
pub struct Edge {
    /// Exchanges.
    pub calls: u64,
    /// Of which errors.
    pub errors: u64,
    /// Recent durations, ns.
    pub recent: VecDeque<u64>,
    /// Times (Unix ns) of the first and the latest call.
    pub span: (i64, i64),
}

impl Edge {
    /// Calls per second between the first and the latest (the count
    /// itself until a second has passed).
    pub fn rate(&self) -> f64 {
        let secs = (self.span.1 - self.span.0) as f64 / 1e9;
        if secs < 1.0 {
            self.calls as f64
        } else {
            self.calls as f64 / secs
        }
    }

    /// The 99th percentile of the recent durations, ns.
    pub fn p99(&self) -> u64 {
        let mut v: Vec<u64> = self.recent.iter().copied().collect();
        v.sort_unstable();
        v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    }
}

/// A name resolved.
#[derive(Debug, Default)]
pub struct Name {
    /// Lookups.
    pub lookups: u64,
    /// Of which failed (an error answer or none).
    pub failures: u64,
    /// The slowest, ns.
    pub slowest: u64,
    /// The last answer code.
    pub last_code: String,
}

/// TCP health counters.
#[derive(Debug, Default)]
pub struct Tcp {
    /// Connects that completed, and their total time, ns.
    pub connects: u64,
    /// Connect time total, ns.
    pub connect_ns: u64,
    /// Connects that failed, by errno.
    pub failed: BTreeMap<i32, u64>,
    /// Retransmitted segments, by peer.
    pub retransmits: BTreeMap<String, u64>,
    /// Resets sent and received.
    pub resets: [u64; 2],
    /// Last smoothed RTT by peer, µs.
    pub rtt: BTreeMap<String, u32>,
    /// Drops by kernel reason.
    pub drops: BTreeMap<String, u64>,
}

/// Everything the live view knows and shows.
#[derive(Debug)]
pub struct State {
    /// The exchanges, oldest first.
    pub rows: VecDeque<Row>,
    /// Rows that fell off the end.
    pub rows_dropped: u64,
    /// (caller process name, callee, protocol) → edge.
    pub map: HashMap<(String, String, ProtocolId), Edge>,
    /// Name → lookups.
    pub names: HashMap<String, Name>,
    /// Edges and names past the bound.
    pub keys_dropped: u64,
    /// TCP health.
    pub tcp: Tcp,
    /// The view shown.
    pub view: View,
    /// Only rows whose process, protocol, peer or request contain this.
    pub filter: String,
    /// The filter is being typed.
    pub typing: bool,
    /// Errors only.
    pub errors_only: bool,
    /// Slow only.
    pub slow_only: bool,
    /// The table's order.
    pub sort: Sort,
    /// New exchanges are counted but the table stands still.
    pub paused: bool,
    /// Selected row of the (filtered, sorted) table.
    pub selected: usize,
    /// The selected exchange's detail is open.
    pub detail: bool,
    /// Loss and truncation, from the probe and the pipeline: always on
    /// screen.
    pub losses: String,
}

impl Default for State {
    fn default() -> Self {
        Self {
            rows: VecDeque::new(),
            rows_dropped: 0,
            map: HashMap::new(),
            names: HashMap::new(),
            keys_dropped: 0,
            tcp: Tcp::default(),
            view: View::Exchanges,
            filter: String::new(),
            typing: false,
            errors_only: false,
            slow_only: false,
            sort: Sort::Time,
            paused: false,
            selected: 0,
            detail: false,
            losses: String::new(),
        }
    }
}

impl State {
    /// Takes one output of the pipeline.
    pub fn add(&mut self, o: &Output) {
        match o {
            Output::Exchange(x) if !x.pending => self.exchange(x),
            Output::Exchange(_) => {}
            Output::Tcp(t) => {
                let peer = t.dst.to_string();
                match t.event {
                    TcpEventKind::Connect => {
                        self.tcp.connects += 1;
                        self.tcp.connect_ns += t.duration_ns.unwrap_or(0);
                    }
                    TcpEventKind::ConnectFailed => {
                        *self.tcp.failed.entry(t.errno.unwrap_or(0)).or_default() += 1;
                    }
                    TcpEventKind::Retransmit => {
                        *self.tcp.retransmits.entry(peer).or_default() += 1;
                    }
                    TcpEventKind::ResetSent => self.tcp.resets[0] += 1,
                    TcpEventKind::ResetReceived => self.tcp.resets[1] += 1,
                    TcpEventKind::Rtt => {
                        if let Some(rtt) = t.srtt_us {
                            self.tcp.rtt.insert(peer, rtt);
                        }
                    }
                    TcpEventKind::Drop => {
                        let reason = t
                            .reason_name
                            .clone()
                            .unwrap_or_else(|| format!("reason {}", t.reason.unwrap_or(0)));
                        *self.tcp.drops.entry(reason).or_default() += 1;
                    }
                }
            }
        }
    }

    fn exchange(&mut self, x: &Exchange) {
        let (result, request) = summary(x);
        let error = x.error.is_some();
        if x.role == Role::Client {
            let callee = x
                .attributes
                .get("server.address")
                .filter(|a| !a.is_empty())
                .map_or_else(|| x.dst.to_string(), str::to_owned);
            // callers by process name: each run of a command is one caller
            let key = (x.comm.to_string(), callee, x.protocol);
            if self.map.len() < MAX_KEYS || self.map.contains_key(&key) {
                let edge = self.map.entry(key).or_default();
                if edge.calls == 0 {
                    edge.span.0 = x.ts;
                }
                edge.span.1 = edge.span.1.max(x.ts);
                edge.calls += 1;
                edge.errors += u64::from(error);
                if edge.recent.len() == WINDOW {
                    edge.recent.pop_front();
                }
                edge.recent.push_back(x.duration_ns);
            } else {
                self.keys_dropped += 1;
            }
            if x.protocol == ProtocolId::Dns {
                let name = x
                    .attributes
                    .get("dns.question.name")
                    .unwrap_or("")
                    .to_owned();
                if self.names.len() < MAX_KEYS || self.names.contains_key(&name) {
                    let n = self.names.entry(name).or_default();
                    n.lookups += 1;
                    n.failures += u64::from(error);
                    n.slowest = n.slowest.max(x.duration_ns);
                    n.last_code.clone_from(&result);
                } else {
                    self.keys_dropped += 1;
                }
            }
        }
        if self.paused {
            return;
        }
        if self.rows.len() == MAX_ROWS {
            self.rows.pop_front();
            self.rows_dropped += 1;
        }
        self.rows.push_back(Row {
            x: x.clone(),
            result,
            request,
            error,
        });
    }

    /// The rows the filters keep, in the table's order.
    pub fn shown(&self) -> Vec<&Row> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !self.errors_only || r.error)
            .filter(|r| !self.slow_only || r.x.slow)
            .filter(|r| {
                needle.is_empty() || {
                    let hay = format!(
                        "{} {} {} {} {} {}",
                        r.x.comm, r.x.pid, r.x.protocol, r.x.dst, r.request, r.result
                    )
                    .to_lowercase();
                    hay.contains(&needle)
                }
            })
            .collect();
        match self.sort {
            Sort::Time => rows.reverse(),
            Sort::Duration => rows.sort_by_key(|r| std::cmp::Reverse(r.x.duration_ns)),
        }
        rows
    }

    /// Handles one key; says whether to quit.
    pub fn key(&mut self, key: crossterm_key::Key) -> bool {
        use crossterm_key::Key;
        if self.typing {
            match key {
                Key::Char(c) => self.filter.push(c),
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Enter | Key::Esc => self.typing = false,
                _ => {}
            }
            self.selected = 0;
            return false;
        }
        match key {
            Key::Char('q') => return true,
            Key::Esc if self.detail => self.detail = false,
            Key::Esc => {
                self.filter.clear();
                self.errors_only = false;
                self.slow_only = false;
            }
            Key::Char('1') => self.view = View::Exchanges,
            Key::Char('2') => self.view = View::Map,
            Key::Char('3') => self.view = View::Tcp,
            Key::Char('4') => self.view = View::Dns,
            Key::Tab => {
                self.view = match self.view {
                    View::Exchanges => View::Map,
                    View::Map => View::Tcp,
                    View::Tcp => View::Dns,
                    View::Dns => View::Exchanges,
                }
            }
            Key::Char('/') => {
                self.typing = true;
                self.filter.clear();
            }
            Key::Char('e') => self.errors_only = !self.errors_only,
            Key::Char('s') => self.slow_only = !self.slow_only,
            Key::Char('d') => {
                self.sort = match self.sort {
                    Sort::Time => Sort::Duration,
                    Sort::Duration => Sort::Time,
                }
            }
            Key::Char('p') | Key::Char(' ') => self.paused = !self.paused,
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected = self.selected.saturating_add(1),
            Key::Enter => self.detail = self.view == View::Exchanges && !self.detail,
            _ => {}
        }
        false
    }
}

/// The keys the view understands, independent of the terminal library.
pub mod crossterm_key {
    /// A key press.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Key {
        /// A character.
        Char(char),
        /// Enter.
        Enter,
        /// Escape.
        Esc,
        /// Backspace.
        Backspace,
        /// Tab.
        Tab,
        /// Up arrow.
        Up,
        /// Down arrow.
        Down,
    }
}

#[cfg(test)]
mod tests {
    use super::crossterm_key::Key;
    use super::*;
    use kindling_proto::AttributeSink;

    fn exchange(path: &str, duration_ns: u64, status: &str) -> Output {
        let mut attributes = kindling_flow::Attributes::default();
        attributes.put("http.request.method", "GET");
        attributes.put("url.path", path);
        attributes.put("http.response.status_code", status);
        Output::Exchange(Exchange {
            duration_ns,
            attributes,
            error: (status == "503").then_some(kindling_flow::ErrorKind::ServerError),
            ..Exchange::new(
                ProtocolId::Http,
                Role::Client,
                "127.0.0.1:40000".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            )
        })
    }

    #[test]
    fn rows_are_bounded_filtered_and_sorted() {
        let mut s = State::default();
        for i in 0..MAX_ROWS + 10 {
            s.add(&exchange(&format!("/a/{i}"), i as u64, "200"));
        }
        s.add(&exchange("/boom", 1, "503"));
        assert_eq!(s.rows.len(), MAX_ROWS);
        assert_eq!(s.rows_dropped, 11);
        // newest first; slowest first
        assert_eq!(s.shown()[0].request, "GET /boom");
        s.key(Key::Char('d'));
        assert_eq!(s.shown()[0].x.duration_ns, (MAX_ROWS + 9) as u64);
        // errors only, then a typed filter
        s.key(Key::Char('e'));
        assert_eq!(s.shown().len(), 1);
        s.key(Key::Esc);
        for k in [
            Key::Char('/'),
            Key::Char('a'),
            Key::Char('/'),
            Key::Char('9'),
            Key::Char('9'),
            Key::Enter,
        ] {
            s.key(k);
        }
        assert!(s.shown().iter().all(|r| r.request.contains("a/99")));
        // pause: new exchanges are not shown, but counted on the map
        s.key(Key::Char('p'));
        s.add(&exchange("/later", 5, "200"));
        assert!(s.rows.iter().all(|r| r.request != "GET /later"));
        let edge = s.map.values().next().unwrap();
        assert_eq!(edge.calls, (MAX_ROWS + 12) as u64);
        assert_eq!(edge.errors, 1);
        assert!(s.key(Key::Char('q')));
    }

    #[test]
    fn p99_is_of_the_recent_window() {
        let mut e = Edge::default();
        e.recent.extend(1..=100);
        assert_eq!(e.p99(), 99);
        e.recent.clear();
        assert_eq!(e.p99(), 0);
    }
}
