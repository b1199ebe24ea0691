//! Racily clean files at build time: the template filesystem's own timestamp clock, and waiting one of its ticks (not a fixed second) before reading the last-changed files again.
//!
//! A file's cached stat vouches for its hash only if no change made after
//! the file was read can leave its ctime as it was. A change gets the ctime
//! the filesystem's clock shows at that moment, and that clock only moves
//! forward (unless the system clock is set back, which `--quick` never
//! claims to survive). So if a value `F` was a ctime the filesystem handed
//! out *before* a file was read, every later change to that file gets a
//! ctime `>= F`; a file read after `F` was taken whose ctime is `< F` cannot
//! change without its ctime changing. Files with a ctime `>= F` are *racy*
//! (git's term): they may have changed again within the same tick.
//!
//! `F` is measured, not assumed: [`RootClock`] touches the template root
//! (its atime, which sets its ctime) and reads the ctime back. That is the
//! same filesystem, so the same clock and the same granularity, whatever
//! they are: a jiffy on Linux's coarse clock, nothing at all with
//! multigrain timestamps, whole seconds on some filesystems. Waiting until
//! `F` has passed the newest racy ctime is waiting exactly one tick of that
//! filesystem; the old code slept a fixed second on every build.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat, futimens};
use nix::sys::time::TimeSpec;

use super::ManifestError;
use super::walk::{Meta, Node};

/// Where the root cannot be touched (a read-only mount, an immutable
/// flag), the floor is the system clock less this: the coarsest timestamp
/// granularity a template's filesystem is assumed to have.
const FALLBACK_SLACK_NS: i64 = 1_000_000_000;

/// Rounds of waiting out racy files, at most. A file still racy after them
/// (someone keeps writing it) simply stays racy: `--quick` hashes it every
/// time, which is slower, never wrong.
const SETTLE_ROUNDS: usize = 3;

/// The longest a build waits, over all rounds, for the filesystem's clock
/// to pass the newest racy ctime: one tick of the coarsest timestamps
/// (FAT's two seconds) with room. A ctime further ahead was stamped by a
/// clock since set back; such files stay racy.
const MAX_WAIT: Duration = Duration::from_millis(2_500);

/// Polling the filesystem's clock: the first wait, doubled up to the last.
/// A tick is unknown beforehand; doubling finds a jiffy in a few probes and
/// a whole second in about twenty.
const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(64);

/// The template filesystem's timestamp clock.
pub(super) trait FsClock {
    /// A ctime value such that every change made to any file of the
    /// template after this call returns gets a ctime at or after it.
    fn floor(&mut self) -> i64;
    fn sleep(&mut self, d: Duration);
}

/// [`FsClock`] of the filesystem holding the template root.
pub(super) struct RootClock {
    /// The root, opened without following a link; none once touching it
    /// failed (the fallback is then used for the rest of the build).
    fd: Option<OwnedFd>,
}

impl RootClock {
    /// Never fails: a root that cannot be opened is the walk's to report;
    /// until then the fallback clock serves.
    pub(super) fn open(dir: &Path) -> RootClock {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        RootClock {
            fd: open(dir, flags, Mode::empty()).ok(),
        }
    }

    /// Sets the root's atime to now, which stamps its ctime with the
    /// filesystem's clock, and reads that ctime. The atime is recorded
    /// nowhere; a directory's times are never compared.
    fn probe(&self) -> Option<i64> {
        let fd = self.fd.as_ref()?;
        futimens(fd, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_OMIT).ok()?;
        let st = fstat(fd).ok()?;
        let ctime = Meta::from(&st).ctime_ns;
        // A ctime just stamped lies at or before the system clock read
        // after it. One beyond it was not stamped now (a filesystem that
        // ignores the touch, keeping a ctime from before the clock was set
        // back): as a floor it would vouch for files it must not.
        (ctime <= now_ns()).then_some(ctime)
    }
}

impl FsClock for RootClock {
    fn floor(&mut self) -> i64 {
        match self.probe() {
            Some(ctime) => ctime,
            None => {
                self.fd = None;
                now_ns().saturating_sub(FALLBACK_SLACK_NS)
            }
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Whether the stat cache cannot vouch for node `n`'s hash under `floor`.
/// Only regular files: everything else is compared in full by every audit.
pub(super) fn is_racy(n: &Node, floor: i64) -> bool {
    n.meta.is(SFlag::S_IFREG) && n.meta.ctime_ns >= floor
}

/// Makes racy files clean, so that `--quick` does not hash them forever (a
/// template's manifest is written once, right after its files were made).
/// `floor` was taken from `clock` before `nodes` were read. For the files
/// changed in that last tick (the last ones `populate` copied, typically),
/// this waits until the filesystem's clock has passed their ctime, then
/// `reread`s them (stat, then hash): any later change gives them a new
/// ctime. Returns the threshold to store as [`super::StatCache::racy_ns`].
pub(super) fn settle(
    nodes: &mut [Node],
    mut floor: i64,
    clock: &mut dyn FsClock,
    reread: &mut dyn FnMut(&mut Node) -> Result<(), ManifestError>,
) -> Result<i64, ManifestError> {
    let mut waited = Duration::ZERO;
    for _ in 0..SETTLE_ROUNDS {
        let racy: Vec<usize> = (0..nodes.len())
            .filter(|&i| is_racy(&nodes[i], floor))
            .collect();
        let Some(newest) = racy.iter().map(|&i| nodes[i].meta.ctime_ns).max() else {
            break;
        };
        let mut poll = FIRST_POLL;
        let next = loop {
            let f = clock.floor();
            if f > newest {
                break Some(f);
            }
            if waited >= MAX_WAIT {
                break None;
            }
            clock.sleep(poll);
            waited += poll;
            poll = (poll * 2).min(MAX_POLL);
        };
        // Gave up: the racy files keep the floor they were read under.
        let Some(next) = next else {
            break;
        };
        // `next` precedes these reads, and every other file's ctime lies
        // below the old floor, itself below `next` (racy files' ctimes are
        // at or above it): one threshold serves all.
        for &i in &racy {
            reread(&mut nodes[i])?;
        }
        floor = next;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000 * MS;

    /// A filesystem clock ticking every `tick` ns; `now` is shared with
    /// the test, which may write files "now".
    struct Fake {
        now: Rc<Cell<i64>>,
        tick: i64,
        slept: Duration,
    }

    impl Fake {
        fn new(now: &Rc<Cell<i64>>, tick: i64) -> Fake {
            Fake {
                now: Rc::clone(now),
                tick,
                slept: Duration::ZERO,
            }
        }
    }

    impl FsClock for Fake {
        fn floor(&mut self) -> i64 {
            let now = self.now.get();
            now - now % self.tick
        }
        fn sleep(&mut self, d: Duration) {
            self.now.set(self.now.get() + d.as_nanos() as i64);
            self.slept += d;
        }
    }

    fn node(path: &str, mode: u32, ctime_ns: i64) -> Node {
        Node {
            path: path.as_bytes().to_vec(),
            meta: Meta {
                mode,
                uid: 0,
                gid: 0,
                size: 1,
                ino: 1,
                dev: 1,
                nlink: 1,
                rdev: 0,
                mtime_ns: 0,
                ctime_ns,
            },
            target: None,
            blake3: None,
            foreign: false,
            entry: None,
        }
    }

    const FILE: u32 = 0o100644;
    const DIR: u32 = 0o040755;

    /// Runs settle on `nodes` with `clock`, the floor taken first; returns
    /// (threshold, paths reread in order).
    fn run(clock: &mut Fake, nodes: &mut [Node]) -> (i64, Vec<String>) {
        let floor = clock.floor();
        let mut reread = Vec::new();
        let t = settle(nodes, floor, clock, &mut |n: &mut Node| {
            reread.push(String::from_utf8(n.path.clone()).unwrap());
            Ok(())
        })
        .unwrap();
        (t, reread)
    }

    #[test]
    fn only_files_stamped_in_the_current_tick_are_racy() {
        let floor = 10 * S;
        assert!(!is_racy(&node("old", FILE, floor - 1), floor));
        assert!(is_racy(&node("same tick", FILE, floor), floor));
        assert!(is_racy(&node("later", FILE, floor + 1), floor));
        assert!(
            !is_racy(&node("dir", DIR, floor), floor),
            "dirs are compared in full"
        );
    }

    #[test]
    fn a_nanosecond_filesystem_waits_one_tick_not_a_second() {
        // Linux's coarse clock: a 4 ms jiffy. The last files were copied in
        // the current tick, the rest before it.
        let now = Rc::new(Cell::new(100 * S + 4 * MS * 7 + MS));
        let mut clock = Fake::new(&now, 4 * MS);
        let tick_start = clock.floor();
        let mut nodes = vec![
            node("a", FILE, tick_start - 3 * MS),
            node("b", FILE, tick_start),
            node("c", FILE, tick_start),
            node("d", DIR, tick_start),
        ];
        let (t, reread) = run(&mut clock, &mut nodes);
        assert_eq!(reread, ["b", "c"], "only the racy files are read again");
        assert!(clock.slept <= Duration::from_millis(8), "{:?}", clock.slept);
        assert_eq!(t, tick_start + 4 * MS, "the next tick");
        assert!(nodes.iter().all(|n| !is_racy(n, t)), "all clean after");
    }

    #[test]
    fn a_whole_second_filesystem_waits_for_the_next_second() {
        let now = Rc::new(Cell::new(100 * S + 300 * MS));
        let mut clock = Fake::new(&now, S);
        let mut nodes = vec![node("a", FILE, 99 * S), node("b", FILE, 100 * S)];
        let (t, reread) = run(&mut clock, &mut nodes);
        assert_eq!(reread, ["b"]);
        assert_eq!(t, 101 * S);
        assert!(now.get() >= 101 * S && now.get() < 101 * S + 64 * MS);
    }

    #[test]
    fn nothing_racy_means_no_wait_at_all() {
        let now = Rc::new(Cell::new(100 * S + 2 * MS));
        let mut clock = Fake::new(&now, 4 * MS);
        let mut nodes = vec![node("a", FILE, 99 * S), node("d", DIR, 100 * S)];
        let (t, reread) = run(&mut clock, &mut nodes);
        assert!(reread.is_empty());
        assert_eq!((t, clock.slept), (100 * S, Duration::ZERO));
    }

    #[test]
    fn a_file_written_during_every_round_stays_racy() {
        let now = Rc::new(Cell::new(100 * S));
        let mut clock = Fake::new(&now, 4 * MS);
        let mut nodes = vec![node("busy", FILE, 100 * S)];
        let floor = clock.floor();
        let mut rounds = 0;
        let t = settle(&mut nodes, floor, &mut clock, &mut |n: &mut Node| {
            rounds += 1;
            // Written again right after each read.
            n.meta.ctime_ns = now.get();
            Ok(())
        })
        .unwrap();
        assert_eq!(rounds, SETTLE_ROUNDS);
        assert!(is_racy(&nodes[0], t), "--quick keeps hashing it");
    }

    #[test]
    fn a_ctime_in_the_future_is_not_waited_for_beyond_the_cap() {
        // The system clock was set back an hour after the file was made.
        let now = Rc::new(Cell::new(100 * S));
        let mut clock = Fake::new(&now, 4 * MS);
        let mut nodes = vec![node("a", FILE, 3_700 * S)];
        let (t, reread) = run(&mut clock, &mut nodes);
        assert!(reread.is_empty());
        assert_eq!(t, 100 * S, "the floor the file was read under");
        assert!(is_racy(&nodes[0], t));
        assert!(clock.slept <= MAX_WAIT + MAX_POLL, "{:?}", clock.slept);
    }

    /// The contract every threshold rests on, on the real filesystem: a
    /// change made after `floor` returned is stamped at or after it.
    #[test]
    fn a_change_after_the_floor_is_stamped_at_or_after_it() {
        let d = tempfile::tempdir().unwrap();
        let mut clock = RootClock::open(d.path());
        for i in 0..2_000 {
            let floor = clock.floor();
            assert!(clock.fd.is_some(), "the probe works on a writable root");
            // A new file each time: stamped by the coarse clock, not the
            // fine one a file whose times were just read may get (Linux's
            // multigrain timestamps), which would make any floor look right.
            let f = d.path().join(format!("f{i}"));
            std::fs::write(&f, i.to_string()).unwrap();
            let c = Meta::from(&nix::sys::stat::stat(&f).unwrap()).ctime_ns;
            assert!(c >= floor, "round {i}: ctime {c} < floor {floor}");
        }
    }

    #[test]
    fn a_root_that_cannot_be_touched_falls_back_to_the_clock_less_a_second() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        for root in [d.path().join("absent"), d.path().join("link")] {
            let mut clock = RootClock::open(&root);
            let before = now_ns();
            let f = clock.floor();
            let after = now_ns();
            assert!(
                (before - FALLBACK_SLACK_NS..=after - FALLBACK_SLACK_NS).contains(&f),
                "{root:?}"
            );
        }
    }
}
