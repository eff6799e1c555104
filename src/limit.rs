//! Rate limits per backend (upload and download bandwidth, requests per second) and for the
//! whole pool (bandwidth its backends share).
//!
//! Owns: pacing callers so that, over time, no more than `rate` units pass per second, with
//! bursts of up to one second's worth. Must not: know what the units are; `backend` decides.
//! (OpenDAL's throttle layer shares one budget between reads and writes, so the directions
//! could not be limited separately with it.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Paces callers to `rate` units per second (a virtual-time token bucket).
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    /// The instant from which the next units may pass.
    next: Mutex<Instant>,
}

impl Limiter {
    /// A limiter letting `rate` units through per second.
    pub fn new(rate: u64) -> Limiter {
        Limiter { rate: rate.max(1) as f64, next: Mutex::new(Instant::now()) }
    }

    /// Wait until `units` may pass. Units larger than a second's worth simply wait longer:
    /// an object is never refused for being big.
    pub async fn acquire(&self, units: u64) {
        let cost = Duration::from_secs_f64(units as f64 / self.rate);
        let allowed = {
            let mut next = self.next.lock().expect("poisoned");
            let now = Instant::now();
            // When these units would be through at the rate; they may start up to one
            // second (the burst) before that.
            let finish = (*next).max(now) + cost;
            *next = finish;
            finish.checked_sub(BURST).unwrap_or(now)
        };
        tokio::time::sleep_until(allowed).await;
    }
}

/// Limits several backends share: the pool's upload and download bandwidth.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// Upload bandwidth of all backends together.
    pub upload: Option<Arc<Limiter>>,
    /// Download bandwidth of all backends together.
    pub download: Option<Arc<Limiter>>,
}

impl Shared {
    /// Limiters for these rates (bytes per second); none for `None`.
    pub fn new(upload: Option<u64>, download: Option<u64>) -> Shared {
        Shared {
            upload: upload.map(|r| Arc::new(Limiter::new(r))),
            download: download.map(|r| Arc::new(Limiter::new(r))),
        }
    }
}

/// How far ahead of the rate a caller may run after being idle.
const BURST: Duration = Duration::from_secs(1);

/// Parse a rate such as `10MiB`, `500 KB`, `2m` or `1048576` (bytes per second).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().trim_end_matches("/s").trim_end_matches('b') {
        "" => 1.0,
        "k" | "ki" => 1024.0,
        "m" | "mi" => 1024.0 * 1024.0,
        "g" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "t" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * scale;
    (v >= 1.0 && v.is_finite()).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate_after_a_one_second_burst() {
        let limiter = Limiter::new(1000);
        tokio::time::sleep(Duration::from_secs(5)).await; // idle: earns at most 1 s of credit
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire(500).await;
        }
        // 5,000 units at 1,000/s, less the one-second burst: 4 s.
        let took = start.elapsed().as_secs_f64();
        assert!((3.9..4.1).contains(&took), "took {took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_unit_waits_instead_of_failing() {
        let limiter = Limiter::new(100);
        let start = Instant::now();
        limiter.acquire(1000).await;
        limiter.acquire(1).await;
        assert!(start.elapsed() >= Duration::from_secs(9));
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_bytes("10MiB"), Some(10 << 20));
        assert_eq!(parse_bytes("500 KB"), Some(500 << 10));
        assert_eq!(parse_bytes("2m/s"), Some(2 << 20));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("1.5k"), Some(1536));
        assert_eq!(parse_bytes("fast"), None);
        assert_eq!(parse_bytes("0"), None);
    }
}
