//! TLS for the CLI: the client material every command that talks to a cluster or an agent
//! uses (`--tls-ca/--tls-cert/--tls-key` or `--insecure`), and the `certs` commands that
//! make a cluster CA and its certificates.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context as _};
use edgeplane_tls::{Ca, ClientTls, Identity, LeafSpec, Principal, Role, TlsPaths, Validity};

/// TLS flags shared by every command (global).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) the cluster's certificates are signed by.
    #[arg(long, global = true, env = "EDGEPLANE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), e.g. from `edgeplane certs issue admin`.
    #[arg(long, global = true, env = "EDGEPLANE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `--tls-cert` (PEM).
    #[arg(long, global = true, env = "EDGEPLANE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Talk plaintext to a cluster started with `--insecure`.
    #[arg(long, global = true, env = "EDGEPLANE_INSECURE")]
    pub insecure: bool,
}

impl TlsArgs {
    /// The client TLS these flags name; errors name the flags when none were given.
    pub fn load(&self) -> anyhow::Result<ClientTls> {
        let paths = TlsPaths::from_flags(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?;
        Ok(match (paths, self.insecure) {
            (Some(_), true) => {
                bail!("--insecure together with --tls-* flags; give one or the other")
            }
            (Some(p), false) => ClientTls(Some(edgeplane_tls::TlsMaterial::load(p)?)),
            (None, true) => ClientTls::insecure(),
            (None, false) => bail!(
                "no TLS material: give --tls-ca, --tls-cert and --tls-key (or EDGEPLANE_TLS_CA, \
                 EDGEPLANE_TLS_CERT, EDGEPLANE_TLS_KEY), or --insecure for a cluster started with \
                 --insecure"
            ),
        })
    }
}

/// The client TLS of one command's connections, passed explicitly (there is no process-wide
/// TLS state): either a command's flags, read on first use (so a command that fails on its
/// own input first needs none) and then kept, or material given directly (the clusters the
/// CLI starts itself). Clones share what was loaded.
#[derive(Clone)]
pub struct ClientTlsSource {
    args: TlsArgs,
    ready: Arc<OnceLock<ClientTls>>,
}

impl ClientTlsSource {
    /// TLS from these flags, loaded on first use.
    pub fn from_args(args: &TlsArgs) -> Self {
        ClientTlsSource {
            args: args.clone(),
            ready: Arc::new(OnceLock::new()),
        }
    }

    /// This TLS material.
    pub fn ready(tls: ClientTls) -> Self {
        let ready = OnceLock::new();
        let _ = ready.set(tls);
        ClientTlsSource {
            args: TlsArgs::default(),
            ready: Arc::new(ready),
        }
    }

    /// The client TLS (loading the flags the first time).
    pub fn client(&self) -> anyhow::Result<ClientTls> {
        if let Some(c) = self.ready.get() {
            return Ok(c.clone());
        }
        let c = self.args.load()?;
        Ok(self.ready.get_or_init(|| c).clone())
    }

    /// A dial to the coordinator at `addr` (the server must be a member).
    pub fn endpoint(&self, addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
        Ok(self.client()?.endpoint(addr)?)
    }

    /// A dial to the agent at `addr` (the server must hold a node certificate).
    pub fn agent_endpoint(&self, addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
        Ok(self
            .client()?
            .endpoint_to(addr, edgeplane_tls::Expect::AnyNode)?)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca.key, mode 0600) in DIR.
    Init {
        /// Directory for ca.pem and ca.key (created; files written 0600).
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name put in the CA's subject.
        #[arg(long, default_value = "edgeplane")]
        name: String,
    },
    /// Issue a certificate signed by the CA in DIR (files DIR/<kind>-<name>.pem/.key, 0600).
    Issue {
        #[command(subcommand)]
        what: IssueCommand,
    },
}

/// Options of every issued certificate.
#[derive(Debug, Clone, clap::Args)]
pub struct IssueOpts {
    /// Directory holding the CA (from `certs init`); the certificate is written there.
    #[arg(long)]
    pub dir: PathBuf,
    /// DNS names or IP addresses the holder serves under (repeat or comma-separate);
    /// default localhost, 127.0.0.1, ::1.
    #[arg(long, value_delimiter = ',')]
    pub host: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum IssueCommand {
    /// A coordinator replica (peer links and Forward).
    Member {
        /// Member (replica) id the certificate names.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        opts: IssueOpts,
    },
    /// An operator: role viewer (reads), operator (models, placement) or admin (all).
    Admin {
        /// User name the certificate names (shown in audit lines).
        #[arg(long)]
        name: String,
        /// Role: viewer (reads), operator (models, placement, pins, drain) or admin.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        opts: IssueOpts,
    },
    /// An edge agent, bound to its node name.
    Node {
        /// Node name the certificate names (the agent's --name).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        opts: IssueOpts,
    },
    /// An inference client of the agents' Infer API.
    Client {
        /// Client name the certificate names.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        opts: IssueOpts,
    },
}

pub fn certs(c: CertsCommand) -> anyhow::Result<()> {
    match c {
        CertsCommand::Init { dir, name } => {
            edgeplane_tls::identity::valid_name("name", &name).map_err(anyhow::Error::msg)?;
            let _ = Ca::init(&dir, &name)?;
            println!(
                "wrote {} and {} (keep ca.key offline; distribute ca.pem)",
                dir.join(edgeplane_tls::certs::CA_CERT).display(),
                dir.join(edgeplane_tls::certs::CA_KEY).display()
            );
            Ok(())
        }
        CertsCommand::Issue { what } => {
            let (principal, role, opts) = match what {
                IssueCommand::Member { id, opts } => {
                    if id == 0 {
                        bail!("invalid --id: must be > 0");
                    }
                    (Principal::Member(id), None, opts)
                }
                IssueCommand::Admin { name, role, opts } => {
                    let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!("--{e}"))?;
                    (Principal::User(check("name", &name)?), Some(role), opts)
                }
                IssueCommand::Node { name, opts } => {
                    (Principal::Node(check("name", &name)?), None, opts)
                }
                IssueCommand::Client { name, opts } => {
                    (Principal::Client(check("name", &name)?), None, opts)
                }
            };
            if opts.days == 0 || opts.days > 3650 {
                bail!("invalid --days: must be in 1..=3650");
            }
            let ca = Ca::load(&opts.dir)
                .with_context(|| format!("loading the CA from --dir {}", opts.dir.display()))?;
            let serves = edgeplane_tls::certs::serves(&principal);
            if !serves && !opts.host.is_empty() {
                bail!(
                    "invalid --host: only member and node certificates name hosts (they serve); \
                     user and client certificates are for dialing only, drop --host"
                );
            }
            let identity = Identity { principal, role };
            let spec = LeafSpec {
                identity: identity.clone(),
                hosts: match (serves, opts.host.is_empty()) {
                    (true, true) => edgeplane_tls::certs::default_hosts(),
                    _ => opts.host.clone(),
                },
                validity: Validity::for_duration(std::time::Duration::from_secs(
                    opts.days * 86_400,
                )),
            };
            let stem = edgeplane_tls::certs::stem_for(&identity);
            let p = ca.issue_to(&opts.dir, &stem, &spec)?;
            println!(
                "issued {identity}: {} and {}",
                p.cert.display(),
                p.key.display()
            );
            Ok(())
        }
    }
}

fn check(field: &str, s: &str) -> anyhow::Result<String> {
    edgeplane_tls::identity::valid_name(&format!("--{field}"), s)
        .map(str::to_string)
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_keeps_its_own_tls() {
        // a source without flags names the flags; one given plaintext is plaintext; neither
        // changes the other (there is no process-wide TLS)
        let none = ClientTlsSource::from_args(&TlsArgs::default());
        let plain = ClientTlsSource::ready(ClientTls::insecure());
        let Err(e) = none.client() else {
            panic!("no material: an error")
        };
        let e = e.to_string();
        assert!(e.contains("--tls-ca") && e.contains("--insecure"), "{e}");
        assert!(plain.client().unwrap().0.is_none(), "plaintext");
        assert!(
            none.client().is_err(),
            "still no material after the other was used"
        );
        let flagged = ClientTlsSource::from_args(&TlsArgs {
            insecure: true,
            ..TlsArgs::default()
        });
        assert!(flagged.client().unwrap().0.is_none());
        let both = TlsArgs {
            insecure: true,
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("c.key".into()),
        };
        let Err(e) = both.load() else {
            panic!("both refused")
        };
        let e = e.to_string();
        assert!(e.contains("--insecure together with --tls-*"), "{e}");
    }
}
