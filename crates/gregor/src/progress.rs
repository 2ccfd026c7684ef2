//! A progress bar for the tools, on stderr, shown once an operation has taken a second
//! (and only when stderr is a terminal), so quick commands and scripts stay quiet.

use std::cell::Cell;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    shown: Cell<bool>,
    unit: &'static str,
}

impl Progress {
    /// `total` in bytes when known (a file's size), for a bar; else a spinner with counts.
    pub fn new(what: &str, total: Option<u64>) -> Self {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::hidden())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(
                ProgressStyle::with_template("{prefix} {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(what.to_string());
        Progress {
            bar,
            start: Instant::now(),
            shown: Cell::new(false),
            unit: "records",
        }
    }

    fn show_if_slow(&self) {
        if !self.shown.get() && self.start.elapsed() >= Duration::from_secs(1) {
            self.shown.set(true);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// `position` in bytes (for a bar) and the records so far, with their rate.
    pub fn set(&self, position: u64, records: u64) {
        self.show_if_slow();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_position(position);
        self.bar.set_message(format!(
            "{records} {} ({:.0}/s)",
            self.unit,
            records as f64 / secs
        ));
    }

    pub fn finish(&self, position: u64, records: u64) {
        self.show_if_slow();
        if self.shown.get() {
            self.set(position, records);
            self.bar.finish();
        } else {
            self.bar.finish_and_clear();
        }
    }
}
