//! Progress bars for work that can take a while (loading many files, the
//! rows of a matrix, the lines of a flow file). A bar is drawn on stderr
//! only when stderr is a terminal, and only once its work has run for a
//! second: a quick run or a pipe prints nothing, so scripted output and
//! golden tests never see a bar.
//!
//! ```ignore
//! let p = progress::bar("matrix rows", total);
//! for row in rows { write(row)?; p.inc(1); }
//! p.finish(); // or drop it: the line is cleared either way
//! ```

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before its bar appears.
const DELAY: Duration = Duration::from_secs(1);

/// One bar. Every method takes `&self`, so a bar can be shared by the
/// closures and `Serialize` impls that do the work.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    /// Whether the bar may ever be drawn (stderr is a terminal).
    tty: bool,
    shown: AtomicBool,
}

/// A bar counting `len` items (`what` names them: "files", "rows").
pub fn bar(what: &str, len: u64) -> Progress {
    new(
        what,
        len,
        "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({eta})",
    )
}

/// A bar counting `len` bytes, for a stream whose items (lines) are not
/// known in advance but whose size is.
pub fn bytes(what: &str, len: u64) -> Progress {
    new(
        what,
        len,
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})",
    )
}

fn new(what: &str, len: u64, template: &str) -> Progress {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    Progress {
        bar,
        start: Instant::now(),
        tty: std::io::stderr().is_terminal(),
        shown: AtomicBool::new(false),
    }
}

impl Progress {
    /// Counts `n` more items (or bytes) done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.show_when_slow();
    }

    /// Sets how far the work is.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.show_when_slow();
    }

    /// Starts another phase of the same work: a new name and length, the
    /// count back at zero (the bar stays visible if it was).
    pub fn restart(&self, what: &str, len: u64) {
        self.bar.set_message(what.to_string());
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.show_when_slow();
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn show_when_slow(&self) {
        if !self.tty || self.shown.load(Ordering::Relaxed) || self.start.elapsed() < DELAY {
            return;
        }
        if !self.shown.swap(true, Ordering::Relaxed) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            // Keeps the elapsed time and rate moving while one step is slow.
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
