//! Running a crash matrix: its cases side by side, filtered and sized by
//! the environment, every failure listed at the end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Instant as Clock;

use super::{report_failure, run_isolated};

/// `JAILTX_FULL_MATRIX=1`: every case, not the default subset.
pub fn full_matrix() -> bool {
    std::env::var("JAILTX_FULL_MATRIX").is_ok_and(|v| v == "1")
}

/// Parallel cases per matrix (`JAILTX_MATRIX_JOBS`, default 3): each case
/// has its own root and addresses, and mostly waits on fsync and jails.
pub fn jobs() -> usize {
    std::env::var("JAILTX_MATRIX_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// Runs the labelled `cases` whose label contains `JAILTX_MATRIX_ONLY`,
/// [`jobs`] at a time, each isolated from the others' panics. Returns how
/// many ran and one line per failed case.
pub fn run_cases<C: Sync>(
    cases: Vec<(String, C)>,
    run: impl Fn(&C) -> Result<(), Vec<String>> + Sync,
) -> (usize, Vec<String>) {
    let only = std::env::var("JAILTX_MATRIX_ONLY").unwrap_or_default();
    let todo: Vec<(String, C)> = cases
        .into_iter()
        .filter(|(label, _)| label.contains(&only))
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs() {
            s.spawn(|| {
                while let Some((label, case)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t = Clock::now();
                    let result = run_isolated(|| run(case));
                    let took = t.elapsed().as_secs_f64();
                    match result {
                        Ok(()) => println!("ok   {label} ({took:.2} s)"),
                        Err(bad) => failures.lock().unwrap().push(report_failure(label, &bad)),
                    }
                }
            });
        }
    });
    (todo.len(), failures.into_inner().unwrap())
}
