//! `edgeplane agent status --agent ADDR`: one agent's own view over its `Status` RPC (what
//! it serves, its epoch, whether it has a leader session), independent of the coordinator.

use std::time::Duration;

use clap::{Args, Subcommand};
use edgeplane_proto::agent::{inference_client::InferenceClient, StatusRequest};
use serde_json::json;

use crate::exit::{self, Kind};
use crate::output::{self, print_json, Format};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Ask one agent what it serves now (its Status RPC).
    ///
    /// Example: edgeplane agent status --agent 10.0.0.21:7301 --format json
    Status(AgentStatusArgs),
}

#[derive(Debug, Args)]
pub struct AgentStatusArgs {
    /// The agent's Inference address (host:port, its --advertise-addr).
    #[arg(long, env = "EDGEPLANE_AGENT")]
    pub agent: String,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout_s: f64,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn agent(tls: &crate::tls::ClientTlsSource, c: AgentCommand) -> anyhow::Result<()> {
    let AgentCommand::Status(a) = c;
    if !(a.timeout_s.is_finite() && a.timeout_s > 0.0) {
        return Err(exit::fail(
            Kind::InvalidInput,
            format!("invalid --timeout-s {}: must be > 0", a.timeout_s),
        ));
    }
    let timeout = Duration::from_secs_f64(a.timeout_s);
    let ep = tls
        .agent_endpoint(&a.agent)
        .map_err(|e| exit::fail(Kind::InvalidInput, format!("--agent {:?}: {e:#}", a.agent)))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let ch = ep.connect().await.map_err(|e| {
        exit::fail(
            Kind::Unavailable,
            format!("agent status: cannot connect to {}: {e}", a.agent),
        )
    })?;
    let r = InferenceClient::new(ch)
        .status(StatusRequest {})
        .await
        .map_err(|s| exit::status("agent status", &s))?
        .into_inner();
    if a.format == Format::Json {
        print_json(&json!({
            "name": r.name, "assignment_epoch": r.assignment_epoch, "models": r.models, "ready_models": r.ready_models,
            "connected": r.connected, "leader_addr": r.leader_addr,
            "accelerators": r.accelerators.iter().map(|x| json!({"id": x.id, "kind": x.kind,
                "name": x.name, "memory_mb": x.memory_mb, "simulated": x.simulated})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "agent {}  epoch {}  {}",
            r.name,
            r.assignment_epoch,
            if r.connected {
                format!("connected to leader {}", r.leader_addr)
            } else {
                "NOT connected (serving its last assignment)".to_string()
            }
        );
        println!(
            "serves: {}",
            if r.models.is_empty() {
                "-".to_string()
            } else {
                r.models.join(", ")
            }
        );
        let waiting: Vec<&String> = r
            .models
            .iter()
            .filter(|m| !r.ready_models.contains(m))
            .collect();
        if !waiting.is_empty() {
            println!(
                "not ready yet (worker starting): {}",
                waiting
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut t = output::table(["accelerator", "kind", "name", "memory_mb", "simulated"]);
        for x in &r.accelerators {
            t.add_row(vec![
                x.id.clone(),
                x.kind.clone(),
                x.name.clone(),
                x.memory_mb.to_string(),
                x.simulated.to_string(),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
