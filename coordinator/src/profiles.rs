//! The GPU profiles the planner plans with: the shipped table, parsed once, plus the
//! measured profiles nodes register (each such accelerator its own device kind). Used by the
//! agent service (to check a registration), the placement loop and `nodes list`.

use std::sync::OnceLock;

use edgeplane_gpu::profiles::MeasuredRow;
use edgeplane_gpu::GpuData;

use crate::state::State;

/// The shipped GPU profiles, parsed once per process.
pub fn gpu_data() -> Option<&'static GpuData> {
    static CELL: OnceLock<Option<GpuData>> = OnceLock::new();
    CELL.get_or_init(|| match GpuData::shipped() {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(error = %e, "cannot parse the shipped GPU profiles: no planning");
            None
        }
    })
    .as_ref()
}

/// part before `@` or `.` (`resnet50@cam1` -> `resnet50`).
/// Rows a node may report per accelerator (bounds what one Register can write to the state).
pub const MAX_PROFILE_ROWS: usize = 64;

/// A measured device that reported no memory size: planned as if memory were no limit.
fn unreported_memory(mb: u64) -> u64 {
    if mb > 0 {
        mb
    } else {
        u64::MAX / 4
    }
}

/// The planning kind of an accelerator with a measured profile: its own kind per node, so one
/// box's measurements never stand in for another's.
pub fn measured_kind(node: &str, acc: &str) -> String {
    format!("measured:{node}/{acc}")
}

fn measured_rows(kind: &str, rows: &[crate::state::ProfileRow]) -> Vec<MeasuredRow> {
    rows.iter()
        .map(|r| MeasuredRow {
            gpu: kind.to_string(),
            model: r.model.clone(),
            part: "full".into(),
            share: None,
            ms: r.ms.clone(),
            measured: None,
        })
        .collect()
}

/// Validate a reported profile the way the planner will use it (same rules as an operator's
/// `--measured` table): known models, one positive, non-decreasing ms per batch.
pub fn check_profile(a: &edgeplane_proto::agent::Accelerator) -> Result<(), String> {
    if a.profile.is_empty() {
        return Ok(());
    }
    if a.profile.len() > MAX_PROFILE_ROWS {
        return Err(format!(
            "{} rows; at most {MAX_PROFILE_ROWS} are accepted",
            a.profile.len()
        ));
    }
    if a.profile_source.len() > 512 {
        return Err("profile_source: longer than 512 bytes".into());
    }
    let data = gpu_data().ok_or("the shipped GPU profiles do not parse")?;
    let mut p = data.profiles.clone();
    let kind = measured_kind("check", &a.id);
    p.add_device(&kind, a.memory_mb);
    let rows: Vec<crate::state::ProfileRow> = a
        .profile
        .iter()
        .map(|r| crate::state::ProfileRow {
            model: r.model.clone(),
            ms: r.ms.clone(),
        })
        .collect();
    p.apply_measured_rows(&measured_rows(&kind, &rows))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The shipped data plus the measured profiles of the state's nodes: each accelerator that
/// reported one becomes its own device kind ([`measured_kind`]) with those rows. Borrowed
/// unchanged when no node reported a profile. A profile that no longer validates (shipped
/// table changed under a persisted state) is left out with a warning: that accelerator is then
/// planned as if it had none.
pub fn with_measured<'a>(data: &'a GpuData, st: &State) -> std::borrow::Cow<'a, GpuData> {
    let mut measured = st
        .nodes
        .values()
        .flat_map(|n| {
            n.accelerators
                .iter()
                .filter(|a| !a.profile.is_empty())
                .map(move |a| (n, a))
        })
        .peekable();
    if measured.peek().is_none() {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut d = data.clone();
    for (n, a) in measured {
        let kind = measured_kind(&n.name, &a.id);
        let mut p = d.profiles.clone();
        // memory not reported (0): not a constraint the planner can check
        p.add_device(&kind, unreported_memory(a.memory_mb));
        match p.apply_measured_rows(&measured_rows(&kind, &a.profile)) {
            Ok(_) => d.profiles = p,
            Err(e) => tracing::warn!(node = %n.name, accelerator = %a.id, error = %e,
                "measured profile left out"),
        }
    }
    std::borrow::Cow::Owned(d)
}

/// What profile the planner uses for a node's accelerator, in words (None: not plannable).
pub fn profile_label(data: &GpuData, a: &crate::state::Accelerator) -> Option<String> {
    if !a.profile.is_empty() {
        Some(format!("measured ({})", a.profile_source))
    } else if a.kind == "gpu" && data.profiles.gpu(&a.name).is_ok() {
        Some(format!("shipped ({})", a.name))
    } else {
        None
    }
}

/// The profile model a deployed model runs: its name when the profiles know it, else the
/// part before `@` or `.` (`resnet50@cam1` -> `resnet50`).
pub fn profile_of(data: &GpuData, name: &str) -> String {
    if data.profiles.model(name).is_ok() {
        return name.to_string();
    }
    let base = name.split(['@', '.']).next().unwrap_or(name);
    base.to_string()
}
