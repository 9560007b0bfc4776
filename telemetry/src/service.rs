//! The service manager's side of a daemon (systemd `Type=notify`): readiness, stopping, and
//! SIGHUP as "reload" (`ExecReload=/bin/kill -HUP $MAINPID`).
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) the notifications do nothing.

/// `READY=1`: the daemon's ports are bound and served.
pub fn ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// `STOPPING=1`: a planned stop has begun.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Keep SIGHUP from ending the process: each one is logged as a reload request (the TLS
/// material's own reloader, when TLS is on, re-reads its files on the same signal) and systemd
/// is told the reload is done. Call from inside a tokio runtime.
pub fn spawn_sighup_handler(component: &'static str) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
            tracing::info!(
                component,
                "SIGHUP: reloading the TLS material (certificates, keys, CA)"
            );
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
    });
}
