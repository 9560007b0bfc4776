//! The metrics endpoint of every Edgeplane daemon (coordinator replicas, edge agents).
//!
//! - **Content negotiation.** A scraper that asks for OpenMetrics (`Accept:
//!   application/openmetrics-text`, what Prometheus sends by default) gets OpenMetrics 1.0; any
//!   other client (`curl`, `promtool check metrics`, `Accept: text/plain;version=0.0.4`) gets the
//!   Prometheus text format 0.0.4, in which a counter's `# HELP`/`# TYPE` lines name the
//!   `_total` sample and there is no `# EOF` ([`to_prometheus_text`]).
//! - **Process and build metrics** every exporter is expected to have: `process_cpu_seconds_total`,
//!   `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_start_time_seconds` (from `/proc/self`, Linux), and
//!   `edgeplane_build_info{component,version} 1` ([`register_process_and_build`]).
//! - **One small HTTP responder** ([`serve`]): `GET /metrics` (or `/`), anything else 404; one
//!   endpoint does not justify a web framework.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics only when asked for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics` (what the registries encode) in this format.
    pub fn render(self, openmetrics: &str) -> String {
        match self {
            Format::OpenMetrics => openmetrics.to_string(),
            Format::Prometheus => to_prometheus_text(openmetrics),
        }
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: counter families are named by their `_total`
/// sample in `# HELP`/`# TYPE`, `_created` samples, `# UNIT` and `# EOF` are dropped, and the
/// OpenMetrics-only type `unknown` becomes `untyped`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = rewrite_descriptor(line, &counters);
        if let Some(l) = rewritten {
            out.push_str(&l);
        } else if is_created_sample(line, &counters) {
            continue;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A `# HELP`/`# TYPE` line of a counter family, renamed to its `_total` sample.
fn rewrite_descriptor(line: &str, counters: &BTreeSet<&str>) -> Option<String> {
    for kw in ["# HELP ", "# TYPE "] {
        if let Some(rest) = line.strip_prefix(kw) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = if kw == "# TYPE " && tail == "unknown" {
                "untyped"
            } else {
                tail
            };
            let name = if counters.contains(name) {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            return Some(format!("{kw}{name} {tail}"));
        }
    }
    None
}

fn is_created_sample(line: &str, counters: &BTreeSet<&str>) -> bool {
    let sample = line.split(['{', ' ']).next().unwrap_or("");
    sample
        .strip_suffix("_created")
        .is_some_and(|f| counters.contains(f))
}

/// Register the process metrics and `edgeplane_build_info{component,version}` in `r`.
pub fn register_process_and_build(r: &mut Registry, component: &'static str) {
    r.register_collector(Box::new(ProcessCollector { component }));
}

#[derive(Debug)]
struct ProcessCollector {
    component: &'static str,
}

/// What `/proc/self` says about this process (Linux); `None` where it cannot be read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let mut s = parse_stat(&stat, &boot, clock_ticks(), page_size())?;
        s.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        s.max_fds = max_fds();
        Some(s)
    }
}

/// Parse `/proc/self/stat` (fields after the command name, which may hold spaces) and the
/// `btime` line of `/proc/stat`.
pub fn parse_stat(stat: &str, proc_stat: &str, ticks: f64, page: u64) -> Option<ProcessStats> {
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after the command: state is field 3 of proc(5), so field N is f[N - 3]
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let btime: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessStats {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page,
        start_time_seconds: btime as f64 + num(22)? as f64 / ticks,
        open_fds: 0,
        max_fds: 0,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}

fn max_fds() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0 {
        l.rlim_cur
    } else {
        0
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let labels = [
            ("component", self.component),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        let mut fam = enc.encode_descriptor(
            "edgeplane_build_info",
            "Always 1: the component and version of this build",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(fam.encode_family(&labels)?)?;
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        ConstCounter::new(p.cpu_seconds).encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let rows = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds as f64,
            ),
        ];
        for (name, help, v) in rows {
            gauge(&mut enc, name, help, v)?;
        }
        Ok(())
    }
}

/// Encode `r` as OpenMetrics text.
pub fn encode(r: &Registry) -> String {
    let mut o = String::new();
    prometheus_client::encoding::text::encode(&mut o, r).expect("writing to a String cannot fail");
    o
}

/// What a request asked for: its path and `Accept` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub path: String,
    pub accept: Option<String>,
}

/// Parse the head of an HTTP/1 request (the request line and headers).
pub fn parse_head(head: &str) -> RequestHead {
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_string());
    RequestHead { path, accept }
}

/// The full HTTP response for a request head, with the exposition `render()` gives
/// (OpenMetrics text) in the negotiated format.
pub fn respond(head: &RequestHead, render: &dyn Fn() -> String) -> String {
    if head.path != "/metrics" && head.path != "/" {
        return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into();
    }
    let f = Format::negotiate(head.accept.as_deref());
    let body = f.render(&render());
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        f.content_type(),
        body.len()
    )
}

/// The exposition callback of a daemon (OpenMetrics text of its registry now).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serve `render()` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    mut shutdown: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            acc = listener.accept() => {
                let Ok((sock, _)) = acc else { continue };
                tokio::spawn(answer(sock, render.clone()));
            }
        }
    }
}

async fn answer(mut sock: tokio::net::TcpStream, render: Render) {
    let _ = sock.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    // Read until the end of the head (bounded: 8 KiB, 2 s).
    let read = async {
        while n < buf.len() {
            match sock.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    let head = parse_head(&String::from_utf8_lossy(&buf[..n]));
    let resp = respond(&head, render.as_ref());
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP edgeplane_raft_term Current Raft term.\n\
# TYPE edgeplane_raft_term gauge\n\
edgeplane_raft_term 7\n\
# HELP edgeplane_raft_snapshots Snapshots taken locally.\n\
# TYPE edgeplane_raft_snapshots counter\n\
# UNIT edgeplane_raft_snapshots snapshots\n\
edgeplane_raft_snapshots_total 2\n\
edgeplane_raft_snapshots_created 1700000000.0\n\
# HELP x_seconds Latency.\n\
# TYPE x_seconds histogram\n\
x_seconds_sum 0.5\n\
x_seconds_count 1\n\
x_seconds_bucket{le=\"+Inf\"} 1\n\
# EOF\n";

    #[test]
    fn prometheus_text_names_counters_by_their_total_sample() {
        let p = to_prometheus_text(OM);
        let want = "# HELP edgeplane_raft_term Current Raft term.\n\
# TYPE edgeplane_raft_term gauge\n\
edgeplane_raft_term 7\n\
# HELP edgeplane_raft_snapshots_total Snapshots taken locally.\n\
# TYPE edgeplane_raft_snapshots_total counter\n\
edgeplane_raft_snapshots_total 2\n\
# HELP x_seconds Latency.\n\
# TYPE x_seconds histogram\n\
x_seconds_sum 0.5\n\
x_seconds_count 1\n\
x_seconds_bucket{le=\"+Inf\"} 1\n";
        assert_eq!(p, want);
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }

    #[test]
    fn request_heads_are_parsed_with_any_header_case() {
        let h = parse_head("GET /metrics HTTP/1.1\r\nHost: x\r\nACCEPT: text/plain\r\n\r\n");
        assert_eq!(h.path, "/metrics");
        assert_eq!(h.accept.as_deref(), Some("text/plain"));
        let r = respond(&h, &|| OM.to_string());
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(!r.contains("# EOF"));
        let nf = respond(&parse_head("GET /x HTTP/1.1\r\n\r\n"), &|| OM.to_string());
        assert!(nf.starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn proc_stat_fields_are_read_by_position() {
        // proc(5): utime=14, stime=15, starttime=22, vsize=23, rss=24; a command name with
        // a space and a parenthesis must not shift them.
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        fields[23 - 3] = "8192000";
        fields[24 - 3] = "300";
        let stat = format!("42 (my (odd) cmd) {}", fields.join(" "));
        let p = parse_stat(&stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 300 * 4096);
        assert_eq!(p.virtual_bytes, 8_192_000);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
    }

    #[test]
    fn this_process_and_the_build_are_exported() {
        let mut r = Registry::default();
        register_process_and_build(&mut r, "test");
        let t = encode(&r);
        assert!(
            t.contains("edgeplane_build_info{component=\"test\",version=\""),
            "{t}"
        );
        assert!(t.contains("process_cpu_seconds_total "), "{t}");
        assert!(t.contains("process_open_fds "), "{t}");
    }
}
