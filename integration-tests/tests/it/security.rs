//! Security with real processes: mutual TLS on every port (coordinator client and peer
//! ports, the agent's Infer port), roles, forged raft senders, node names bound to node
//! certificates, secure-by-default start, certificate reload.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgeplane_proto::admin::{self as adm, admin_client::AdminClient};
use edgeplane_proto::agent::inference_client::InferenceClient;
use edgeplane_proto::agent::{self as agent_api, agent_client::AgentClient};
use edgeplane_proto::raft::{self as rpb, raft_transport_client::RaftTransportClient};
use edgeplane_tls::{Ca, ClientTls, Expect, Identity, LeafSpec, Principal, Role, Validity};
use prost::Message as _;
use protobuf::Message as _;
use tonic::transport::Channel;

use crate::cluster::{bin, Cluster, Opts, SERIAL};
use crate::support::{self, eventually, free_port, tls};

/// A channel to the coordinator at `addr` (its certificate must be a member's).
async fn channel(t: &ClientTls, addr: &str) -> Result<Channel, String> {
    dial(t, addr, Expect::AnyMember).await
}

/// A channel to the agent at `addr` (its certificate must be a node's).
async fn agent_channel(t: &ClientTls, addr: &str) -> Result<Channel, String> {
    dial(t, addr, Expect::AnyNode).await
}

async fn dial(t: &ClientTls, addr: &str, expect: Expect) -> Result<Channel, String> {
    t.endpoint_to(addr, expect)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(1000))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Client TLS without a client certificate (only the CA to verify the server).
fn no_client_cert() -> tonic::transport::ClientTlsConfig {
    let ca = std::fs::read(tls().ca()).unwrap();
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
}

/// The three ways in that must all fail, plus the control that must work, against one
/// port: `call` makes one RPC on a channel.
async fn refuses_strangers<F, Fut>(
    port: &str,
    addr: &str,
    expect: Expect,
    good: &ClientTls,
    strangers: &[(&str, ClientTls)],
    call: F,
) where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    // Control: the right certificate gets an answer (so the refusals below are refusals).
    let ch = dial(good, addr, expect.clone())
        .await
        .unwrap_or_else(|e| panic!("{port}: control connect: {e}"));
    call(ch)
        .await
        .unwrap_or_else(|e| panic!("{port}: control call refused: {e:?}"));
    // Plaintext.
    let plain = ClientTls::insecure();
    if let Ok(ch) = channel(&plain, addr).await {
        assert!(
            call(ch).await.is_err(),
            "{port}: plaintext client was answered"
        );
    }
    // TLS without a client certificate.
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(no_client_cert())
        .unwrap()
        .connect_timeout(Duration::from_millis(1000))
        .timeout(Duration::from_secs(5));
    if let Ok(ch) = ep.connect().await {
        assert!(
            call(ch).await.is_err(),
            "{port}: client without a certificate was answered"
        );
    }
    for (what, t) in strangers {
        if let Ok(ch) = dial(t, addr, expect.clone()).await {
            assert!(call(ch).await.is_err(), "{port}: {what} was answered");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_foreign_ca_and_expired_clients_are_refused_on_every_port() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(1, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    // An agent serving Infer over mutual TLS.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let t = tls();
    let mut agent = Command::new(support::bin("edgeplane-agent"))
        .args(["--name", "sec-edge", "--listen", &listen])
        .arg("--data-dir")
        .arg(dir.path().join("a"))
        .args(t.args(&t.node("sec-edge")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // A certificate of another CA (same identity as our admin) and an expired one of ours.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Ca::init(other_dir.path(), "other").unwrap();
    let admin_id = Identity {
        principal: Principal::User("admin".into()),
        role: Some(Role::Admin),
    };
    let op = other
        .issue_to(
            other_dir.path(),
            "user-admin",
            &LeafSpec::new(admin_id.clone()),
        )
        .unwrap();
    // The foreign client trusts its own CA only, so it also refuses our servers; give it
    // ours to verify the server, so the refusal measured is the server's.
    std::fs::copy(tls().ca(), other_dir.path().join("trust.pem")).unwrap();
    let foreign = ClientTls(Some(
        edgeplane_tls::TlsMaterial::load(edgeplane_tls::TlsPaths {
            ca: other_dir.path().join("trust.pem"),
            cert: op.cert,
            key: op.key,
        })
        .unwrap(),
    ));
    let expired_paths = {
        let mut spec = LeafSpec::new(Identity {
            principal: Principal::User("expired".into()),
            role: Some(Role::Admin),
        });
        spec.validity = Validity::expired();
        let ca = Ca::load(&tls().dir).unwrap();
        ca.issue_to(other_dir.path(), "user-expired", &spec)
            .unwrap()
    };
    let expired = tls().client(&expired_paths);
    let strangers = [
        ("a certificate of another CA", foreign),
        ("an expired certificate", expired),
    ];

    let admin = tls().admin();
    let r1 = &c.replicas[&1];
    refuses_strangers(
        "client",
        &r1.client_addr,
        Expect::AnyMember,
        &admin,
        &strangers,
        |ch| async move {
            AdminClient::new(ch)
                .cluster_status(adm::ReadRequest { stale: true })
                .await
                .map(|_| ())
        },
    )
    .await;
    let member2 = tls().client(&tls().member(2));
    refuses_strangers(
        "peer",
        &r1.peer_addr,
        Expect::Member(1),
        &member2,
        &strangers,
        |ch| async move {
            // An empty batch from member 2: accepted (it carries nothing) when authenticated.
            RaftTransportClient::new(ch)
                .send(rpb::RaftBatch {
                    from: 2,
                    messages: vec![],
                    from_peer_addr: String::new(),
                    to: 1,
                })
                .await
                .map(|_| ())
        },
    )
    .await;
    let infer_ready = eventually(Duration::from_secs(20), "agent serving", || {
        let admin = admin.clone();
        let listen = listen.clone();
        async move { agent_channel(&admin, &listen).await.ok() }
    })
    .await;
    drop(infer_ready);
    let infer = Expect::Node("sec-edge".into());
    refuses_strangers(
        "infer",
        &listen,
        infer,
        &admin,
        &strangers,
        |ch| async move {
            InferenceClient::new(ch)
                .status(agent_api::StatusRequest {})
                .await
                .map(|_| ())
        },
    )
    .await;
    // The peer port takes members only: an admin user is authenticated but refused.
    let ch = channel(&admin, &r1.peer_addr).await.unwrap();
    let e = RaftTransportClient::new(ch)
        .send(rpb::RaftBatch::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("member certificate"), "{e:?}");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_cannot_write_and_operator_cannot_change_membership() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(1, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let addr = c.replicas[&1].client_addr.clone();
    let as_role = |r: Role| tls().client(&tls().user(r));
    let deploy = |name: &str| adm::DeployModelRequest {
        meta: None,
        name: name.into(),
        slo_ms: 10.0,
        rate: 1.0,
        memory_mb: 1,
    };

    let mut viewer = AdminClient::new(channel(&as_role(Role::Viewer), &addr).await.unwrap());
    viewer
        .list_models(adm::ReadRequest { stale: false })
        .await
        .expect("a viewer reads");
    let e = viewer.deploy_model(deploy("by-viewer")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs the operator role"), "{e:?}");
    let e = viewer
        .save_snapshot(adm::ReadRequest { stale: true })
        .await
        .unwrap_err();
    assert!(e.message().contains("needs the admin role"), "{e:?}");

    let mut operator = AdminClient::new(channel(&as_role(Role::Operator), &addr).await.unwrap());
    operator
        .deploy_model(deploy("by-operator"))
        .await
        .expect("an operator deploys");
    let e = operator
        .add_member(adm::AddMemberRequest {
            meta: None,
            id: 9,
            peer_addr: "127.0.0.1:1".into(),
            client_addr: "127.0.0.1:2".into(),
            learner: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs the admin role"), "{e:?}");
    let e = operator
        .remove_member(adm::RemoveMemberRequest { meta: None, id: 1 })
        .await
        .unwrap_err();
    assert!(e.message().contains("needs the admin role"), "{e:?}");
    let e = operator
        .transfer_leader(adm::TransferLeaderRequest { to: 1 })
        .await
        .unwrap_err();
    assert!(e.message().contains("needs the admin role"), "{e:?}");
    // Fault injection needs the admin role as well as the start flag.
    let e = operator
        .inject_fault(adm::InjectFaultRequest {
            heal_all: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("needs the admin role"), "{e:?}");
    // Forward is for members only, whatever the role.
    let mut admin = AdminClient::new(channel(&tls().admin(), &addr).await.unwrap());
    let e = admin
        .forward(adm::ForwardRequest { command: vec![] })
        .await
        .unwrap_err();
    assert!(e.message().contains("member certificate"), "{e:?}");

    // Nothing the refused calls asked for happened; the allowed write did.
    let models = viewer
        .list_models(adm::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .models;
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["by-operator"]);
    let st = viewer
        .cluster_status(adm::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.members.len(), 1, "{st:?}");
    // Every write leaves an audit line naming who did it.
    let log = c.log_of(1);
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("user/operator")
            && l.contains("DeployModel")),
        "no audit line for the operator's deploy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_raft_sender_is_rejected_and_nothing_is_applied() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    let leader = c.leader(Duration::from_secs(10)).await;
    let target = 1u64;
    let before = c.status(target).await.expect("status");
    // A forged append from "replica 3" at a far higher term, carrying a command.
    let cmd = rpb::Command {
        client_id: 0,
        seq: 0,
        kind: Some(rpb::command::Kind::DeployModel(rpb::DeployModel {
            name: "forged".into(),
            slo_ms: 10.0,
            rate: 1.0,
            memory_mb: 1,
        })),
    };
    let forged_term = before.term + 100;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = 3;
    m.to = target;
    m.term = forged_term;
    m.commit = before.commit_index + 1;
    m.index = before.commit_index;
    m.log_term = before.term;
    let e = raft::eraftpb::Entry {
        term: forged_term,
        index: before.commit_index + 1,
        data: cmd.encode_to_vec().into(),
        ..Default::default()
    };
    m.entries = vec![e].into();
    let raw = m.write_to_bytes().unwrap();

    // Member 2's valid certificate, claiming to be 3: refused.
    let member2 = tls().client(&tls().member(2));
    let mut peer = RaftTransportClient::new(
        channel(&member2, &c.replicas[&target].peer_addr)
            .await
            .unwrap(),
    );
    let err = peer
        .send(rpb::RaftBatch {
            from: 3,
            messages: vec![raw.clone()],
            from_peer_addr: c.replicas[&3].peer_addr.clone(),
            to: target,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("claims replica 3"), "{err:?}");
    // The batch says 2 (true) but the message inside says 3: refused too.
    let err = peer
        .send(rpb::RaftBatch {
            from: 2,
            messages: vec![raw],
            from_peer_addr: String::new(),
            to: target,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("messages.from"), "{err:?}");

    // Nothing applied: no term jump, no forged model, on any replica; the cluster still
    // works and keeps its leader.
    c.deploy_via(leader, "real", 7, 1, 1.0).await.unwrap();
    for id in [1u64, 2, 3] {
        let st = c.status(id).await.expect("status");
        assert!(
            st.term < forged_term,
            "replica {id} took the forged term: {st:?}"
        );
        let models = c.models_on(id).await.unwrap_or_default();
        assert!(
            !models.contains(&"forged".to_string()),
            "replica {id}: {models:?}"
        );
    }
    assert_eq!(c.leader(Duration::from_secs(5)).await, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_agent_cannot_take_a_joined_nodes_name() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        join_token: Some("tok".into()),
        ..Default::default()
    };
    let c = Cluster::start(1, opts);
    c.leader(Duration::from_secs(10)).await;
    let addr = c.replicas[&1].client_addr.clone();
    let register = |name: &str| agent_api::RegisterRequest {
        name: name.into(),
        join_token: "tok".into(),
        agent_addr: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let a = tls().client(&tls().node("sec-a"));
    let b = tls().client(&tls().node("sec-b"));
    AgentClient::new(channel(&a, &addr).await.unwrap())
        .register(register("sec-a"))
        .await
        .expect("sec-a registers as itself");
    let e = AgentClient::new(channel(&b, &addr).await.unwrap())
        .register(register("sec-a"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("belongs to another certificate"),
        "{e:?}"
    );
    // A viewer (no node certificate) cannot register at all.
    let v = tls().client(&tls().user(Role::Viewer));
    let e = AgentClient::new(channel(&v, &addr).await.unwrap())
        .register(register("sec-v"))
        .await
        .unwrap_err();
    assert!(e.message().contains("node certificate"), "{e:?}");
    // An agent process whose certificate names another node refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let t = tls();
    let out = Command::new(support::bin("edgeplane-agent"))
        .args(["--name", "sec-a", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(t.args(&t.node("sec-b")))
        .args(["--coordinators", &addr, "--join-token", "tok"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node/sec-b") && err.contains("--tls-cert"),
        "{err}"
    );
}

#[test]
fn servers_refuse_to_start_without_tls_material_and_warn_when_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("127.0.0.1:{}", free_port());
    let out = Command::new(bin("edgeplane-coordinator"))
        .args([
            "--id",
            "1",
            "--client-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args([
            "--peer-addr",
            &peer,
            "--initial-cluster",
            &format!("1={peer}"),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for flag in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
        assert!(err.contains(flag), "coordinator: {err}");
    }
    let out = Command::new(support::bin("edgeplane-agent"))
        .args(["--name", "x", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for flag in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
        assert!(err.contains(flag), "agent: {err}");
    }
    // --insecure starts, with a warning.
    let log = dir.path().join("insecure.log");
    let mut child = Command::new(bin("edgeplane-coordinator"))
        .args([
            "--id",
            "1",
            "--client-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args([
            "--peer-addr",
            &peer,
            "--initial-cluster",
            &format!("1={peer}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .arg("--insecure")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    crate::assert_eventually!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("--insecure: no TLS"),
        Duration::from_secs(20),
        "no --insecure warning in the log"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_certificate_is_picked_up_on_sighup_without_a_restart() {
    let _g = SERIAL.lock().await;
    // A replica whose certificate files live in their own dir, so they can be rotated.
    let own = tempfile::tempdir().unwrap();
    let ca = Ca::load(&tls().dir).unwrap();
    let id = Identity {
        principal: Principal::Member(1),
        role: None,
    };
    let p = ca
        .issue_to(own.path(), "member-1", &LeafSpec::new(id.clone()))
        .unwrap();
    let peer = format!("127.0.0.1:{}", free_port());
    let client = format!("127.0.0.1:{}", free_port());
    let log = own.path().join("r.log");
    // Its own copy of the CA certificate and key too, so the CA can be rotated under it.
    let (ca_pem, ca_key) = (own.path().join("ca.pem"), own.path().join("ca.key"));
    std::fs::copy(tls().ca(), &ca_pem).unwrap();
    std::fs::copy(tls().dir.join("ca.key"), &ca_key).unwrap();
    let mut child = Command::new(bin("edgeplane-coordinator"))
        .args(["--id", "1", "--client-addr", &client])
        .args([
            "--peer-addr",
            &peer,
            "--initial-cluster",
            &format!("1={peer}"),
        ])
        .arg("--data-dir")
        .arg(own.path().join("d"))
        .arg("--tls-ca")
        .arg(&ca_pem)
        .arg("--tls-ca-key")
        .arg(&ca_key)
        .arg("--tls-cert")
        .arg(&p.cert)
        .arg("--tls-key")
        .arg(&p.key)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin = tls().admin();
    let serial_of = |pem: &[u8]| pem.to_vec();
    let first = serial_of(&std::fs::read(&p.cert).unwrap());
    let ch = eventually(Duration::from_secs(20), "replica serving", || {
        let admin = admin.clone();
        let client = client.clone();
        async move { channel(&admin, &client).await.ok() }
    })
    .await;
    let mut old = AdminClient::new(ch);
    old.cluster_status(adm::ReadRequest { stale: true })
        .await
        .unwrap();
    // Rotate: a new key and certificate in place, then SIGHUP.
    ca.issue_to(own.path(), "member-1", &LeafSpec::new(id))
        .unwrap();
    assert_ne!(first, std::fs::read(&p.cert).unwrap());
    sighup_until_logged(&child, &log, "tls material reloaded");
    // The replica is still up: the established connection and a new one both answer.
    old.cluster_status(adm::ReadRequest { stale: true })
        .await
        .unwrap();
    let mut fresh = AdminClient::new(channel(&admin, &client).await.unwrap());
    fresh
        .cluster_status(adm::ReadRequest { stale: true })
        .await
        .unwrap();
    // Rotate the CA under the member: the bundle holds the old and the new CA certificate,
    // the key is the new CA's. The signer picks it up on SIGHUP, the member keeps serving
    // clients of the old CA.
    let newca = tempfile::tempdir().unwrap();
    let rotated = Ca::init(newca.path(), "rotated").unwrap();
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(&ca_pem).unwrap(),
        rotated.cert_pem()
    );
    std::fs::write(&ca_pem, bundle).unwrap();
    std::fs::copy(newca.path().join("ca.key"), &ca_key).unwrap();
    sighup_until_logged(&child, &log, "ca key reloaded changed=true");
    let mut after = AdminClient::new(channel(&admin, &client).await.unwrap());
    after
        .cluster_status(adm::ReadRequest { stale: true })
        .await
        .unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "replica restarted or died"
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------
// Per-node join tokens and the CSR join flow.
// ---------------------------------------------------------------------------------------

/// `edgeplane tokens ...` as the admin user against `addr`: (exit ok, stdout, stderr).
fn tokens_cli(addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = support::admin_env(&mut Command::new(support::bin("edgeplane")))
        .arg("tokens")
        .args(args)
        .args(["--endpoints", addr])
        .output()
        .expect("run edgeplane tokens");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new token from `tokens create --format json`: (id, ID.SECRET).
fn create_token(addr: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--format", "json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = tokens_cli(addr, &args);
    assert!(ok, "tokens create failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("tokens create json");
    let id = v["id"].as_str().unwrap().to_string();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with(&format!("{id}.")), "{token}");
    (id, token)
}

/// `tokens list --format json` as (id → status).
fn token_statuses(addr: &str) -> std::collections::BTreeMap<String, String> {
    let (ok, out, err) = tokens_cli(addr, &["list", "--format", "json"]);
    assert!(ok, "tokens list failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("tokens list json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// An agent that joins with a token: only `--tls-ca`, no certificate.
fn joining_agent(name: &str, data_dir: &std::path::Path, listen: &str, coord: &str) -> Command {
    let mut cmd = Command::new(support::bin("edgeplane-agent"));
    cmd.args(["--name", name, "--listen", listen])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--tls-ca")
        .arg(tls().ca())
        .args(["--coordinators", coord])
        .args(["--max-backoff-ms", "300", "--report-interval-ms", "200"])
        .env("EDGEPLANE_LOG", "info");
    cmd
}

/// Send SIGHUP to `child` and wait until its log says `line`.
fn sighup_until_logged(child: &std::process::Child, log: &std::path::Path, line: &str) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    crate::assert_eventually!(
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(line),
        Duration::from_secs(10),
        "no {:?} logged",
        line
    );
}

/// A one-replica cluster whose member holds the CA key (it signs joins), and its address.
async fn signing_cluster() -> (Cluster, String) {
    let c = Cluster::start(
        1,
        Opts {
            ca_key_on: vec![1],
            ..Default::default()
        },
    );
    c.leader(Duration::from_secs(10)).await;
    let addr = c.replicas[&1].client_addr.clone();
    (c, addr)
}

/// Wait until node `name` is listed as ready (a linearizable list, as the admin user).
async fn node_ready(addr: &str, name: &str) {
    let admin = tls().admin();
    eventually(Duration::from_secs(30), &format!("{name} ready"), || {
        let ch = channel(&admin, addr);
        async move {
            let nodes = AdminClient::new(ch.await.ok()?)
                .list_nodes(adm::ReadRequest { stale: false })
                .await
                .ok()?
                .into_inner()
                .nodes;
            nodes
                .iter()
                .any(|n| n.name == name && n.status == "ready")
                .then_some(())
        }
    })
    .await;
}

/// Run an agent that must be refused: it exits non-zero (polled with a deadline); its
/// stderr.
async fn refused_join(mut cmd: Command, log: &std::path::Path) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start edgeplane-agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent was not refused within 20 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!status.success(), "a refused agent exited 0: {err}");
    err
}

/// `nodes remove` revokes the node's certificate: the agent that held it cannot register
/// again (not even after a restart from its data dir), and a fresh join with a new token
/// brings the name back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_nodes_certificate_is_revoked_and_a_new_join_brings_it_back() {
    let _g = SERIAL.lock().await;
    let (_cluster, addr) = signing_cluster().await;
    let admin = tls().admin();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let start = |data: &std::path::Path, token: Option<&str>, log: &std::path::Path| {
        let mut cmd = joining_agent("rev-a", data, &listen, &addr);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start edgeplane-agent")
    };
    // The join is complete once the agent serves Infer over TLS with its new certificate
    // and its session is up: only then are its key and certificate on disk. (The node is
    // listed as ready earlier, by the join's Raft entry, before the agent has its reply.)
    let serving = || {
        let (admin, listen) = (admin.clone(), listen.clone());
        async move {
            let st = InferenceClient::new(agent_channel(&admin, &listen).await.ok()?)
                .status(agent_api::StatusRequest {})
                .await
                .ok()?
                .into_inner();
            st.connected.then_some(())
        }
    };
    let (_, token) = create_token(&addr, &["--ttl", "10m", "--node", "rev-a"]);
    let data = dir.path().join("rev-a");
    let mut agent = start(&data, Some(&token), &dir.path().join("a1.log"));
    node_ready(&addr, "rev-a").await;
    eventually(Duration::from_secs(20), "rev-a serving", serving).await;
    let _ = agent.kill();
    let _ = agent.wait();
    AdminClient::new(channel(&admin, &addr).await.unwrap())
        .remove_node(adm::RemoveNodeRequest {
            meta: None,
            name: "rev-a".into(),
        })
        .await
        .expect("nodes remove rev-a");
    // The same agent, from the same data dir (its certificate): refused, with the reason.
    let log = dir.path().join("a2.log");
    let mut agent = start(&data, None, &log);
    crate::assert_eventually!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("was revoked when the node was removed"),
        Duration::from_secs(20),
        "no revocation refusal in the agent's log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let nodes = AdminClient::new(channel(&admin, &addr).await.unwrap())
        .list_nodes(adm::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(
        nodes.iter().all(|n| n.name != "rev-a"),
        "a revoked certificate registered the node again"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    // A new token and an empty data dir: a new certificate, and the name is back.
    let (_, token) = create_token(&addr, &["--ttl", "10m", "--node", "rev-a"]);
    let mut agent = start(
        &dir.path().join("rev-a-new"),
        Some(&token),
        &dir.path().join("a3.log"),
    );
    node_ready(&addr, "rev-a").await;
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_joins_with_a_per_node_token_and_keeps_its_certificate() {
    let _g = SERIAL.lock().await;
    let (c, addr) = signing_cluster().await;
    let (id, token) = create_token(&addr, &["--ttl", "10m", "--node", "join-a"]);
    let secret = token.split_once('.').unwrap().1.to_string();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("join-a");
    let listen = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("join-a.log");
    let spawn = |with_token: bool| {
        let mut cmd = joining_agent("join-a", &data, &listen, &addr);
        if with_token {
            cmd.args(["--join-token", &token]);
        }
        cmd.stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("start edgeplane-agent")
    };
    let mut agent = spawn(true);
    // The node appears as ready, registered by its join.
    let admin = tls().admin();
    node_ready(&addr, "join-a").await;
    // It serves Infer with that certificate, and its session with the leader is up.
    let status = |admin: ClientTls, listen: String| async move {
        let st = InferenceClient::new(agent_channel(&admin, &listen).await.ok()?)
            .status(agent_api::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        st.connected.then_some(st)
    };
    eventually(Duration::from_secs(20), "join-a connected", || {
        status(admin.clone(), listen.clone())
    })
    .await;
    // Serving TLS means the join is complete: its key and certificate are in its data dir,
    // 0600, and the certificate is node/join-a.
    let cert = data.join("tls").join("node.pem");
    let key = data.join("tls").join("node.key");
    #[cfg(unix)]
    for f in [&cert, &key] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let joined = edgeplane_tls::TlsMaterial::load(edgeplane_tls::TlsPaths {
        ca: tls().ca(),
        cert: cert.clone(),
        key: key.clone(),
    })
    .expect("the joined key and certificate load as a pair");
    assert_eq!(
        joined.identity().principal,
        Principal::Node("join-a".into())
    );
    // The token is used (once): the list says by whom, and never shows a secret.
    assert_eq!(token_statuses(&addr)[&id], "used by join-a");
    for format in ["table", "json"] {
        let (ok, out, err) = tokens_cli(&addr, &["list", "--format", format]);
        assert!(ok, "{err}");
        assert!(out.contains(&id), "{out}");
        assert!(
            !out.contains(&secret) && !err.contains(&secret),
            "tokens list printed a secret"
        );
    }
    // No log line of the coordinator shows the secret either.
    assert!(
        !c.log_of(1).contains(&secret),
        "the coordinator logged a secret"
    );

    // Restart without the token: the agent authenticates by its certificate.
    let _ = agent.kill();
    let _ = agent.wait();
    let mut agent = spawn(false);
    eventually(
        Duration::from_secs(30),
        "join-a reconnected without a token",
        || status(admin.clone(), listen.clone()),
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("using the node certificate of an earlier join"),
        "{text}"
    );
    assert!(!text.contains(&secret), "the agent logged its token");
    let _ = agent.kill();
    let _ = agent.wait();

    // The same token cannot be used twice (another data dir, so no certificate yet).
    let other = dir.path().join("again");
    let mut cmd = joining_agent(
        "join-a",
        &other,
        &format!("127.0.0.1:{}", free_port()),
        &addr,
    );
    cmd.args(["--join-token", &token]);
    let err = refused_join(cmd, &dir.path().join("again.log")).await;
    assert!(
        err.contains("already used") && err.contains("join-a") && err.contains(&id),
        "{err}"
    );
    assert!(!other.join("tls").join("node.pem").exists());

    // Without a certificate, nothing but the join is allowed: a Register without a CSR is
    // refused, and so is any Admin call.
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(no_client_cert())
        .unwrap();
    let ch = ep
        .connect()
        .await
        .expect("TLS without a client certificate");
    let e = AgentClient::new(ch.clone())
        .register(agent_api::RegisterRequest {
            name: "join-a".into(),
            agent_addr: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("join"), "{e:?}");
    let e = AdminClient::new(ch)
        .list_nodes(adm::ReadRequest { stale: true })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_expired_and_other_nodes_tokens_cannot_join() {
    let _g = SERIAL.lock().await;
    let (c, addr) = signing_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let try_join = |name: &str, token: &str, tag: &str| {
        let mut cmd = joining_agent(
            name,
            &dir.path().join(tag),
            &format!("127.0.0.1:{}", free_port()),
            &addr,
        );
        cmd.args(["--join-token", token]);
        (cmd, dir.path().join(format!("{tag}.log")))
    };

    // Revoked.
    let (revoked_id, revoked) = create_token(&addr, &["--ttl", "10m"]);
    let (ok, out, err) = tokens_cli(&addr, &["revoke", &revoked_id]);
    assert!(ok && out.contains(&revoked_id), "{out} {err}");
    let (cmd, log) = try_join("tok-r", &revoked, "revoked");
    let err = refused_join(cmd, &log).await;
    assert!(
        err.contains("was revoked") && err.contains(&revoked_id),
        "{err}"
    );

    // Expired: a 1 s token, polled until the cluster lists it as expired.
    let (expired_id, expired) = create_token(&addr, &["--ttl", "1s"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while token_statuses(&addr)[&expired_id] != "expired" {
        assert!(
            std::time::Instant::now() < deadline,
            "token {expired_id} not expired within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cmd, log) = try_join("tok-e", &expired, "expired");
    let err = refused_join(cmd, &log).await;
    assert!(
        err.contains("expired") && err.contains(&expired_id),
        "{err}"
    );

    // Restricted to node A: B cannot join with it; A still can afterwards.
    let (a_id, for_a) = create_token(&addr, &["--ttl", "10m", "--node", "tok-a"]);
    let (cmd, log) = try_join("tok-b", &for_a, "b");
    let err = refused_join(cmd, &log).await;
    assert!(
        err.contains(&a_id) && err.contains("is for node \"tok-a\", not \"tok-b\""),
        "{err}"
    );
    assert_eq!(
        token_statuses(&addr)[&a_id],
        "unused",
        "a refused join leaves the token unused"
    );

    // A wrong secret for an existing id, straight over the API.
    let (_, csr) = edgeplane_tls::certs::new_key_and_csr().unwrap();
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(no_client_cert())
        .unwrap();
    let e = AgentClient::new(ep.connect().await.unwrap())
        .register(agent_api::RegisterRequest {
            name: "tok-a".into(),
            join_token: format!("{a_id}.0000000000000000"),
            agent_addr: "127.0.0.1:1".into(),
            csr,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("wrong secret"), "{e:?}");

    // None of the refused agents got a certificate, and no node was registered.
    let nodes = c
        .client(1)
        .await
        .unwrap()
        .list_nodes(adm::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "{nodes:?}");
    for tag in ["revoked", "expired", "b"] {
        assert!(!dir.path().join(tag).join("tls").join("node.pem").exists());
    }
    // The list shows each token's state and never a secret.
    let st = token_statuses(&addr);
    assert_eq!(st[&revoked_id], "revoked");
    assert_eq!(st[&expired_id], "expired");
    let (_, out, _) = tokens_cli(&addr, &["list"]);
    for t in [&revoked, &expired, &for_a] {
        let secret = t.split_once('.').unwrap().1;
        assert!(!out.contains(secret), "tokens list printed a secret: {out}");
    }
    // Only admins manage tokens.
    let e = AdminClient::new(
        channel(&tls().client(&tls().user(Role::Operator)), &addr)
            .await
            .unwrap(),
    )
    .list_tokens(adm::ReadRequest { stale: true })
    .await
    .unwrap_err();
    assert!(e.message().contains("needs the admin role"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_without_the_ca_key_forward_joins_to_the_leader() {
    let _g = SERIAL.lock().await;
    // Members 1 and 2 hold the CA key, member 3 does not; member 1 leads.
    let c = Cluster::start(
        3,
        Opts {
            ca_key_on: vec![1, 2],
            ..Default::default()
        },
    );
    let mut leader = c.leader(Duration::from_secs(15)).await;
    if leader != 1 {
        c.client(leader)
            .await
            .unwrap()
            .transfer_leader(adm::TransferLeaderRequest { to: 1 })
            .await
            .expect("transfer leadership to member 1");
        leader = c.leader(Duration::from_secs(10)).await;
    }
    assert_eq!(leader, 1);
    let dir = tempfile::tempdir().unwrap();
    let admin = tls().admin();
    // Through member 3 (no key: forwards to the leader, which signs) and member 2 (a
    // follower with the key: signs itself, the token goes through Raft via the leader).
    for (via, name) in [(3u64, "fwd-3"), (2, "fwd-2")] {
        let addr = c.replicas[&via].client_addr.clone();
        let (id, token) = create_token(&addr, &["--ttl", "5m", "--node", name]);
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = joining_agent(name, &dir.path().join(name), &listen, &addr);
        cmd.args(["--join-token", &token])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap());
        let mut agent = cmd.spawn().expect("start edgeplane-agent");
        eventually(
            Duration::from_secs(30),
            &format!("{name} joined via {via}"),
            || {
                let (admin, listen) = (admin.clone(), listen.clone());
                async move {
                    InferenceClient::new(agent_channel(&admin, &listen).await.ok()?)
                        .status(agent_api::StatusRequest {})
                        .await
                        .ok()?
                        .into_inner()
                        .connected
                        .then_some(())
                }
            },
        )
        .await;
        let _ = agent.kill();
        let _ = agent.wait();
        assert_eq!(token_statuses(&addr)[&id], format!("used by {name}"));
    }
    assert!(
        c.log_of(3)
            .contains("no CA key here: forwarding the join to the leader"),
        "member 3 did not forward"
    );
    let signed_by = |id: u64| {
        c.log_of(id)
            .lines()
            .filter(|l| l.contains("node certificate issued"))
            .count()
    };
    assert_eq!(signed_by(1), 1, "the leader signs the forwarded join");
    assert_eq!(signed_by(2), 1, "a follower with the key signs itself");
    assert_eq!(signed_by(3), 0);
}

/// Issue 22, finding 2: an agent joins (certificate A), then `certs issue node` gives the
/// name a second certificate B that registers it; `nodes remove` must revoke both. Before,
/// only the last bound certificate was revoked and A registered the node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_node_revokes_every_certificate_it_was_bound_to() {
    let _g = SERIAL.lock().await;
    let (_cluster, addr) = signing_cluster().await;
    let admin = tls().admin();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_, token) = create_token(&addr, &["--ttl", "10m", "--node", "rev-b"]);
    let data = dir.path().join("rev-b");
    let mut agent = joining_agent("rev-b", &data, &listen, &addr)
        .args(["--join-token", &token])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("a.log")).unwrap())
        .spawn()
        .expect("start edgeplane-agent");
    node_ready(&addr, "rev-b").await;
    eventually(Duration::from_secs(20), "rev-b serving", || {
        let (admin, listen) = (admin.clone(), listen.clone());
        async move {
            let st = InferenceClient::new(agent_channel(&admin, &listen).await.ok()?)
                .status(agent_api::StatusRequest {})
                .await
                .ok()?
                .into_inner();
            st.connected.then_some(())
        }
    })
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    let joined = ClientTls(Some(
        edgeplane_tls::TlsMaterial::load(edgeplane_tls::TlsPaths {
            ca: tls().ca(),
            cert: data.join("tls").join("node.pem"),
            key: data.join("tls").join("node.key"),
        })
        .expect("the joined certificate"),
    ));
    // Issued after the join, so newer than the joined certificate.
    let issued = tls().client(&tls().node("rev-b"));
    let register = |t: ClientTls| {
        let (addr, listen) = (addr.clone(), listen.clone());
        async move {
            AgentClient::new(channel(&t, &addr).await.unwrap())
                .register(agent_api::RegisterRequest {
                    name: "rev-b".into(),
                    agent_addr: listen,
                    ..Default::default()
                })
                .await
        }
    };
    register(issued.clone())
        .await
        .expect("the issued certificate takes the name");
    let e = register(joined.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    AdminClient::new(channel(&admin, &addr).await.unwrap())
        .remove_node(adm::RemoveNodeRequest {
            meta: None,
            name: "rev-b".into(),
        })
        .await
        .expect("nodes remove rev-b");
    for (what, t) in [("joined", joined), ("issued", issued)] {
        let e = register(t).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains("revoked"), "{what}: {e:?}");
    }
    let nodes = AdminClient::new(channel(&admin, &addr).await.unwrap())
        .list_nodes(adm::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(
        nodes.iter().all(|n| n.name != "rev-b"),
        "a revoked certificate registered rev-b"
    );
}

/// Issue 22, finding 6: revocation holds on every call path. A node's open session is
/// closed within 1 s of `nodes remove`; its certificate then gets no answer from Health
/// either (before: the session stayed up and Health answered SERVING).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_nodes_session_closes_at_once_and_its_certificate_gets_no_health() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let _g = SERIAL.lock().await;
    let (_cluster, addr) = signing_cluster().await;
    let node = tls().client(&tls().node("rev-s"));
    let mut agent = AgentClient::new(channel(&node, &addr).await.unwrap());
    agent
        .register(agent_api::RegisterRequest {
            name: "rev-s".into(),
            agent_addr: format!("127.0.0.1:{}", free_port()),
            ..Default::default()
        })
        .await
        .expect("register rev-s");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(agent_api::AgentMessage {
        body: Some(agent_api::agent_message::Body::Hello(agent_api::Hello {
            name: "rev-s".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut session = agent
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session opens")
        .into_inner();
    let health = |t: ClientTls| {
        let addr = addr.clone();
        async move {
            HealthClient::new(channel(&t, &addr).await.unwrap())
                .check(HealthCheckRequest::default())
                .await
        }
    };
    health(node.clone())
        .await
        .expect("control: Health answers the node");
    AdminClient::new(channel(&tls().admin(), &addr).await.unwrap())
        .remove_node(adm::RemoveNodeRequest {
            meta: None,
            name: "rev-s".into(),
        })
        .await
        .expect("nodes remove rev-s");
    let removed = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match session.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await
    .expect("the session is still open 5 s after nodes remove");
    let took = removed.elapsed();
    assert!(
        took <= Duration::from_secs(1),
        "session closed after {took:?}"
    );
    let s = end.expect("the session ends with a status");
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    drop(tx);
    let e = health(node).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
}

/// Issue 22, finding 6: a viewer may read an agent's Status but not run its models; an
/// inference client may.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_cannot_call_infer() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let t = tls();
    let mut agent = Command::new(support::bin("edgeplane-agent"))
        .args(["--name", "inf-edge", "--listen", &listen])
        .arg("--data-dir")
        .arg(dir.path().join("a"))
        .args(t.args(&t.node("inf-edge")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let viewer = t.client(&t.user(Role::Viewer));
    let client = t.client(&t.issue(Identity {
        principal: Principal::Client("app".into()),
        role: None,
    }));
    let ch = eventually(Duration::from_secs(20), "agent serving", || {
        let (v, l) = (viewer.clone(), listen.clone());
        async move { agent_channel(&v, &l).await.ok() }
    })
    .await;
    let mut as_viewer = InferenceClient::new(ch);
    as_viewer
        .status(agent_api::StatusRequest {})
        .await
        .expect("a viewer reads Status");
    let req = agent_api::InferRequest {
        model: "nope".into(),
        ..Default::default()
    };
    let e = as_viewer.infer(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("inference client"), "{e:?}");
    let mut as_client = InferenceClient::new(agent_channel(&client, &listen).await.unwrap());
    if let Err(e) = as_client.infer(req).await {
        assert_ne!(
            e.code(),
            tonic::Code::PermissionDenied,
            "a client may call Infer: {e:?}"
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Issue 22, finding 8: an anonymous join is checked for its token before its CSR is parsed
/// or signed: a garbage CSR with a wrong token is refused for the token (before, the CSR
/// was parsed first and the refusal was about the CSR). A valid token still reaches the CSR.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_join_token_is_checked_before_the_csr_is_parsed() {
    let _g = SERIAL.lock().await;
    let (_c, addr) = signing_cluster().await;
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(no_client_cert())
        .unwrap()
        .connect_timeout(Duration::from_millis(1000))
        .timeout(Duration::from_secs(5));
    let ch = ep.connect().await.unwrap();
    let join = |token: String| {
        let ch = ch.clone();
        async move {
            AgentClient::new(ch)
                .register(agent_api::RegisterRequest {
                    name: "pre-a".into(),
                    join_token: token,
                    agent_addr: "127.0.0.1:7999".into(),
                    csr: "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
        }
    };
    let e = join("abcdef.0123456789abcdef".into()).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("join_token"), "{e:?}");
    assert!(!e.message().contains("csr"), "the CSR was looked at: {e:?}");
    let (id, token) = create_token(&addr, &["--ttl", "10m", "--node", "pre-a"]);
    let e = join(format!("{id}.0000000000000000")).await;
    assert!(e.message().contains("wrong secret"), "{e:?}");
    let e = join(token.clone()).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("csr"), "{e:?}");
    assert_eq!(
        token_statuses(&addr)[&id],
        "unused",
        "a refused CSR did not use the token"
    );
}
