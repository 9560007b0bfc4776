//! `edgeplane top`: the dashboard's live view in the terminal (ratatui over crossterm): nodes,
//! partitions, models and events, from the same read-only collector as `edgeplane dashboard`.
//! Keys: `1`-`4` or Tab switch views, `s` sorts by the next column, `r` reverses, `q` / Esc /
//! Ctrl-C quit (exit 0). A closed terminal ends it too: SIGHUP exits 0, a failed read or write
//! of the terminal ends the loop; SIGTERM restores the terminal and exits 143.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Tabs};
use ratatui::Frame;
use tracing::info;

use crate::conn::Conn;
use crate::dashboard::api::profile_source;
use crate::dashboard::collect::{self, ReadOnlyCluster, Shared, Store};
use crate::exit::{self, Kind};
use crate::GlobalArgs;

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// How often the cluster is polled, in milliseconds (>= 100).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

/// The four views, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Nodes,
    Partitions,
    Models,
    Events,
}

const VIEWS: [View; 4] = [View::Nodes, View::Partitions, View::Models, View::Events];

impl View {
    fn title(self) -> &'static str {
        match self {
            View::Nodes => "1 nodes",
            View::Partitions => "2 partitions",
            View::Models => "3 models",
            View::Events => "4 events",
        }
    }
}

/// A table: its header and rows of cells.
#[derive(Debug, Default)]
pub struct Grid {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// What the user picked: view and sort.
#[derive(Debug, Clone, Copy)]
pub struct UiState {
    pub view: View,
    pub sort_col: usize,
    pub reverse: bool,
}

/// What a key does.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    Redraw,
    Ignore,
}

impl UiState {
    pub fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> Action {
        let at = VIEWS.iter().position(|v| *v == self.view).unwrap_or(0);
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return Action::Quit,
            KeyCode::Char(c @ '1'..='4') => self.switch(VIEWS[c as usize - '1' as usize]),
            KeyCode::Tab | KeyCode::Right => self.switch(VIEWS[(at + 1) % VIEWS.len()]),
            KeyCode::BackTab | KeyCode::Left => {
                self.switch(VIEWS[(at + VIEWS.len() - 1) % VIEWS.len()])
            }
            KeyCode::Char('s') => self.sort_col += 1,
            KeyCode::Char('r') => self.reverse = !self.reverse,
            _ => return Action::Ignore,
        }
        Action::Redraw
    }

    fn switch(&mut self, v: View) {
        if v != self.view {
            self.view = v;
            self.sort_col = 0;
            self.reverse = false;
        }
    }
}

fn pct(x: f64) -> String {
    format!("{x:.1}")
}

/// The rows of one view, from the store.
pub fn grid(s: &Store, view: View) -> Grid {
    let Some(a) = &s.latest else {
        return Grid::default();
    };
    match view {
        View::Nodes => nodes_grid(s, a),
        View::Partitions => Grid {
            header: vec!["node", "gpu", "share %", "models"],
            rows: a
                .placement
                .nodes
                .iter()
                .flat_map(|n| {
                    n.partitions.iter().map(|p| {
                        vec![
                            n.node.clone(),
                            p.accelerator_id.clone(),
                            p.share_pct.to_string(),
                            p.models.join(","),
                        ]
                    })
                })
                .collect(),
        },
        View::Models => models_grid(a),
        View::Events => Grid {
            header: vec!["index", "node", "epoch", "reason"],
            rows: a
                .placement
                .events
                .iter()
                .rev()
                .map(|e| {
                    vec![
                        e.index.to_string(),
                        e.node.clone(),
                        e.epoch.to_string(),
                        e.reason.clone(),
                    ]
                })
                .collect(),
        },
    }
}

fn nodes_grid(s: &Store, a: &collect::Answers) -> Grid {
    Grid {
        header: vec![
            "node", "status", "accel", "profile", "epoch", "done/s", "met %", "energy_j", "models",
        ],
        rows: a
            .nodes
            .nodes
            .iter()
            .map(|n| {
                let lr = n.last_report.unwrap_or_default();
                let r = s.node_rates(&n.name);
                let accel: Vec<String> = n.accelerators.iter().map(|x| x.id.clone()).collect();
                let prof: Vec<&str> = n
                    .accelerators
                    .iter()
                    .map(|x| profile_source(&x.profile))
                    .collect();
                vec![
                    n.name.clone(),
                    n.status.clone(),
                    accel.join(","),
                    prof.join(","),
                    n.assignment_epoch.to_string(),
                    format!("{:.1}", r.finished_per_s),
                    pct(r.met_pct),
                    format!("{:.2}", lr.energy_j),
                    n.models.join(","),
                ]
            })
            .collect(),
    }
}

fn models_grid(a: &collect::Answers) -> Grid {
    Grid {
        header: vec![
            "model",
            "slo_ms",
            "requested/s",
            "observed/s",
            "planned/s",
            "met %",
            "energy_j",
            "shed",
        ],
        rows: a
            .models
            .models
            .iter()
            .map(|m| {
                let load = a.placement.models.iter().find(|l| l.model == m.name);
                let prefix = format!("{}: ", m.name);
                let shed = a
                    .placement
                    .shed
                    .iter()
                    .find_map(|x| x.strip_prefix(&prefix))
                    .unwrap_or("-");
                vec![
                    m.name.clone(),
                    format!("{:.0}", m.slo_ms),
                    format!("{:.1}", m.rate),
                    format!("{:.1}", load.map_or(m.observed_rate, |l| l.observed_rps)),
                    format!("{:.1}", load.map_or(0.0, |l| l.planned_rps)),
                    pct(m.deadline_met_pct),
                    format!("{:.2}", m.energy_j),
                    shed.to_string(),
                ]
            })
            .collect(),
    }
}

/// Sort rows by `col` (numbers as numbers, the rest as text).
pub fn sort_rows(rows: &mut [Vec<String>], col: usize, reverse: bool) {
    rows.sort_by(|a, b| {
        let (x, y) = (&a[col], &b[col]);
        let o = match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.total_cmp(&q),
            _ => x.cmp(y),
        };
        if reverse {
            o.reverse()
        } else {
            o
        }
    });
}

/// Each column as wide as its widest cell (at most 40), the last one takes the rest.
fn column_widths(g: &Grid) -> Vec<Constraint> {
    let n = g.header.len();
    (0..n)
        .map(|i| {
            if i + 1 == n {
                return Constraint::Fill(1);
            }
            let widest = g
                .rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([g.header[i].len() + 2])
                .max()
                .unwrap_or(0);
            Constraint::Length(widest.min(40) as u16)
        })
        .collect()
}

fn header_line(s: &Store) -> String {
    let Some(a) = &s.latest else {
        return match &s.error {
            Some(e) => format!("waiting for the cluster: {e}"),
            None => "waiting for the cluster...".into(),
        };
    };
    let c = &a.cluster;
    let up = c.members.iter().filter(|m| m.reachable).count();
    let mut line = format!(
        "leader {}  term {}  applied {}  members {up}/{} reachable  nodes {}  models {}",
        c.leader_id,
        c.term,
        c.applied_index,
        c.members.len(),
        a.nodes.nodes.len(),
        a.models.models.len()
    );
    if let Some(e) = &s.error {
        line.push_str(&format!("  (last poll failed: {e})"));
    }
    line
}

fn draw(f: &mut Frame, s: &Store, ui: &mut UiState) {
    let [top, tabs, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header_line(s)), top);
    let at = VIEWS.iter().position(|v| *v == ui.view).unwrap_or(0);
    f.render_widget(
        Tabs::new(VIEWS.iter().map(|v| v.title()))
            .select(at)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    let mut g = grid(s, ui.view);
    if !g.header.is_empty() {
        ui.sort_col %= g.header.len();
        sort_rows(&mut g.rows, ui.sort_col, ui.reverse);
    }
    let widths = column_widths(&g);
    let head = Row::new(g.header.iter().enumerate().map(|(i, h)| {
        if i == ui.sort_col {
            format!("{h}{}", if ui.reverse { " v" } else { " ^" })
        } else {
            h.to_string()
        }
    }))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let table = Table::new(g.rows.into_iter().map(Row::new), widths)
        .header(head)
        .block(Block::bordered().title(ui.view.title()));
    f.render_widget(table, body);
    f.render_widget(
        Paragraph::new(Line::from(
            "1-4/Tab: view  s: sort column  r: reverse  q: quit",
        )),
        help,
    );
}

/// The terminal loop; returns when the user quits or the terminal goes away.
fn ui_loop(store: Shared, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let mut term = ratatui::try_init()?;
    let mut ui = UiState {
        view: View::Nodes,
        sort_col: 0,
        reverse: false,
    };
    let result = (|| -> std::io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            term.draw(|f| draw(f, &store.read().expect("store lock"), &mut ui))?;
            if !event::poll(Duration::from_millis(250))? {
                continue;
            }
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press && ui.key(k.code, k.modifiers) == Action::Quit {
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    let _ = ratatui::try_restore();
    result
}

/// `edgeplane top`.
pub async fn top(g: &GlobalArgs, a: TopArgs) -> anyhow::Result<()> {
    if a.poll_ms < 100 {
        return Err(exit::fail(
            Kind::InvalidInput,
            format!("invalid --poll-ms {}: must be >= 100", a.poll_ms),
        ));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(exit::fail(
            Kind::InvalidInput,
            "edgeplane top needs a terminal; for scripts use `nodes list --format json` or \
             the JSON views of `edgeplane dashboard`",
        ));
    }
    let conn = Conn::new(g)?;
    conn.tls().client()?;
    let store: Shared = Arc::new(RwLock::new(Store::new(Duration::from_secs(600))));
    let collector = tokio::spawn(collect::run(
        ReadOnlyCluster::new(conn),
        store.clone(),
        Duration::from_millis(a.poll_ms),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let flag = stop.clone();
    // The UI thread may sit in a blocking read of a terminal that is gone (crossterm reads the
    // tty; after a hang-up that read need not return): the signal ends the process itself.
    let signals = tokio::spawn(async move {
        let code = tokio::select! { _ = hup.recv() => 0, _ = term.recv() => 143 };
        info!(
            code,
            "top: terminal closed (SIGHUP) or terminated (SIGTERM)"
        );
        flag.store(true, Ordering::Relaxed);
        if code != 0 {
            let _ = ratatui::try_restore();
        }
        std::process::exit(code);
    });
    let ui = tokio::task::spawn_blocking(move || ui_loop(store, stop)).await?;
    collector.abort();
    signals.abort();
    match ui {
        Ok(()) => Ok(()),
        // The terminal went away under us (EIO, a closed pty): nothing left to draw on.
        Err(e) => {
            info!(error = %e, "top: the terminal is gone");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_switch_views_sort_and_quit() {
        let mut ui = UiState {
            view: View::Nodes,
            sort_col: 0,
            reverse: false,
        };
        let none = KeyModifiers::NONE;
        assert_eq!(ui.key(KeyCode::Char('3'), none), Action::Redraw);
        assert_eq!(ui.view, View::Models);
        ui.key(KeyCode::Tab, none);
        assert_eq!(ui.view, View::Events);
        ui.key(KeyCode::Tab, none);
        assert_eq!(ui.view, View::Nodes);
        ui.key(KeyCode::Char('s'), none);
        ui.key(KeyCode::Char('r'), none);
        assert_eq!((ui.sort_col, ui.reverse), (1, true));
        ui.key(KeyCode::Char('2'), none);
        assert_eq!(
            (ui.view, ui.sort_col, ui.reverse),
            (View::Partitions, 0, false)
        );
        assert_eq!(ui.key(KeyCode::Char('x'), none), Action::Ignore);
        assert_eq!(ui.key(KeyCode::Char('q'), none), Action::Quit);
        assert_eq!(
            ui.key(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Action::Quit
        );
    }

    #[test]
    fn numbers_sort_as_numbers() {
        let mut rows = vec![
            vec!["b".to_string(), "10".to_string()],
            vec!["a".to_string(), "9".to_string()],
            vec!["c".to_string(), "100".to_string()],
        ];
        sort_rows(&mut rows, 1, false);
        let order: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        sort_rows(&mut rows, 0, true);
        let order: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(order, ["c", "b", "a"]);
    }
}
