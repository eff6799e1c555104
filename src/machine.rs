//! This machine and this moment: the wall clock, the host and user names that snapshots,
//! locks and the drive record.
//!
//! Owns: reading them from the system. Must not: decide what they are used for.

/// Nanoseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// This machine's host name, or "unknown".
pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "unknown".into())
}

/// The effective user's name, or its uid where it has none.
pub fn username() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}
