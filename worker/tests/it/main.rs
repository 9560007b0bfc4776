//! The worker binary as an operator starts it: bad flags are refused before anything loads,
//! with the flag named and the valid values. (Serving real tensors is covered end to end by
//! the workspace's integration tests, which drive this binary through the agent.)

use std::process::Command;

fn worker(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplane-worker"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run edgeplane-worker");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_model_is_refused_naming_the_flag_and_the_valid_models() {
    let (ok, err) = worker(&["--listen", "127.0.0.1:0", "--models", "resnet18,alexnet"]);
    assert!(!ok, "an unknown model must not start a worker");
    assert!(err.contains("--models"), "names the flag: {err}");
    assert!(err.contains("alexnet"), "names the value: {err}");
    assert!(
        err.contains("resnet18, resnet50, vgg16"),
        "lists the valid ones: {err}"
    );
}

#[test]
fn an_out_of_range_resolution_is_refused_with_the_range() {
    let (ok, err) = worker(&["--listen", "127.0.0.1:0", "--resolution", "0"]);
    assert!(!ok);
    assert!(
        err.contains("--resolution") && err.contains("32..=1024"),
        "{err}"
    );
}

mod repository;
mod serve;
