//! `edgeplane models deploy|remove|list|catalog|get`.

use anyhow::anyhow;
use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use super::nodes::LIVE_FIGURES_UNKNOWN;
use super::ReadOpts;
use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::Format;
use crate::output::{self, print_json, write_result, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Deploy (or update) a model.
    ///
    /// Example: edgeplane models deploy resnet50 --slo-ms 50 --rate 20 --memory-mb 98
    Deploy {
        /// Model name (1-63 characters of [A-Za-z0-9._-]).
        name: String,
        /// Latency SLO in milliseconds (> 0).
        #[arg(long)]
        slo_ms: f64,
        /// Requested rate, requests/s (>= 0).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Memory footprint in MiB.
        #[arg(long, default_value_t = 0)]
        memory_mb: u64,
        /// Deploy even when no profile knows the model (see `models catalog`); the planner
        /// places it only once a node measures it.
        #[arg(long)]
        allow_unknown: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Remove a model.
    ///
    /// Example: edgeplane models remove resnet50
    Remove {
        /// Model name.
        name: String,
        #[command(flatten)]
        out: FormatArg,
    },
    /// List models with their live figures (from the leader's agent reports).
    ///
    /// Example: edgeplane models list --format json
    List(ReadOpts),
    /// The models a deployment can name, with where their profiles come from (shipped GPU
    /// curves, XRBench scenarios, what the nodes measured).
    ///
    /// Example: edgeplane models catalog -o json
    Catalog(FormatArg),
    /// Show one model (linearizable unless --stale; exit code 4 when it is not deployed).
    ///
    /// Example: edgeplane models get resnet50
    Get {
        /// Model name.
        name: String,
        #[command(flatten)]
        opts: ReadOpts,
    },
}

/// One model of `models list --format json` (without `live_figures_unknown`).
pub fn model_json(m: &api::ModelInfo) -> serde_json::Value {
    json!({"name": m.name, "slo_ms": m.slo_ms, "rate": m.rate, "memory_mb": m.memory_mb,
           "observed_rate": m.observed_rate, "deadline_met_pct": m.deadline_met_pct,
           "energy_j": m.energy_j})
}

fn models_table<'a>(models: impl IntoIterator<Item = &'a api::ModelInfo>) -> comfy_table::Table {
    let mut t = output::table([
        "name",
        "slo_ms",
        "rate",
        "memory_mb",
        "observed/s",
        "met %",
        "energy_j",
    ]);
    for m in models {
        t.add_row(vec![
            m.name.clone(),
            format!("{:.1}", m.slo_ms),
            format!("{:.1}", m.rate),
            m.memory_mb.to_string(),
            format!("{:.1}", m.observed_rate),
            format!("{:.1}", m.deadline_met_pct),
            format!("{:.2}", m.energy_j),
        ]);
    }
    t
}

pub async fn models(g: &GlobalArgs, c: ModelsCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        ModelsCommand::Deploy {
            name,
            slo_ms,
            rate,
            memory_mb,
            allow_unknown,
            out,
        } => {
            if !(slo_ms.is_finite() && slo_ms > 0.0) {
                return Err(exit::fail(
                    Kind::InvalidInput,
                    format!(
                        "slo_ms: --slo-ms must be a positive number of milliseconds, got {slo_ms}"
                    ),
                ));
            }
            if !allow_unknown {
                let known = crate::catalog::of_cluster(&conn).await?;
                crate::catalog::check_deployable(&known, &name)?;
            }
            let meta = conn.meta(1);
            let r = conn
                .call("models deploy", |mut c| {
                    let req = api::DeployModelRequest {
                        meta,
                        name: name.clone(),
                        slo_ms,
                        rate,
                        memory_mb,
                    };
                    async move { c.deploy_model(req).await }
                })
                .await?;
            write_result(
                out.format,
                "models deploy",
                r.index,
                r.epoch,
                &r.message,
                json!({"model": name}),
                &format!("deployed {name} (index {})", r.index),
            );
        }
        ModelsCommand::Remove { name, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("models remove", |mut c| {
                    let req = api::RemoveModelRequest {
                        meta,
                        name: name.clone(),
                    };
                    async move { c.remove_model(req).await }
                })
                .await?;
            write_result(
                out.format,
                "models remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"model": name}),
                &format!("removed {name} (index {})", r.index),
            );
        }
        ModelsCommand::Get { name, opts: o } => {
            let r = conn
                .call("models get", |mut c| {
                    let req = api::GetModelRequest {
                        name: name.clone(),
                        stale: o.stale,
                    };
                    async move { c.get_model(req).await }
                })
                .await?;
            let m = r
                .model
                .ok_or_else(|| anyhow!("models get: the member answered without a model"))?;
            if o.format == Format::Json {
                let mut v = model_json(&m);
                v["applied_index"] = json!(r.applied_index);
                print_json(&v);
            } else {
                println!("{}", models_table([&m]));
                println!("(applied index {})", r.applied_index);
            }
        }
        ModelsCommand::Catalog(out) => crate::catalog::print(&conn, out.format).await?,
        ModelsCommand::List(o) => {
            let r = conn
                .call("models list", |mut c| async move {
                    c.list_models(api::ReadRequest { stale: o.stale }).await
                })
                .await?;
            if o.format == Format::Json {
                let v: Vec<_> = r
                    .models
                    .iter()
                    .map(|m| {
                        let mut v = model_json(m);
                        v["live_figures_unknown"] = json!(r.live_figures_unknown);
                        v
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                println!("{}", models_table(&r.models));
                if r.live_figures_unknown {
                    println!("{LIVE_FIGURES_UNKNOWN}");
                }
            }
        }
    }
    Ok(())
}
