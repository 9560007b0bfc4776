//! Servers prove who they are (issue 22, finding 1), with real processes: a joining agent
//! sends its token only to a coordinator member; a fake endpoint holding another cluster
//! certificate (a client's, a node's) gets no token. A replica refuses to start under a
//! certificate that is not its `--id`'s.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeplane_tls::{CertPaths, Identity, Principal};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::AsyncReadExt as _;

use crate::cluster::SERIAL;
use crate::support::{self, free_port, tls};

/// A well-formed per-node token (6 + 16 characters); no cluster knows it.
const TOKEN: &str = "capt3d.s3cr3tjoinsecret";

/// A TLS endpoint that completes handshakes with the certificate it holds and keeps every
/// byte a client sends after the handshake: what an attacker on a coordinator's address sees.
struct Fake {
    addr: String,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Fake {
    async fn start(p: &CertPaths) -> Fake {
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&p.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&p.key).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (acc, rec) = (accepted.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (acceptor, rec) = (acceptor.clone(), rec.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(sock).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 64 * 1024];
                    let read = async {
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
                });
            }
        });
        Fake {
            addr,
            accepted,
            received,
        }
    }

    fn captured(&self) -> bool {
        let got = self.received.lock().unwrap();
        got.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes())
    }
}

fn joining_agent(
    dir: &std::path::Path,
    coordinators: &str,
    log: &std::path::Path,
) -> std::process::Child {
    Command::new(support::bin("edgeplane-agent"))
        .args(["--name", "edge-3", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir)
        .arg("--tls-ca")
        .arg(tls().ca())
        .args(["--coordinators", coordinators, "--join-token", TOKEN])
        .args(["--max-backoff-ms", "200"])
        .env("EDGEPLANE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start edgeplane-agent")
}

/// The agent dials a fake holding the client (`app`) certificate and one holding another
/// node's certificate: both see connections, neither sees the token. The control, a fake
/// holding a member certificate, does receive it (so the fakes would see a token sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fake_coordinator_with_a_client_or_node_certificate_gets_no_join_token() {
    let _g = SERIAL.lock().await;
    let t = tls();
    let client = t.issue(Identity {
        principal: Principal::Client("app".into()),
        role: None,
    });
    let as_client = Fake::start(&client).await;
    let as_node = Fake::start(&t.node("edge-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let coords = format!("{},{}", as_client.addr, as_node.addr);
    let mut agent = joining_agent(&dir.path().join("a"), &coords, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while as_client.accepted.load(Ordering::SeqCst) < 3
        || as_node.accepted.load(Ordering::SeqCst) < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not dial both fakes 3 times within 20 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !as_client.captured(),
        "the client-certificate fake captured the token: {text}"
    );
    assert!(
        !as_node.captured(),
        "the node-certificate fake captured the token: {text}"
    );
    assert!(
        as_client.received.lock().unwrap().is_empty()
            && as_node.received.lock().unwrap().is_empty(),
        "no byte after a refused handshake"
    );
    assert!(
        text.contains("server identity refused server=node/edge-1")
            && text.contains("required: ServerAuth"),
        "the refusal names the wrong identity: {text}"
    );
    assert!(!text.contains(TOKEN), "the token is never logged");

    // Control: the same agent against a fake holding a member certificate sends it.
    let as_member = Fake::start(&t.member(3)).await;
    let dir2 = tempfile::tempdir().unwrap();
    let log2 = dir2.path().join("agent.log");
    let mut agent = joining_agent(&dir2.path().join("a"), &as_member.addr, &log2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !as_member.captured() {
        assert!(
            std::time::Instant::now() < deadline,
            "control: a member-certificate endpoint never received the join: {}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A replica whose certificate names another member refuses to start, naming `--id`.
#[test]
fn a_replica_refuses_a_certificate_that_is_not_its_ids() {
    let t = tls();
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("127.0.0.1:{}", free_port());
    let out = Command::new(support::bin("edgeplane-coordinator"))
        .args(["--id", "1", "--peer-addr", &peer])
        .arg("--client-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--initial-cluster")
        .arg(format!("1={peer}"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(t.args(&t.member(2)))
        .output()
        .expect("run edgeplane-coordinator");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started under member 2's certificate: {err}"
    );
    assert!(
        err.contains("member/2") && err.contains("--id 1"),
        "the error names the certificate and --id: {err}"
    );
    assert!(
        !dir.path().join("raft").exists(),
        "nothing was bootstrapped under the wrong identity"
    );
}

/// Issued certificates: only members and nodes may serve (ServerAuth, loopback hosts);
/// users and clients get ClientAuth only and no host names.
#[test]
fn only_member_and_node_certificates_may_serve() {
    let t = tls();
    let user = t.user(edgeplane_tls::Role::Admin);
    for (p, serves) in [(t.member(1), true), (t.node("edge-9"), true), (user, false)] {
        let pem = std::fs::read(&p.cert).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(eku.server_auth, serves, "{}", p.cert.display());
        assert!(eku.client_auth, "{}", p.cert.display());
        let dns = c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .filter(|g| !matches!(g, x509_parser::extensions::GeneralName::URI(_)))
            .count();
        assert_eq!(dns > 0, serves, "{}: host names", p.cert.display());
    }
}
