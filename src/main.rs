//! The `cuckoo` command: a thin adapter from command lines to the library.

mod cli;

fn main() -> std::process::ExitCode {
    tune_malloc();
    cli::main()
}

/// glibc gives threads their own arenas and hands freed memory back to the kernel early.
/// Chunk-sized buffers pass between tokio, rayon and blocking threads, so each chunk then
/// faults fresh pages in again; with one arena, an 8 MiB mmap threshold (chunks are at
/// most 4 MiB) and a 32 MiB trim threshold, a restore of the kernel tree took 2.9–3.2 s
/// instead of 3.4–3.9 s here, with about the same peak memory (docs/benchmarks.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    use nix::libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
    // SAFETY: mallopt only sets allocator parameters, and runs before any other thread.
    unsafe {
        mallopt(M_ARENA_MAX, 1);
        mallopt(M_MMAP_THRESHOLD, 8 << 20);
        mallopt(M_TRIM_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
