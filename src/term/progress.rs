//! Progress display on stderr: one total bar (bytes, rate, ETA, hosts done) and, in a
//! fan-out, a bar for each of a bounded number of active hosts.
//!
//! Owns: indicatif's MultiProgress and the rule of when bars appear (stderr is a terminal and
//! `-q` is absent). Invariant: lines printed while bars are visible go through [`Progress::line`]
//! so they never tear a bar. Must not know: what is being copied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    pub fn new(enabled: bool, hosts: usize) -> Arc<Progress> {
        let bars = enabled.then(|| {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(0));
            let template = if hosts > 1 {
                "{msg} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}"
            } else {
                "{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}"
            };
            total.set_style(style(template));
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
                bar.set_style(style(
                    "  {prefix:>15} {bytes}/{total_bytes} {bar:30} {binary_bytes_per_sec}",
                ));
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

    pub fn finish(&self) {
        if let Some((_, total)) = &self.bars {
            total.finish_and_clear();
        }
    }
}
