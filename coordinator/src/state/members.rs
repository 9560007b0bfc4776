//! Members of the coordinator cluster (the replicated member list; raft's own
//! configuration changes travel beside it as conf-change entries).

use edgeplane_proto::raft as pb;
use serde::{Deserialize, Serialize};

use super::{check_addr, CommandError, State};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub learner: bool,
}

impl From<&pb::Member> for Member {
    fn from(m: &pb::Member) -> Self {
        Member {
            id: m.id,
            peer_addr: m.peer_addr.clone(),
            client_addr: m.client_addr.clone(),
            learner: m.learner,
        }
    }
}

fn check_member(m: &pb::Member) -> Result<(), CommandError> {
    if m.id == 0 {
        return Err(CommandError::invalid("id", "must be > 0"));
    }
    check_addr("peer_addr", &m.peer_addr)?;
    check_addr("client_addr", &m.client_addr)
}

pub(super) fn validate_member(m: Option<&pb::Member>) -> Result<(), CommandError> {
    let m = m.ok_or_else(|| CommandError::invalid("member", "missing"))?;
    check_member(m)
}

impl State {
    pub(super) fn apply_add_member(&mut self, a: &pb::AddMember) -> Result<u64, CommandError> {
        let m = a.member.as_ref().expect("validated");
        if let Some(old) = self.members.get(&m.id) {
            if old.learner == m.learner {
                return Err(CommandError::FailedPrecondition(format!(
                    "member {} already exists",
                    m.id
                )));
            }
        }
        self.members.insert(m.id, m.into());
        self.removed_members.remove(&m.id);
        Ok(0)
    }

    pub(super) fn apply_remove_member(
        &mut self,
        r: &pb::RemoveMember,
    ) -> Result<u64, CommandError> {
        if self.members.remove(&r.id).is_none() {
            return Err(CommandError::invalid(
                "id",
                format!("unknown member {}", r.id),
            ));
        }
        self.removed_members.insert(r.id);
        Ok(0)
    }

    pub(super) fn apply_update_member(
        &mut self,
        u: &pb::UpdateMember,
    ) -> Result<u64, CommandError> {
        let m = u.member.as_ref().expect("validated");
        let Some(old) = self.members.get_mut(&m.id) else {
            return Err(CommandError::invalid(
                "id",
                format!("unknown member {}", m.id),
            ));
        };
        old.peer_addr = m.peer_addr.clone();
        old.client_addr = m.client_addr.clone();
        Ok(0)
    }
}
