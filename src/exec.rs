//! Where work runs: CPU-bound steps (hashing, compression, decoding) on the rayon pool, so
//! tokio's threads stay free for I/O.
//!
//! Owns: the bridge from async code to rayon. Must not: hold state.

/// Run `f` on the rayon pool and await its result.
pub async fn cpu<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("rayon task panicked")
}
