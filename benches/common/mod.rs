//! What both benchmarks share: the knobs (bench or smoke mode, runs, where
//! scratch directories go), the description of the machine printed beside
//! the figures, and medians.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The knobs both benchmarks read from the command line and environment.
pub struct Knobs {
    /// A measuring run: `cargo bench` passes `--bench`, while
    /// `cargo test --all-targets` runs bench targets bare, as a smoke test.
    pub full: bool,
    /// Runs per figure: `JAILTX_BENCH_REPS`, else 5 measuring, 1 smoke.
    pub reps: usize,
    /// Where scratch directories go: `JAILTX_BENCH_DIR`, else cargo's
    /// target/tmp (on the disk the project is on, never a tmpfs on purpose).
    pub base: PathBuf,
}

impl Knobs {
    pub fn from_env() -> Result<Knobs> {
        let full = std::env::args().any(|a| a == "--bench");
        Ok(Knobs {
            full,
            reps: env_usize("JAILTX_BENCH_REPS", if full { 5 } else { 1 })?.max(1),
            base: std::env::var_os("JAILTX_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR"))),
        })
    }

    /// A fresh scratch directory `PREFIX…` in the base dir (made if need
    /// be), removed when dropped.
    pub fn scratch(&self, prefix: &str) -> Result<tempfile::TempDir> {
        fs::create_dir_all(&self.base)
            .with_context(|| format!("create {}", self.base.display()))?;
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.base)?)
    }

    /// "bench", or `smoke` (what a smoke run's figures are worth).
    pub fn mode<'a>(&self, smoke: &'a str) -> &'a str {
        if self.full { "bench" } else { smoke }
    }
}

/// The number in environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// "N cores, kernel RELEASE", for the header of a run.
pub fn machine() -> String {
    format!(
        "{} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    )
}

/// Prints the load average and the scratch directory with its filesystem
/// (`tmpfs_note` naming a tmpfs: what this benchmark's figures would lack
/// there).
pub fn print_start(scratch: &Path, tmpfs_note: &str) {
    println!("load average at start: {}", loadavg());
    println!(
        "scratch: {} ({})",
        scratch.display(),
        fs_type(scratch, tmpfs_note)
    );
}

pub fn print_end() {
    println!("load average at end: {}", loadavg());
}

/// The 1, 5 and 15 minute load averages: on a shared machine they say how
/// much the other processes may have disturbed the figures.
fn loadavg() -> String {
    let s = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn fs_type(path: &Path, tmpfs_note: &str) -> String {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
        statfs,
    };
    let Ok(st) = statfs(path) else {
        return "unknown".into();
    };
    let t = st.filesystem_type();
    [
        (EXT4_SUPER_MAGIC, "ext2/3/4"),
        (XFS_SUPER_MAGIC, "xfs"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (TMPFS_MAGIC, tmpfs_note),
        (OVERLAYFS_SUPER_MAGIC, "overlayfs"),
    ]
    .into_iter()
    .find(|(m, _)| *m == t)
    .map_or_else(|| format!("magic {:#x}", t.0), |(_, n)| n.to_owned())
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `median (min–max)` of `v`: two decimals below 10, `coarse` above.
pub fn spread(v: &[f64], coarse: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p = if median(v) < 10.0 { 2 } else { coarse };
    format!("{:.p$} ({lo:.p$}–{hi:.p$})", median(v))
}
