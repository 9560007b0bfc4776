//! The operator `Admin` gRPC service. Any member serves any call: writes go through
//! [`Handle::propose`] (forwarded to the leader by followers), reads use ReadIndex unless
//! `stale` is set. Live figures kept in the leader's memory (agent reports) are merged in
//! through the optional [`LiveStats`] seam.

use std::sync::Arc;
use std::time::Duration;

use edgeplane_proto::admin::{self as api, admin_server::Admin};
use edgeplane_proto::raft::{self as pb, command::Kind};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::live::LiveStats;
use crate::node::Handle;
use crate::state::State;
use crate::transport::{Fault, Transport};

/// The Admin service.
pub struct AdminService {
    pub(crate) handle: Handle,
    pub(crate) transport: Arc<Transport>,
    pub(crate) live: Option<Arc<dyn LiveStats>>,
}

fn status(e: crate::node::Error) -> Status {
    e.to_status()
}

fn cmd(meta: Option<api::WriteMeta>, kind: Kind) -> pb::Command {
    let m = meta.unwrap_or_default();
    pb::Command {
        client_id: m.client_id,
        seq: m.seq,
        kind: Some(kind),
    }
}

impl AdminService {
    async fn write(&self, c: pb::Command) -> Result<Response<api::WriteResponse>, Status> {
        let r = self.handle.propose(c).await.map_err(status)?;
        Ok(Response::new(api::WriteResponse {
            index: r.index,
            epoch: r.epoch,
            message: r.message,
        }))
    }

    async fn state(&self, stale: bool) -> Result<Arc<State>, Status> {
        self.handle.read(!stale).await.map_err(status)
    }

    /// A model as the API shows it: the replicated record plus the leader's live figures
    /// (zero when unknown).
    fn model_info(&self, m: &crate::state::Model) -> api::ModelInfo {
        let live = self
            .live
            .as_ref()
            .and_then(|l| l.model(&m.name))
            .unwrap_or_default();
        api::ModelInfo {
            name: m.name.clone(),
            slo_ms: m.slo_ms,
            rate: m.rate,
            memory_mb: m.memory_mb,
            observed_rate: live.rate,
            deadline_met_pct: live.deadline_met_pct,
            energy_j: live.energy_j,
        }
    }

    /// Live figures live in the leader's memory: for a linearizable read a follower asks the
    /// leader, so every member gives the same answer. `None` when this replica should answer
    /// itself (it leads, the read is stale, the request was already forwarded once, or no
    /// leader is known).
    /// A stale read is this replica's own view (tests and operators use it to see what a
    /// member holds), so it is never forwarded; its live figures are then marked unknown.
    async fn leader_for_live_figures(
        &self,
        req: &Request<api::ReadRequest>,
    ) -> Option<(String, Duration)> {
        if req.get_ref().stale || req.metadata().get(FORWARDED).is_some() || self.live.is_none() {
            return None;
        }
        if self.handle.leadership().borrow().is_leader {
            return None;
        }
        let wait = self.handle.request_timeout();
        let addr = self.handle.wait_leader_client_addr(wait).await?;
        Some((addr, wait))
    }

    async fn leader_client(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Option<api::admin_client::AdminClient<tonic::transport::Channel>> {
        let ep = self
            .transport
            .tls
            .endpoint(addr)
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .timeout(timeout)
            .tcp_nodelay(true);
        Some(api::admin_client::AdminClient::new(
            ep.connect().await.ok()?,
        ))
    }
}

/// Metadata key marking a read a follower forwarded to the leader (never forwarded again).
const FORWARDED: &str = "x-edgeplane-forwarded";

fn forwarded(r: api::ReadRequest) -> Request<api::ReadRequest> {
    let mut req = Request::new(r);
    req.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::ClusterStatusResponse>, Status> {
        let stale = req.into_inner().stale;
        let st = self.state(stale).await?;
        if !stale {
            // Only the leader sees every member's progress; a follower asks it (after its own
            // ReadIndex above), and falls back to its local view if that fails.
            let l = *self.handle.leadership().borrow();
            if !l.is_leader && l.leader_id != 0 {
                if let Some(addr) = self.handle.leader_client_addr() {
                    if let Some(r) = ask_leader_status(&self.transport.tls, &addr).await {
                        return Ok(Response::new(r));
                    }
                }
            }
        }
        let rs = self.handle.raft_status();
        let mut members = Vec::new();
        let mut ids: Vec<u64> = rs
            .voters
            .iter()
            .chain(rs.learners.iter())
            .copied()
            .collect();
        ids.extend(st.members.keys().copied());
        ids.sort();
        ids.dedup();
        for id in ids {
            let m = st.members.get(&id);
            let role = if id == rs.leader_id {
                "leader"
            } else if rs.learners.contains(&id) {
                "learner"
            } else if rs.voters.contains(&id) {
                if id == rs.id {
                    rs.role.as_str()
                } else {
                    "follower"
                }
            } else {
                "unknown"
            };
            members.push(api::MemberStatus {
                id,
                peer_addr: m.map(|m| m.peer_addr.clone()).unwrap_or_default(),
                client_addr: m.map(|m| m.client_addr.clone()).unwrap_or_default(),
                role: role.to_string(),
                reachable: self.transport.reachable(id),
            });
        }
        Ok(Response::new(api::ClusterStatusResponse {
            leader_id: rs.leader_id,
            term: rs.term,
            commit_index: rs.commit_index,
            applied_index: rs.applied_index,
            members,
            id: rs.id,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn deploy_model(
        &self,
        req: Request<api::DeployModelRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        self.write(cmd(
            r.meta,
            Kind::DeployModel(pb::DeployModel {
                name: r.name,
                slo_ms: r.slo_ms,
                rate: r.rate,
                memory_mb: r.memory_mb,
            }),
        ))
        .await
    }

    async fn remove_model(
        &self,
        req: Request<api::RemoveModelRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        self.write(cmd(
            r.meta,
            Kind::RemoveModel(pb::RemoveModel { name: r.name }),
        ))
        .await
    }

    async fn list_models(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::ListModelsResponse>, Status> {
        let mut live_unknown = false;
        if let Some((addr, wait)) = self.leader_for_live_figures(&req).await {
            if let Some(mut c) = self.leader_client(&addr, wait).await {
                if let Ok(r) = c.list_models(forwarded(*req.get_ref())).await {
                    return Ok(r);
                }
            }
            live_unknown = true;
        } else if !self.handle.leadership().borrow().is_leader && self.live.is_some() {
            live_unknown = true;
        }
        let st = self.state(req.into_inner().stale).await?;
        let models = st.models.values().map(|m| self.model_info(m)).collect();
        Ok(Response::new(api::ListModelsResponse {
            models,
            live_figures_unknown: live_unknown,
        }))
    }

    async fn get_model(
        &self,
        req: Request<api::GetModelRequest>,
    ) -> Result<Response<api::GetModelResponse>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument(
                "invalid argument `name`: must not be empty",
            ));
        }
        let st = self.state(r.stale).await?;
        let m = st
            .models
            .get(&r.name)
            .ok_or_else(|| Status::not_found(format!("model {:?} is not deployed", r.name)))?;
        Ok(Response::new(api::GetModelResponse {
            model: Some(self.model_info(m)),
            applied_index: st.applied_index,
        }))
    }

    async fn state_hash(
        &self,
        _req: Request<api::ReadRequest>,
    ) -> Result<Response<api::StateHashResponse>, Status> {
        // Always this member's own state: the point is to compare replicas.
        let st = self.handle.stale_state();
        Ok(Response::new(api::StateHashResponse {
            id: self.handle.raft_status().id,
            applied_index: st.applied_index,
            hash: fnv1a64(&st.encode()),
        }))
    }

    async fn list_nodes(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::ListNodesResponse>, Status> {
        let mut live_unknown = false;
        if let Some((addr, wait)) = self.leader_for_live_figures(&req).await {
            if let Some(mut c) = self.leader_client(&addr, wait).await {
                if let Ok(r) = c.list_nodes(forwarded(*req.get_ref())).await {
                    return Ok(r);
                }
            }
            live_unknown = true;
        } else if !self.handle.leadership().borrow().is_leader && self.live.is_some() {
            live_unknown = true;
        }
        let st = self.state(req.into_inner().stale).await?;
        let nodes = st
            .nodes
            .values()
            .map(|n| {
                let live = self
                    .live
                    .as_ref()
                    .and_then(|l| l.node(&n.name))
                    .unwrap_or_default();
                api::NodeInfo {
                    name: n.name.clone(),
                    status: n.status.as_str().to_string(),
                    accelerators: n
                        .accelerators
                        .iter()
                        .map(|a| api::Accelerator {
                            id: a.id.clone(),
                            kind: a.kind.clone(),
                            name: a.name.clone(),
                            memory_mb: a.memory_mb,
                            mig_capable: a.mig_capable,
                            sm_count: a.sm_count,
                            simulated: a.simulated,
                            profile: crate::profiles::gpu_data()
                                .and_then(|d| crate::profiles::profile_label(d, a))
                                .unwrap_or_default(),
                            profiled_models: a.profile.iter().map(|r| r.model.clone()).collect(),
                        })
                        .collect(),
                    assignment_epoch: n.assignment_epoch,
                    models: n.models(),
                    last_report: Some(api::LastReport {
                        deadlines_met: live.deadlines_met,
                        deadlines_missed: live.deadlines_missed,
                        energy_j: live.energy_j,
                    }),
                    agent_addr: n.agent_addr.clone(),
                }
            })
            .collect();
        Ok(Response::new(api::ListNodesResponse {
            nodes,
            live_figures_unknown: live_unknown,
        }))
    }

    async fn add_member(
        &self,
        req: Request<api::AddMemberRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        self.write(cmd(
            r.meta,
            Kind::AddMember(pb::AddMember {
                member: Some(pb::Member {
                    id: r.id,
                    peer_addr: r.peer_addr,
                    client_addr: r.client_addr,
                    learner: r.learner,
                }),
            }),
        ))
        .await
    }

    async fn remove_member(
        &self,
        req: Request<api::RemoveMemberRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        let st = self.handle.stale_state();
        let rs = self.handle.raft_status();
        if !st.members.contains_key(&r.id)
            && !rs.voters.contains(&r.id)
            && !rs.learners.contains(&r.id)
        {
            return Err(Status::invalid_argument(format!(
                "invalid argument `id`: unknown member {}",
                r.id
            )));
        }
        // raft-rs 0.7 leaves a removed leader in charge: hand leadership to another voter
        // first, then remove the (former) leader through the new one.
        let leader = self.handle.leadership().borrow().leader_id;
        if leader == r.id {
            let to = rs
                .voters
                .iter()
                .copied()
                .find(|v| *v != r.id && self.transport.reachable(*v))
                .or_else(|| rs.voters.iter().copied().find(|v| *v != r.id))
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "member {} is the only voter; add another member before removing it",
                        r.id
                    ))
                })?;
            tracing::info!(
                leader = r.id,
                to,
                "removing the leader: transferring leadership first"
            );
            self.transfer_leader(Request::new(api::TransferLeaderRequest { to }))
                .await
                .map_err(|s| {
                    Status::unavailable(format!(
                        "not applied: could not move leadership off member {} before removing \
                         it ({}); retry",
                        r.id,
                        s.message()
                    ))
                })?;
        }
        self.write(cmd(
            r.meta,
            Kind::RemoveMember(pb::RemoveMember { id: r.id }),
        ))
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<api::TransferLeaderRequest>,
    ) -> Result<Response<api::TransferLeaderResponse>, Status> {
        let to = req.into_inner().to;
        let rs = self.handle.raft_status();
        if !rs.voters.contains(&to) {
            return Err(Status::invalid_argument(format!(
                "invalid argument `to`: {to} is not a voting member"
            )));
        }
        match self.handle.transfer_leader(to).await {
            Ok(()) => {}
            Err(crate::node::Error::NotLeader { .. }) => {
                // Forward to the leader's Admin API.
                let addr = self
                    .handle
                    .wait_leader_client_addr(self.handle.request_timeout())
                    .await
                    .ok_or_else(|| Status::unavailable("no leader known"))?;
                let ep = self
                    .transport
                    .tls
                    .endpoint(&addr)
                    .map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?;
                let mut c = api::admin_client::AdminClient::new(
                    ep.connect()
                        .await
                        .map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?,
                );
                c.transfer_leader(api::TransferLeaderRequest { to }).await?;
            }
            Err(e) => return Err(status(e)),
        }
        // Wait (bounded) until the new leader is known here.
        let mut w = self.handle.leadership();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if w.borrow_and_update().leader_id == to {
                    break;
                }
                if w.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        let leader_id = self.handle.leadership().borrow().leader_id;
        if leader_id != to {
            return Err(Status::deadline_exceeded(format!(
                "leadership did not move to {to} (leader is {leader_id})"
            )));
        }
        Ok(Response::new(api::TransferLeaderResponse { leader_id }))
    }

    async fn save_snapshot(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::SnapshotResponse>, Status> {
        let st = self.state(req.into_inner().stale).await?;
        let rs = self.handle.raft_status();
        Ok(Response::new(api::SnapshotResponse {
            index: st.applied_index,
            term: rs.term,
            data: st.encode(),
        }))
    }

    async fn set_placement(
        &self,
        req: Request<api::SetPlacementRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        if let Some(n) = self.handle.stale_state().nodes.get(&r.node) {
            if n.status == crate::state::NodeStatus::Draining {
                return Err(Status::failed_precondition(format!(
                    "node {:?} is draining: undo with `edgeplane nodes drain {} --undo` first",
                    r.node, r.node
                )));
            }
        }
        self.write(cmd(
            r.meta,
            Kind::PinPlacement(pb::PinPlacement {
                node: r.node,
                model: r.model,
                accelerator: r.accelerator,
            }),
        ))
        .await
    }

    async fn show_placement(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::ShowPlacementResponse>, Status> {
        let forward_to = self.leader_for_live_figures(&req).await;
        if let Some((addr, timeout)) = forward_to {
            if let Some(mut c) = self.leader_client(&addr, timeout).await {
                if let Ok(r) = c.show_placement(forwarded(*req.get_ref())).await {
                    return Ok(r);
                }
            }
        }
        let st = self.state(req.into_inner().stale).await?;
        let conv = |parts: &[crate::state::Partition]| -> Vec<api::Partition> {
            parts
                .iter()
                .map(|p| api::Partition {
                    accelerator_id: p.accelerator_id.clone(),
                    share_pct: p.share_pct,
                    models: p.models.clone(),
                })
                .collect()
        };
        let mut gpus = Vec::new();
        for n in st.nodes.values() {
            let live = self
                .live
                .as_ref()
                .map(|l| l.partitions(&n.name))
                .unwrap_or_default();
            for a in n.accelerators.iter().filter(|a| a.kind == "gpu") {
                let planned: u32 = n
                    .partitions
                    .iter()
                    .filter(|p| p.accelerator_id == a.id)
                    .map(|p| p.share_pct)
                    .sum();
                let util: f64 = live
                    .iter()
                    .filter(|p| p.accelerator_id == a.id)
                    .map(|p| p.utilisation * p.share_pct as f64)
                    .sum();
                gpus.push(api::GpuLoad {
                    node: n.name.clone(),
                    accelerator_id: a.id.clone(),
                    name: a.name.clone(),
                    planned_share_pct: planned,
                    measured_util_pct: util,
                });
            }
        }
        let planned = self
            .live
            .as_ref()
            .map(|l| l.planned_rates())
            .unwrap_or_default();
        let models = st
            .models
            .values()
            .map(|m| {
                let live = self
                    .live
                    .as_ref()
                    .and_then(|l| l.model(&m.name))
                    .unwrap_or_default();
                api::ModelLoad {
                    model: m.name.clone(),
                    requested_rps: m.rate,
                    observed_rps: live.rate,
                    planned_rps: st
                        .plan_basis
                        .get(&m.name)
                        .copied()
                        .or_else(|| planned.get(&m.name).copied())
                        .unwrap_or(0.0),
                    pinned: st.pins.iter().any(|p| p.model == m.name),
                }
            })
            .collect();
        Ok(Response::new(api::ShowPlacementResponse {
            nodes: st
                .nodes
                .values()
                .map(|n| api::NodePlacement {
                    node: n.name.clone(),
                    epoch: n.assignment_epoch,
                    partitions: conv(&n.partitions),
                    status: n.status.as_str().into(),
                    target: conv(&n.target),
                })
                .collect(),
            pins: st
                .pins
                .iter()
                .map(|p| api::Pin {
                    node: p.node.clone(),
                    model: p.model.clone(),
                    accelerator: p.accelerator.clone(),
                })
                .collect(),
            events: st
                .events
                .iter()
                .map(|e| api::PlanEvent {
                    index: e.index,
                    node: e.node.clone(),
                    epoch: e.epoch,
                    reason: e.reason.clone(),
                    partitions: e.partitions.clone(),
                })
                .collect(),
            gpus,
            models,
            shed: st.plan_shed.iter().cloned().collect(),
        }))
    }

    async fn plan_placement(
        &self,
        req: Request<api::PlanPlacementRequest>,
    ) -> Result<Response<api::PlanPlacementResponse>, Status> {
        if !req.get_ref().dry_run {
            return Err(Status::invalid_argument(
                "dry_run: only dry runs are served; the leader's planner loop commits plans itself",
            ));
        }
        if !self.handle.leadership().borrow().is_leader && req.metadata().get(FORWARDED).is_none() {
            let wait = self.handle.request_timeout();
            let addr = self
                .handle
                .wait_leader_client_addr(wait)
                .await
                .ok_or_else(|| {
                    Status::unavailable("no leader known: the planner runs on the leader")
                })?;
            let mut c = self
                .leader_client(&addr, wait)
                .await
                .ok_or_else(|| Status::unavailable(format!("cannot reach the leader at {addr}")))?;
            let mut fwd = Request::new(req.into_inner());
            fwd.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            return c.plan_placement(fwd).await;
        }
        let st = self.state(false).await?;
        let live = self
            .live
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this coordinator runs no planner"))?;
        let p = live
            .plan_preview(&st)
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(crate::plan_api::response(&p)))
    }

    async fn forward(
        &self,
        req: Request<api::ForwardRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let c = pb::Command::decode(req.into_inner().command.as_slice())
            .map_err(|e| Status::invalid_argument(format!("invalid argument `command`: {e}")))?;
        crate::state::validate(&c).map_err(|e| status(e.into()))?;
        let deadline = tokio::time::Instant::now() + self.handle.request_timeout();
        let r = self
            .handle
            .propose_local(c, deadline)
            .await
            .map_err(status)?;
        Ok(Response::new(api::WriteResponse {
            index: r.index,
            epoch: r.epoch,
            message: r.message,
        }))
    }

    async fn unpin_placement(
        &self,
        req: Request<api::UnpinPlacementRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        let st = self.state(false).await?;
        let node = st
            .nodes
            .get(&r.node)
            .ok_or_else(|| Status::not_found(format!("node {:?} is not registered", r.node)))?;
        let pinned = st
            .pins
            .iter()
            .any(|p| p.node == r.node && p.model == r.model);
        let served = node.partitions.iter().any(|p| p.models.contains(&r.model));
        if !pinned && !served {
            return Err(Status::not_found(format!(
                "model {:?} is neither pinned to nor placed on node {:?}",
                r.model, r.node
            )));
        }
        self.write(cmd(
            r.meta,
            Kind::UnpinPlacement(pb::UnpinPlacement {
                node: r.node,
                model: r.model,
            }),
        ))
        .await
    }

    async fn drain_node(
        &self,
        req: Request<api::DrainNodeRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        let st = self.state(false).await?;
        if !st.nodes.contains_key(&r.name) {
            return Err(Status::not_found(format!(
                "node {:?} is not registered",
                r.name
            )));
        }
        let status = if r.undo {
            pb::NodeStatus::Ready
        } else {
            pb::NodeStatus::Draining
        };
        // Status first (nothing new lands on the node), then its pins, then its plan. Each
        // step is idempotent: a drain interrupted half way is finished by running it again.
        // Sub-steps after the first use no client id (their dedup is the idempotence).
        let mut last = self
            .write(cmd(
                r.meta,
                Kind::SetNodeStatus(pb::SetNodeStatus {
                    name: r.name.clone(),
                    status: status as i32,
                }),
            ))
            .await?
            .into_inner();
        if r.undo {
            last.message = format!("node {:?} is ready again", r.name);
            return Ok(Response::new(last));
        }
        let pins: Vec<String> = st
            .pins
            .iter()
            .filter(|p| p.node == r.name)
            .map(|p| p.model.clone())
            .collect();
        for model in &pins {
            self.write(cmd(
                None,
                Kind::UnpinPlacement(pb::UnpinPlacement {
                    node: r.name.clone(),
                    model: model.clone(),
                }),
            ))
            .await?;
        }
        last = self
            .write(cmd(
                None,
                Kind::CommitPlacement(pb::CommitPlacement {
                    node: r.name.clone(),
                    partitions: Vec::new(),
                    expected_epoch: 0,
                    reason: format!("node {:?} drained by an operator", r.name),
                    target: Vec::new(),
                }),
            ))
            .await?
            .into_inner();
        last.message = format!(
            "node {:?} is draining: {} pin(s) removed, plan emptied",
            r.name,
            pins.len()
        );
        Ok(Response::new(last))
    }

    async fn remove_node(
        &self,
        req: Request<api::RemoveNodeRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let r = req.into_inner();
        self.write(cmd(
            r.meta,
            Kind::RemoveNode(pb::RemoveNode { name: r.name }),
        ))
        .await
    }

    async fn create_token(
        &self,
        req: Request<api::CreateTokenRequest>,
    ) -> Result<Response<api::CreateTokenResponse>, Status> {
        let who = edgeplane_tls::Caller::of(&req)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let r = req.into_inner();
        let ttl_ms = if r.ttl_ms == 0 {
            crate::state::tokens::DEFAULT_TTL_MS
        } else {
            r.ttl_ms
        };
        // A fresh token per attempt; an id already taken (1 in 2 billion) is retried with
        // another. No client id from the caller: a retried call must never answer the
        // secret of a token that was not the one stored.
        let mut attempts = 0;
        let (token, applied) = loop {
            let token = edgeplane_tls::JoinToken::generate();
            let c = pb::Command {
                client_id: 0,
                seq: 0,
                kind: Some(Kind::CreateToken(pb::CreateToken {
                    id: token.id.clone(),
                    secret_sha256: token.secret_hash().to_vec(),
                    ttl_ms,
                    created_unix_ms: 0,
                    expires_unix_ms: 0,
                    node: r.node.clone(),
                    description: r.description.clone(),
                    created_by: who.clone(),
                })),
            };
            match self.handle.propose(c).await {
                Ok(a) => break (token, a),
                Err(crate::node::Error::Command(
                    crate::state::CommandError::FailedPrecondition(m),
                )) if m.contains("exists already") && attempts < 3 => attempts += 1,
                Err(e) => return Err(status(e)),
            }
        };
        let st = self.state(false).await?;
        let expires = st
            .tokens
            .get(&token.id)
            .map(|t| t.expires_unix_ms)
            .unwrap_or_default();
        tracing::info!(target: "audit", who = ?who, id = %token.id, node = %r.node, expires_unix_ms = expires, "join token created");
        Ok(Response::new(api::CreateTokenResponse {
            token: token.reveal().expose().to_string(),
            id: token.id,
            expires_unix_ms: expires,
            index: applied.index,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<api::ReadRequest>,
    ) -> Result<Response<api::ListTokensResponse>, Status> {
        let st = self.state(req.into_inner().stale).await?;
        let tokens = st
            .tokens
            .values()
            .map(|t| api::TokenInfo {
                id: t.id.clone(),
                node: t.node.clone(),
                created_unix_ms: t.created_unix_ms,
                expires_unix_ms: t.expires_unix_ms,
                used_by: t.used_by.clone(),
                used_unix_ms: t.used_unix_ms,
                revoked: t.revoked,
                created_by: t.created_by.clone(),
                description: t.description.clone(),
            })
            .collect();
        Ok(Response::new(api::ListTokensResponse {
            tokens,
            now_unix_ms: crate::state::tokens::now_unix_ms(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<api::RevokeTokenRequest>,
    ) -> Result<Response<api::WriteResponse>, Status> {
        let who = edgeplane_tls::Caller::of(&req)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let r = req.into_inner();
        crate::state::tokens::check_id("id", &r.id).map_err(|e| status(e.into()))?;
        let id = r.id.clone();
        let mut out = self
            .write(cmd(
                r.meta,
                Kind::RevokeToken(pb::RevokeToken {
                    id: r.id,
                    now_unix_ms: 0,
                }),
            ))
            .await?;
        tracing::info!(target: "audit", who = ?who, %id, "join token revoked");
        out.get_mut().message = format!("token {id} revoked");
        Ok(out)
    }

    async fn inject_fault(
        &self,
        req: Request<api::InjectFaultRequest>,
    ) -> Result<Response<api::InjectFaultResponse>, Status> {
        if !self.transport.fault_injection_enabled {
            return Err(Status::permission_denied(
                "fault injection is disabled (start with --enable-fault-injection)",
            ));
        }
        let r = req.into_inner();
        if r.heal_all {
            self.transport.heal_all();
            return Ok(Response::new(api::InjectFaultResponse {}));
        }
        if r.peer == 0 {
            return Err(Status::invalid_argument(
                "invalid argument `peer`: must be > 0",
            ));
        }
        let fault = match api::inject_fault_request::Mode::try_from(r.mode) {
            Ok(api::inject_fault_request::Mode::Heal) => None,
            Ok(api::inject_fault_request::Mode::Drop) => Some(Fault::Drop),
            Ok(api::inject_fault_request::Mode::Delay) => {
                Some(Fault::Delay(Duration::from_millis(r.delay_ms)))
            }
            Ok(api::inject_fault_request::Mode::DropOutbound) => Some(Fault::DropOutbound),
            Err(_) => return Err(Status::invalid_argument("invalid argument `mode`")),
        };
        self.transport.set_fault(r.peer, fault);
        Ok(Response::new(api::InjectFaultResponse {}))
    }
}

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` may change between releases, and
/// replicas built from different releases must agree).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

async fn ask_leader_status(
    tls: &edgeplane_tls::ClientTls,
    addr: &str,
) -> Option<api::ClusterStatusResponse> {
    let ep = tls
        .endpoint(addr)
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(2));
    let ch = ep.connect().await.ok()?;
    let mut c = api::admin_client::AdminClient::new(ch);
    c.cluster_status(api::ReadRequest { stale: true })
        .await
        .ok()
        .map(|r| r.into_inner())
}

#[cfg(test)]
mod tests {
    use super::fnv1a64;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        // From the FNV reference test suite (offset basis for "", then "a", "foobar").
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
