//! Progress display on stderr: one total bar (bytes, rate, ETA, hosts done) and, in a
//! fan-out, a bar for each of a bounded number of active hosts; when the copy ends, one final
//! line with the total, the time and the rate stays on screen, as scp leaves its own.
//!
//! Owns: indicatif's MultiProgress, the rule of when bars appear (stderr is a terminal and
//! `-q` is absent) and what the bars claim. Invariants: lines printed while bars are visible go
//! through [`Progress::line`] so they never tear a bar; a rate is bytes divided by the time
//! since the first byte moved (the meter restarts a bar's clock then), never indicatif's
//! smoothed estimate, which counts the key fetch and the login as idle transfer time; a bar
//! whose total is not known yet shows no size and an empty bar, not `0 B/0 B` full; the
//! total shown never goes below the bytes done, and the bar never moves backwards when a
//! recursive copy finds more files. Must not know: what is being copied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{BinaryBytes, MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use crate::ssh::transfer::Meter;

/// Most per-host bars on screen at once; more would scroll the total bar away.
const MAX_HOST_BARS: usize = 4;

pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    hosts: usize,
    done: AtomicUsize,
    shown: AtomicUsize,
}

/// A host's bar, removed from the screen when dropped.
pub struct HostBar {
    progress: Arc<Progress>,
    bar: Option<ProgressBar>,
}

impl Drop for HostBar {
    fn drop(&mut self) {
        if let (Some(bar), Some((multi, _))) = (self.bar.take(), &self.progress.bars) {
            bar.finish_and_clear();
            multi.remove(&bar);
            self.progress.shown.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A bar's style: `template` with the keys below, which replace indicatif's `bytes`,
/// `total_bytes`, `bar`, `binary_bytes_per_sec` and `eta` by ones that tell the truth.
///
/// - `{amount}`: `done/total`, or `starting` before any file's size is known;
/// - `{fill}`: a bar `width` cells wide, empty while the total is unknown, never shrinking;
/// - `{rate}`: bytes since the first byte divided by the time since it;
/// - `{left}`: the time the rest takes at that rate.
fn style(template: &str, width: usize) -> ProgressStyle {
    let high_water = Arc::new(AtomicUsize::new(0));
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "amount",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&amount(state.pos(), state.len()));
            },
        )
        .with_key(
            "fill",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&fill(state.pos(), state.len(), width, &high_water));
            },
        )
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = match rate(state.pos(), state.elapsed()) {
                    Some(rate) => write!(w, "{}/s", BinaryBytes(rate)),
                    None => write!(w, "-"),
                };
            },
        )
        .with_key(
            "left",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let remaining = shown_total(state).saturating_sub(state.pos());
                let _ = match rate(state.pos(), state.elapsed()) {
                    Some(rate) if rate > 0 => {
                        let seconds = remaining / rate;
                        write!(w, "{:02}:{:02}", seconds / 60, seconds % 60)
                    }
                    _ => write!(w, "--:--"),
                };
            },
        )
}

/// The total a bar shows: its length, or the bytes already done if more (a server may send
/// more than it announced), so the shown total never goes backwards.
fn shown_total(state: &ProgressState) -> u64 {
    total_of(state.pos(), state.len())
}

fn total_of(pos: u64, len: Option<u64>) -> u64 {
    len.unwrap_or(0).max(pos)
}

/// `done/total`, or `starting` while no size is known.
fn amount(pos: u64, len: Option<u64>) -> String {
    match total_of(pos, len) {
        0 => "starting".to_owned(),
        total => format!("{}/{}", BinaryBytes(pos), BinaryBytes(total)),
    }
}

/// A bar `width` cells wide: empty while no size is known; `high_water` keeps the furthest
/// cell reached, so a recursive copy's bar does not jump back when it finds more files.
fn fill(pos: u64, len: Option<u64>, width: usize, high_water: &AtomicUsize) -> String {
    let cells = match total_of(pos, len) {
        0 => 0,
        total => (pos as f64 / total as f64 * width as f64) as usize,
    };
    let cells = high_water
        .fetch_max(cells, Ordering::Relaxed)
        .max(cells)
        .min(width);
    format!("{}{}", "#".repeat(cells), "-".repeat(width - cells))
}

/// Bytes per second over `elapsed`, or None before anything moved. Under 10 ms the figure
/// would be noise.
fn rate(bytes: u64, elapsed: Duration) -> Option<u64> {
    let seconds = elapsed.as_secs_f64();
    (bytes > 0 && seconds >= 0.01).then(|| (bytes as f64 / seconds) as u64)
}

/// The line left on screen when a copy ends: `200.0 MiB in 0.56 s, 357.1 MiB/s`, plus the
/// host count in a fan-out.
fn final_line(bytes: u64, elapsed: Duration, hosts: Option<usize>) -> String {
    let rate = rate(bytes, elapsed)
        .map(|r| format!(", {}/s", BinaryBytes(r)))
        .unwrap_or_default();
    let hosts = hosts.map(|n| format!(" ({n} hosts)")).unwrap_or_default();
    format!(
        "{} in {:.2} s{rate}{hosts}",
        BinaryBytes(bytes),
        elapsed.as_secs_f64()
    )
}

impl Progress {
    pub fn new(enabled: bool, hosts: usize) -> Arc<Progress> {
        let bars = enabled.then(|| {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(0));
            let template = if hosts > 1 {
                "{msg} {amount} {fill} {rate} ETA {left}"
            } else {
                "{amount} {fill} {rate} ETA {left}"
            };
            total.set_style(style(template, 40));
            if hosts > 1 {
                total.set_message(format!("hosts 0/{hosts}"));
            }
            (multi, total)
        });
        Arc::new(Progress {
            bars,
            hosts,
            done: AtomicUsize::new(0),
            shown: AtomicUsize::new(0),
        })
    }

    /// The meter for one host's transfers, and its bar if one is free.
    pub fn host(self: &Arc<Progress>, label: &str, limit_kbits: Option<u64>) -> (Meter, HostBar) {
        let mut bars = Vec::new();
        let mut host_bar = None;
        if let Some((multi, total)) = &self.bars {
            bars.push(total.clone());
            if self.hosts > 1 && self.shown.fetch_add(1, Ordering::Relaxed) < MAX_HOST_BARS {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style("  {prefix:>15} {amount} {fill} {rate}", 30));
                bar.set_prefix(crate::term::escape::visible(label).into_owned());
                bars.push(bar.clone());
                host_bar = Some(bar);
            } else if self.hosts > 1 {
                self.shown.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let guard = HostBar {
            progress: Arc::clone(self),
            bar: host_bar,
        };
        (Meter::new(bars, limit_kbits), guard)
    }

    pub fn host_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some((_, total)) = &self.bars {
            if self.hosts > 1 {
                total.set_message(format!("hosts {done}/{}", self.hosts));
            }
        }
    }

    /// Prints one line to stderr without tearing the bars.
    pub fn line(&self, text: &str) {
        let text = crate::term::escape::visible(text);
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Ends the display: the bars go, and a line with the total, the time since the first
    /// byte and the rate stays, as scp's last line does. Nothing stays when nothing moved.
    pub fn finish(&self) {
        if let Some((_, total)) = &self.bars {
            if total.is_finished() {
                return;
            }
            let (bytes, elapsed) = (total.position(), total.elapsed());
            total.finish_and_clear();
            if bytes > 0 {
                let hosts = (self.hosts > 1).then_some(self.hosts);
                eprintln!("{}", final_line(bytes, elapsed, hosts));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_from_the_first_byte_only() {
        // 200 MB in 0.56 s is about 340 MiB/s, whatever happened before the first byte.
        let rate = rate(200_000_000, Duration::from_millis(560)).expect("a rate");
        assert_eq!(rate / (1 << 20), 340);
        assert_eq!(super::rate(0, Duration::from_secs(3)), None);
        assert_eq!(super::rate(5, Duration::ZERO), None);
    }

    #[test]
    fn the_final_line_names_size_time_and_rate() {
        assert_eq!(
            final_line(200 * (1 << 20), Duration::from_millis(560), None),
            "200.00 MiB in 0.56 s, 357.14 MiB/s"
        );
        assert_eq!(
            final_line(3 << 20, Duration::from_secs(1), Some(4)),
            "3.00 MiB in 1.00 s, 3.00 MiB/s (4 hosts)"
        );
    }

    #[test]
    fn bars_start_empty_and_never_go_backwards() {
        let high_water = AtomicUsize::new(0);
        // Before any size is known: no `0 B/0 B`, no full bar.
        assert_eq!(amount(0, Some(0)), "starting");
        assert_eq!(fill(0, Some(0), 10, &high_water), "----------");
        assert_eq!(fill(50, Some(100), 10, &high_water), "#####-----");
        // A recursive copy finds more files: the total grows, the bar stays where it was.
        assert_eq!(fill(60, Some(1000), 10, &high_water), "#####-----");
        assert_eq!(fill(1000, Some(1000), 10, &high_water), "##########");
        // A server that sends more than it announced: the total shown is what came.
        assert_eq!(amount(2048, Some(1024)), "2.00 KiB/2.00 KiB");
    }
}
