//! The agent binary as an operator starts it: the effective configuration (flags over
//! environment over file) and refusals that name the field and the fix. The agent's serving,
//! joining and failover paths run as real processes in the workspace's integration tests.

use std::process::Command;

fn agent(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeplane-agent"));
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run edgeplane-agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn print_config_shows_flags_over_env_and_hides_the_join_token() {
    let secret = "abcdef.0123456789abcdef";
    let (ok, out, err) = agent(
        &[
            "--print-config",
            "--insecure",
            "--join-token",
            secret,
            "--listen",
            "127.0.0.1:7999",
        ],
        &[
            ("EDGEPLANE_AGENT_NAME", "box7"),
            ("EDGEPLANE_AGENT_LISTEN", "127.0.0.1:1"),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("name = \"box7\""), "env sets the name: {out}");
    assert!(
        out.contains("listen = \"127.0.0.1:7999\""),
        "the flag wins over env: {out}"
    );
    assert!(out.contains("join_token = \"<set>\""), "{out}");
    assert!(
        !out.contains("0123456789abcdef"),
        "the secret never printed: {out}"
    );
}

#[test]
fn a_bad_accelerator_spec_names_the_field_and_the_accepted_forms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, _, err) = agent(
        &["--insecure", "--accelerators", "tpu:x", "--data-dir", data],
        &[],
    );
    assert!(!ok, "must not start");
    assert!(
        err.contains("`accelerators`") && err.contains("tpu:x"),
        "{err}"
    );
    assert!(
        err.contains("sim-gpu:<GPU profile>"),
        "lists the accepted forms: {err}"
    );
}

#[test]
fn without_tls_material_the_agent_refuses_and_names_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, _, err) = agent(&["--data-dir", data], &[]);
    assert!(!ok, "secure by default: no TLS, no start");
    for flag in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
        assert!(err.contains(flag), "names {flag}: {err}");
    }
}
