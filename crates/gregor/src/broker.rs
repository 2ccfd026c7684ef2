//! `gregor broker`: runs the server until SIGTERM or SIGINT, then stops cleanly.

use gregor_broker::BrokerConfig;

/// Beyond `shutdown.timeout.ms`, what a clean stop may take before the watchdog ends the
/// process: the controlled shutdown (5 s), background tasks (5 s), the metadata quorum
/// (5 s), and the final fsyncs.
const WATCHDOG_MARGIN_MS: u64 = 30_000;

pub fn run(config: BrokerConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gregor")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let watchdog = std::time::Duration::from_millis(
        config.settings().shutdown_timeout_ms.max(0) as u64 + WATCHDOG_MARGIN_MS,
    );
    let result = runtime.block_on(async {
        let shutdown = async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM; stop the broker with SIGINT");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            // A second signal ends the process at once; and whatever happens, it ends by
            // the watchdog's deadline (the next start then recovers the logs as after a
            // crash: no clean-shutdown marker).
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::error!("second stop signal: exiting now, without a clean shutdown");
                std::process::exit(1);
            });
            std::thread::spawn(move || {
                std::thread::sleep(watchdog);
                tracing::error!(
                    after_s = watchdog.as_secs(),
                    "the clean stop did not finish in time; exiting without a clean shutdown (the next start recovers the logs)"
                );
                std::process::exit(1);
            });
        };
        gregor_broker::run(config, shutdown).await.map_err(|e| e.to_string())
    });
    // Blocking work still running (a detached task's) must not hold the exit: the logs
    // are closed by now.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
