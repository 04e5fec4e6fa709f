//! Showing progress: a bar with ETA when stderr is a terminal, plain periodic lines when it
//! is not, nothing when quiet.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::StatusCounts;

/// How an operation shows its progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    Auto,
    /// Always a bar.
    Bar,
    /// A line every few seconds.
    Lines,
    /// Nothing.
    #[default]
    Quiet,
}

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress display of one running operation.
#[derive(Debug)]
pub(crate) struct ProgressDisplay {
    bar: Option<ProgressBar>,
    lines: bool,
    started: Instant,
    last_line: Instant,
    name: String,
    /// The crashed count the bar's message shows.
    crashed_shown: u64,
    /// The ETA predicted from durations, in seconds as `f64` bits (NaN: none, the rate's).
    predicted_eta: Arc<AtomicU64>,
}

impl ProgressDisplay {
    /// A display for the operation `name` of `total` processes (if known).
    pub(crate) fn new(mode: ProgressMode, name: &str, total: Option<u64>) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        };
        let predicted_eta = Arc::new(AtomicU64::new(f64::NAN.to_bits()));
        let bar_eta = Arc::clone(&predicted_eta);
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({rate}, ETA {eta}) {msg}",
            )
            .map(|style| {
                style.with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate_text(state.per_sec()));
                })
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            // The predicted ETA when there is one, else indicatif's (from the rate).
            .with_key("eta", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let predicted = f64::from_bits(bar_eta.load(Ordering::Relaxed));
                let eta = if predicted.is_finite() { Duration::from_secs_f64(predicted) } else { state.eta() };
                let _ = write!(w, "{:#}", indicatif::HumanDuration(eta));
            });
            bar.set_style(style);
            bar.set_prefix(name.to_owned());
            bar
        });
        let now = Instant::now();
        ProgressDisplay {
            bar,
            lines: mode == ProgressMode::Lines,
            started: now,
            last_line: now,
            name: name.to_owned(),
            crashed_shown: 0,
            predicted_eta,
        }
    }

    /// Sets the ETA predicted from durations (seconds), shown instead of the rate's.
    pub(crate) fn set_predicted_eta(&mut self, eta_s: Option<f64>) {
        let eta = eta_s.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(f64::NAN);
        self.predicted_eta.store(eta.to_bits(), Ordering::Relaxed);
    }

    /// Shows the latest counts.
    pub(crate) fn update(&mut self, counts: &StatusCounts) {
        let done = counts.finished + counts.crashed;
        if let Some(bar) = &self.bar {
            if let Some(total) = counts.total.filter(|&t| bar.length() != Some(t)) {
                // The operation's length became known as its source ended.
                bar.set_length(total);
            }
            bar.set_position(done);
            if counts.crashed != self.crashed_shown {
                self.crashed_shown = counts.crashed;
                bar.set_message(format!("{} crashed", counts.crashed));
            }
        } else if self.lines && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(counts));
        }
    }

    /// Clears the bar (the caller prints its own summary).
    pub(crate) fn finish(&mut self, counts: &StatusCounts) {
        if let Some(bar) = self.bar.take() {
            bar.set_position(counts.finished + counts.crashed);
            bar.finish_and_clear();
        } else if self.lines {
            eprintln!("{}", self.line(counts));
        }
    }

    fn line(&self, counts: &StatusCounts) -> String {
        let done = counts.finished + counts.crashed;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
        let rate_shown = rate_text(rate);
        // Until the source of an operation of unknown length ends, what has started is a
        // lower bound of the total.
        let total =
            counts.total.map(|t| t.to_string()).unwrap_or_else(|| format!("at least {}", done + counts.running));
        let predicted = f64::from_bits(self.predicted_eta.load(Ordering::Relaxed));
        let eta = match counts.total {
            _ if predicted.is_finite() => format!(", ETA {predicted:.0} s"),
            Some(t) if rate > 0.0 && t >= done => format!(", ETA {:.0} s", (t - done) as f64 / rate),
            _ => String::new(),
        };
        format!(
            "{}: {done}/{total} done ({} crashed, {} running), {rate_shown}{eta}",
            self.name, counts.crashed, counts.running
        )
    }
}

/// A rate of processes as the progress display shows it: always two decimals (`0.05/s`,
/// `12.00/s`, `48213.57/s`), so the line does not change width or precision as it runs.
pub(crate) fn rate_text(rate: f64) -> String {
    let rate = if rate.is_finite() && rate >= 0.0 { rate } else { 0.0 };
    format!("{rate:.2}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_two_decimals() {
        assert_eq!(rate_text(0.049), "0.05/s");
        assert_eq!(rate_text(12.0), "12.00/s");
        assert_eq!(rate_text(48213.5712), "48213.57/s");
        assert_eq!(rate_text(f64::NAN), "0.00/s");
    }
}
