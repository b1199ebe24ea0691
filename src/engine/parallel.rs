//! Running one journaled batch's independent per-jail chains concurrently.
//!
//! A batch (see `batch_end`) is consecutive mount/unmount/start/stop steps
//! and the health check, under one intent and one done record. Its steps on
//! one jail depend on each other (a stop before the unmount of `s`, `s`
//! before the root, the root before `s` again, both before the start), its
//! steps on different jails do not. So the batch splits into *segments*,
//! cut at every step that is not about one kernel resource (the health
//! check: it looks at every jail at once and runs alone, after all that
//! comes before it), and each segment into *chains*: the steps whose paths
//! nest (a jail's root, its `s`, the jail itself, all under one path), in
//! plan order. Chains run on at most `threads` threads; a chain's steps run
//! one after another on one thread.
//!
//! The journal does not change: whichever of the batch's steps ran, and in
//! whatever order, "intent without done" already covers it, because every
//! batchable step and its undo are correct whether or not it ran.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant as Clock;

use crate::plan::{Action, Step};

/// The path a step's effect lives under, for steps that may run beside
/// steps on other paths; `None` for a step that must run alone.
fn lane_path(a: &Action) -> Option<&Path> {
    match a {
        Action::Mount { dst, .. } | Action::Unmount { dst, .. } => Some(dst),
        Action::StartJail { jail } | Action::StopJail { jail } => Some(&jail.path),
        _ => None,
    }
}

/// One group of steps that runs as a unit: either chains that may run side
/// by side, or a single step that must run alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Each chain's step indices, ascending; chains ordered by first step.
    pub chains: Vec<Vec<usize>>,
}

/// Splits the steps `first..=last` into segments (see the module doc).
pub fn segments(steps: &[Step], first: usize, last: usize) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut open: Vec<(Vec<&Path>, Vec<usize>)> = Vec::new();
    let close = |open: &mut Vec<(Vec<&Path>, Vec<usize>)>, out: &mut Vec<Segment>| {
        if !open.is_empty() {
            let mut chains: Vec<Vec<usize>> = open.drain(..).map(|(_, c)| c).collect();
            chains.sort();
            out.push(Segment { chains });
        }
    };
    for (k, step) in steps.iter().enumerate().take(last + 1).skip(first) {
        let Some(p) = lane_path(&step.action) else {
            close(&mut open, &mut out);
            out.push(Segment {
                chains: vec![vec![k]],
            });
            continue;
        };
        // Every chain this path nests with joins one: a step that relates
        // two chains (never in the planners' plans) orders them both.
        let related =
            |paths: &Vec<&Path>| paths.iter().any(|q| q.starts_with(p) || p.starts_with(q));
        let mut joined: (Vec<&Path>, Vec<usize>) = (vec![p], vec![k]);
        let mut rest = Vec::new();
        for chain in open.drain(..) {
            if related(&chain.0) {
                joined.0.extend(chain.0);
                joined.1.extend(chain.1);
            } else {
                rest.push(chain);
            }
        }
        joined.1.sort_unstable();
        rest.push(joined);
        open = rest;
    }
    close(&mut open, &mut out);
    out
}

/// What became of one step of a segment that was started.
#[derive(Debug)]
pub struct Ran<E> {
    pub index: usize,
    pub start_us: u64,
    pub end_us: u64,
    pub result: Result<(), E>,
}

/// Runs `seg`'s chains on up to `threads` threads, each step through `run`.
/// After a step fails no step starts any more, on any thread; the steps in
/// flight finish. Returns the steps that started, in index order.
pub fn run_segment<E: Send>(
    seg: &Segment,
    threads: usize,
    clock: Clock,
    run: &(dyn Fn(usize) -> Result<(), E> + Sync),
) -> Vec<Ran<E>> {
    let failed = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let ran = Mutex::new(Vec::new());
    let work = || {
        while let Some(chain) = seg.chains.get(next.fetch_add(1, Ordering::SeqCst)) {
            for &k in chain {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let start_us = clock.elapsed().as_micros() as u64;
                let result = run(k);
                let end_us = clock.elapsed().as_micros() as u64;
                let bad = result.is_err();
                if bad {
                    failed.store(true, Ordering::SeqCst);
                }
                ran.lock().unwrap_or_else(|e| e.into_inner()).push(Ran {
                    index: k,
                    start_us,
                    end_us,
                    result,
                });
                if bad {
                    return;
                }
            }
        }
    };
    let threads = threads.clamp(1, seg.chains.len().max(1));
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    let mut ran = ran.into_inner().unwrap_or_else(|e| e.into_inner());
    ran.sort_by_key(|r| r.index);
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::JailSpec;
    use std::path::PathBuf;

    fn jail(name: &str) -> JailSpec {
        JailSpec {
            name: name.into(),
            path: PathBuf::from("/j").join(name),
            hostname: name.into(),
            ip: "127.0.0.2".into(),
            exec_start: "true".into(),
            exec_stop: String::new(),
            stop_timeout_secs: 0,
        }
    }

    fn step(name: &str, action: Action) -> Step {
        Step {
            name: name.into(),
            action,
        }
    }

    fn unmount(dst: &str) -> Action {
        Action::Unmount {
            src: "/x".into(),
            dst: dst.into(),
            read_only: true,
        }
    }

    /// The window's first batch and its second, as the upgrade plans them.
    #[test]
    fn chains_per_jail_and_the_health_check_alone() {
        let steps = vec![
            step("stop-a", Action::StopJail { jail: jail("a") }),
            step("stop-b", Action::StopJail { jail: jail("b") }),
            step("unmount-s-a", unmount("/j/a/s")),
            step("unmount-root-a", unmount("/j/a")),
            step("unmount-s-b", unmount("/j/b/s")),
            step("unmount-root-b", unmount("/j/b")),
            step("unmount-root-c", unmount("/j/c")),
            step("start-a", Action::StartJail { jail: jail("a") }),
            step(
                "health-check",
                Action::HealthCheck {
                    jails: vec![],
                    timeout_secs: 1,
                },
            ),
            step("start-b", Action::StartJail { jail: jail("b") }),
        ];
        let segs = segments(&steps, 0, 9);
        assert_eq!(
            segs,
            vec![
                Segment {
                    chains: vec![vec![0, 2, 3, 7], vec![1, 4, 5], vec![6]]
                },
                Segment {
                    chains: vec![vec![8]]
                },
                Segment {
                    chains: vec![vec![9]]
                },
            ]
        );
        // A sub-range is split the same way.
        assert_eq!(
            segments(&steps, 1, 3),
            vec![Segment {
                chains: vec![vec![1], vec![2, 3]]
            }]
        );
    }

    /// A step whose path nests in two chains' paths merges them.
    #[test]
    fn a_step_relating_two_chains_orders_them() {
        let steps = vec![
            step("a", unmount("/j/a/s")),
            step("b", unmount("/j/b/s")),
            step("j", unmount("/j")),
        ];
        assert_eq!(
            segments(&steps, 0, 2),
            vec![Segment {
                chains: vec![vec![0, 1, 2]]
            }]
        );
    }

    #[test]
    fn after_a_failure_no_step_starts() {
        let seg = Segment {
            chains: vec![vec![0, 2], vec![1, 3]],
        };
        // One thread: chain 0 runs, step 2 fails, chain 1 never starts.
        let ran = run_segment(&seg, 1, Clock::now(), &|k| {
            if k == 2 { Err(k) } else { Ok(()) }
        });
        let got: Vec<(usize, bool)> = ran.iter().map(|r| (r.index, r.result.is_ok())).collect();
        assert_eq!(got, vec![(0, true), (2, false)]);
    }

    /// Two chains on two threads overlap: each waits for the other to have
    /// started before it finishes, which one thread would never see.
    #[test]
    fn chains_run_side_by_side() {
        let seg = Segment {
            chains: vec![vec![0], vec![1]],
        };
        let started = AtomicUsize::new(0);
        let ran = run_segment(&seg, 2, Clock::now(), &|_| {
            started.fetch_add(1, Ordering::SeqCst);
            let until = Clock::now() + std::time::Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < 2 {
                if Clock::now() > until {
                    return Err("the other chain never started alongside");
                }
                std::thread::yield_now();
            }
            Ok(())
        });
        assert!(ran.iter().all(|r| r.result.is_ok()), "{ran:?}");
        assert_eq!(ran.len(), 2);
    }
}
