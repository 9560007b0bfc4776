//! `models catalog`: the models a deployment can name, and where a profile for each comes from;
//! and the check behind `models deploy` (a name no profile knows is refused unless
//! `--allow-unknown`, since the planner would never place it).
//!
//! Three sources, the same the planner and the agents use:
//! - the shipped GPU profiles (`configs/gpu/profiles.toml`): a latency curve per GPU kind;
//! - the XRBench scenarios (`configs/xrbench/`): models the simulated NPUs run;
//! - profiles the nodes measured and registered (`nodes list`: `profiled_models`).
//!
//! A deployment name matches a profile by its base (`resnet18@v2` and `resnet18.fp16` are
//! `resnet18`), as the coordinator's planner maps them.

use std::collections::BTreeMap;

use edgeplane_proto::admin as api;
use serde_json::json;

use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::{self, print_json, Format};

/// Where the profiles of one model come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// GPU kinds with a shipped latency curve.
    pub gpus: Vec<String>,
    /// XRBench scenarios that run it (simulated NPUs).
    pub scenarios: Vec<String>,
    /// `node/accelerator` pairs that measured it.
    pub measured_on: Vec<String>,
}

/// Every deployable model by name.
pub type Catalog = BTreeMap<String, Entry>;

/// The shipped part of the catalog (GPU profiles and XRBench scenarios).
pub fn shipped() -> Catalog {
    let mut c = Catalog::new();
    if let Ok(data) = edgeplane_gpu::GpuData::shipped() {
        let p = &data.profiles;
        for m in p.model_names() {
            let gpus = p
                .gpu_names()
                .into_iter()
                .filter(|g| p.has_curve(g, &m))
                .collect();
            c.entry(m).or_default().gpus = gpus;
        }
    }
    let cat = edgeplane_scheduler::catalog::Catalog::embedded();
    for sc in cat.scenario_names() {
        let Ok(s) = cat.scenario(&sc) else { continue };
        for m in &s.models {
            c.entry(m.name.clone())
                .or_default()
                .scenarios
                .push(sc.clone());
        }
    }
    c
}

/// Add what the registered nodes measured.
pub fn add_measured(c: &mut Catalog, nodes: &[api::NodeInfo]) {
    for n in nodes {
        for a in &n.accelerators {
            for m in &a.profiled_models {
                c.entry(m.clone())
                    .or_default()
                    .measured_on
                    .push(format!("{}/{}", n.name, a.id));
            }
        }
    }
}

/// The profile a deployment name maps to (its base before `@` or `.`).
pub fn base_name(name: &str) -> &str {
    name.split(['@', '.']).next().unwrap_or(name)
}

/// Whether `name` has a profile in `c`.
pub fn knows(c: &Catalog, name: &str) -> bool {
    c.contains_key(name) || c.contains_key(base_name(name))
}

/// The catalog of this cluster: shipped plus measured.
pub(crate) async fn of_cluster(conn: &Conn) -> anyhow::Result<Catalog> {
    let r = conn
        .call("nodes list", |mut c| async move {
            c.list_nodes(api::ReadRequest { stale: true }).await
        })
        .await?;
    let mut c = shipped();
    add_measured(&mut c, &r.nodes);
    Ok(c)
}

/// Refuse a deployment no profile knows (exit 3, the valid names listed).
pub fn check_deployable(c: &Catalog, name: &str) -> anyhow::Result<()> {
    if knows(c, name) {
        return Ok(());
    }
    let names: Vec<&str> = c.keys().map(String::as_str).collect();
    Err(exit::fail(
        Kind::InvalidInput,
        format!(
            "models deploy: no profile knows {name:?}, so the planner would never place it. \
             Deployable models (see `edgeplane models catalog`): {}. Give --allow-unknown to \
             deploy it anyway (e.g. for a node that will measure it).",
            names.join(", ")
        ),
    ))
}

/// `models catalog`.
pub(crate) async fn print(conn: &Conn, format: Format) -> anyhow::Result<()> {
    let c = of_cluster(conn).await?;
    if format == Format::Json {
        let v: Vec<_> = c
            .iter()
            .map(|(m, e)| {
                json!({"model": m, "gpus": e.gpus, "scenarios": e.scenarios,
                       "measured_on": e.measured_on})
            })
            .collect();
        print_json(&json!(v));
        return Ok(());
    }
    let mut t = output::table(["model", "gpu profiles", "xrbench scenarios", "measured on"]);
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    for (m, e) in &c {
        t.add_row(vec![
            m.clone(),
            list(&e.gpus),
            list(&e.scenarios),
            list(&e.measured_on),
        ]);
    }
    println!("{t}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_has_the_seed_cnns_and_the_xr_models() {
        let c = shipped();
        // configs/gpu/profiles.toml: the seed's three CNNs have curves on the Jetson AGX Xavier
        for m in ["resnet18", "resnet50", "vgg16"] {
            assert!(
                c[m].gpus.iter().any(|g| g == "Jetson-AGX-Xavier"),
                "{m}: {:?}",
                c[m]
            );
        }
        // configs/xrbench/scenarios.toml: VR_gaming runs ES_RITNet
        assert!(c["ES_RITNet"].scenarios.iter().any(|s| s == "VR_gaming"));
        assert!(!knows(&c, "resnet-9000"));
        assert!(knows(&c, "resnet18@v2") && knows(&c, "resnet18.fp16"));
        let e = check_deployable(&c, "resnet-9000").unwrap_err();
        assert_eq!(exit::kind_of(&e), Kind::InvalidInput);
        assert!(format!("{e}").contains("resnet18"), "{e}");
    }

    #[test]
    fn measured_profiles_make_a_model_deployable() {
        let mut c = shipped();
        assert!(!knows(&c, "mobilenet"));
        let node = api::NodeInfo {
            name: "edge-1".into(),
            accelerators: vec![api::Accelerator {
                id: "cpu0".into(),
                profiled_models: vec!["mobilenet".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        add_measured(&mut c, &[node]);
        assert!(knows(&c, "mobilenet"));
        assert_eq!(c["mobilenet"].measured_on, ["edge-1/cpu0"]);
    }
}
