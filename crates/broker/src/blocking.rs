//! Blocking work (file I/O, fsyncs, opening and closing logs) from asynchronous code.

/// Runs `f` off the runtime's workers, as `tokio::task::spawn_blocking` does; on a host of
/// the deterministic simulator it runs at once on the simulator's single thread instead,
/// so that when it finishes depends on the simulated run alone, never on a real thread.
pub async fn offload<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if turmoil::in_simulation() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await
}
