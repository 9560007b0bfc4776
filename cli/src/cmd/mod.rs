//! One file per command group (the `edgeplane <group> ...` commands that talk to a
//! coordinator cluster or an agent). Output goes through [`crate::output`] (`--format
//! table|json` on every command), failures carry their exit code ([`crate::exit`]).

pub mod agent;
pub mod cluster;
pub mod events;
pub mod health;
pub mod members;
pub mod models;
pub mod nodes;
pub mod placement;
mod plan_view;
pub mod snapshot;
pub mod tokens;

use clap::Args;

pub use crate::output::Format;

#[derive(Debug, Clone, Args)]
pub struct ReadOpts {
    /// Serve the read from the member asked, without ReadIndex (may be stale).
    #[arg(long)]
    pub stale: bool,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}
