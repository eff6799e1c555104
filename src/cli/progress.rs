//! Progress bars on a terminal (stderr), nothing otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows one operation's progress: bytes with speed and ETA once the total is known, and
/// the item count in the message.
pub struct Bar {
    bar: Option<ProgressBar>,
    /// `-v` count: 1 prints notes, 2 also every entry.
    verbose: u8,
    items: AtomicU64,
    total_items: AtomicU64,
    /// The bar counts items (objects) rather than bytes.
    counting: AtomicBool,
}

impl Bar {
    pub fn new(json: bool) -> Bar {
        let show = !json && std::io::stderr().is_terminal();
        // Hidden until a phase begins, so opening a pool with nothing to do draws nothing.
        let bar = show.then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()));
        Bar {
            bar,
            verbose: 0,
            items: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            counting: AtomicBool::new(false),
        }
    }

    /// With `-v` (1) or `-vv` (2); the detail goes to standard output, as restic's, and not
    /// with `--json`.
    pub fn verbose(mut self, level: u8, json: bool) -> Bar {
        self.verbose = if json { 0 } else { level };
        self
    }

    /// A line on standard output, above the bar if one is drawn.
    fn say(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn style(&self, known_total: bool) {
        let Some(b) = &self.bar else { return };
        let template = if known_total {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"
        } else {
            "{prefix} {spinner} {bytes} {binary_bytes_per_sec} {msg}"
        };
        b.set_style(styled(template).progress_chars("=> "));
    }

    fn message(&self) {
        if let Some(b) = &self.bar {
            let (n, t) = (self.items.load(Ordering::Relaxed), self.total_items.load(Ordering::Relaxed));
            b.set_message(if t > 0 { format!("{n}/{t} items") } else { format!("{n} items") });
        }
    }
}

/// A style whose `{eta}` is the time left at the mean rate since the phase began, shown
/// once it has run a second: indicatif's own follows the latest rate, and work that advances
/// in bursts (whole chunks, whole files) made it jump from "0s" to "43s" in a 4 s restore.
fn styled(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").with_key(
        "eta",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let (pos, len) = (state.pos(), state.len().unwrap_or(0));
            let elapsed = state.elapsed().as_secs_f64();
            if pos == 0 || len <= pos || elapsed < 1.0 {
                let _ = w.write_str("-");
                return;
            }
            let left = ((len - pos) as f64 * elapsed / pos as f64).ceil() as u64;
            let _ = write!(w, "{}", humantime::format_duration(Duration::from_secs(left)));
        },
    )
}

impl cuckoo::Progress for Bar {
    fn begin(&self, phase: &str, total_items: Option<u64>, total_bytes: Option<u64>) {
        self.items.store(0, Ordering::Relaxed);
        self.total_items.store(total_items.unwrap_or(0), Ordering::Relaxed);
        let counting = total_bytes.is_none() && total_items.is_some();
        self.counting.store(counting, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.reset();
            b.set_prefix(phase.to_string());
            self.style(total_bytes.is_some());
            b.set_length(total_bytes.unwrap_or(0));
            if counting {
                b.set_style(styled("{prefix} [{bar:30}] {pos}/{len} ETA {eta}"));
                b.set_length(total_items.unwrap_or(0));
            }
            b.set_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            b.enable_steady_tick(Duration::from_millis(250));
        }
        self.message();
    }

    fn totals(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            self.style(true);
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            if self.counting.load(Ordering::Relaxed) {
                b.inc(items);
            } else {
                b.inc(bytes);
            }
        }
        if items > 0 {
            self.message();
        }
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {message}")),
            None => eprintln!("cuckoo: warning: {message}"),
        }
    }

    fn note(&self, message: &str) {
        if self.verbose >= 1 {
            self.say(message);
        }
    }

    fn entry(&self, event: cuckoo::EntryEvent, path: &std::path::Path) {
        if self.verbose >= 2 {
            let what = match event {
                cuckoo::EntryEvent::New => "new",
                cuckoo::EntryEvent::Modified => "modified",
                cuckoo::EntryEvent::Unchanged => "unchanged",
                cuckoo::EntryEvent::Restored => "restored",
            };
            self.say(&format!("{what:<10}{}", path.display()));
        }
    }

    fn end(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            b.disable_steady_tick();
            b.set_draw_target(ProgressDrawTarget::hidden());
        }
    }
}
