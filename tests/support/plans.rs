//! Engine-level test material: a builder for plans, the representative
//! plan over every filesystem action with the world it works on, and a small
//! parallel map for the crash matrices.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jailtx::engine::{Action, Engine, EngineError, Plan, Step};
use jailtx::host::Host;
use jailtx::journal::{MemDiskHandle, MemStorage};

use super::{Kind, Snapshot};

/// An engine over an in-memory journal and history (`journal`, `history`
/// on `disk`) driving `host`, no fault armed.
pub fn mem_engine(
    disk: &MemDiskHandle,
    host: Box<dyn Host>,
) -> Result<Engine<MemStorage>, EngineError> {
    Engine::open(
        disk.file("journal"),
        Path::new("journal"),
        disk.file("history"),
        Path::new("history"),
        0,
        None,
        host,
    )
}

/// Builds a [`Plan`] step by step; serialises to the JSON `run-plan` reads.
pub struct PlanBuilder {
    plan: Plan,
    commit: Option<usize>,
}

impl PlanBuilder {
    pub fn new(op: &str, summary: &str) -> Self {
        PlanBuilder {
            plan: Plan::new(op, summary),
            commit: None,
        }
    }

    pub fn step(mut self, name: &str, action: Action) -> Self {
        self.plan.steps.push(Step {
            name: name.to_owned(),
            action,
        });
        self
    }

    /// Puts the commit point before the next step (default: after the last).
    pub fn commit_here(mut self) -> Self {
        self.commit = Some(self.plan.steps.len());
        self
    }

    pub fn mkdir(self, name: &str, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.step(
            name,
            Action::MakeDir {
                path: path.into(),
                mode,
            },
        )
    }

    pub fn write(self, name: &str, path: impl Into<PathBuf>, contents: &str, mode: u32) -> Self {
        self.step(
            name,
            Action::WriteFile {
                path: path.into(),
                contents: contents.to_owned(),
                mode,
            },
        )
    }

    pub fn symlink(self, name: &str, target: impl Into<PathBuf>, link: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::Symlink {
                target: target.into(),
                link: link.into(),
            },
        )
    }

    pub fn rename(self, name: &str, from: impl Into<PathBuf>, to: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    pub fn copy_tree(self, name: &str, from: impl Into<PathBuf>, to: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::CopyTree {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    pub fn remove_tree(self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.step(name, Action::RemoveTree { path: path.into() })
    }

    pub fn note(mut self, k: &str, v: &str) -> Self {
        self.plan.notes.insert(k.to_owned(), v.to_owned());
        self
    }

    pub fn build(mut self) -> Plan {
        self.plan.commit = self.commit.unwrap_or(self.plan.steps.len()) as u32;
        self.plan
    }
}

pub fn mkdir_mode(p: &Path, mode: u32) {
    std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn write_mode(p: &Path, contents: &[u8], mode: u32) {
    std::fs::write(p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The world the representative plan works on, made under `dir` outside any
/// transaction: a small skel (`src/`) with a symlink, a hard link, a sticky
/// dir, a setuid file, a fifo, a file owned by another user and one too large
/// to inline in a snapshot; and `old/`, which the plan moves aside and
/// removes after its commit point. `dir/js` must exist (the plan moves its
/// new tree there; `init` makes it).
pub fn make_fixture(dir: &Path) {
    use std::os::unix::fs::symlink;
    let src = dir.join("src");
    mkdir_mode(&src, 0o755);
    write_mode(&src.join("file.txt"), b"hello\n", 0o644);
    write_mode(&src.join("tool"), b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(&src.join("suid"), b"setuid", 0o4755);
    symlink("file.txt", src.join("link")).expect("symlink");
    std::fs::hard_link(src.join("file.txt"), src.join("hard")).expect("hard link");
    mkdir_mode(&src.join("sticky"), 0o1777);
    write_mode(&src.join("sticky/inner"), b"inner\n", 0o600);
    std::os::unix::fs::chown(src.join("sticky/inner"), Some(1234), Some(5678)).expect("chown");
    mkdir_mode(&src.join("sub"), 0o700);
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    write_mode(&src.join("sub/big.bin"), &big, 0o600);
    symlink("/nonexistent/abs", src.join("sub/abs")).expect("symlink");
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    std::fs::set_permissions(src.join("fifo"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");

    let old = dir.join("old");
    mkdir_mode(&old, 0o755);
    write_mode(&old.join("a.txt"), b"old a\n", 0o644);
    mkdir_mode(&old.join("nested"), 0o750);
    write_mode(&old.join("nested/b.txt"), b"old b\n", 0o640);
    symlink("../a.txt", old.join("nested/l")).expect("symlink");
}

/// How the failing variant of the representative plan fails, right before
/// its commit point.
#[derive(Debug, Clone, Copy)]
pub enum Fail {
    /// write-file into a directory that does not exist.
    WriteIntoMissingDir,
    /// rename whose source does not exist.
    RenameMissingSource,
}

/// The representative plan over [`make_fixture`]'s world in `dir`: every
/// filesystem action, a move-aside before the commit point and the removal
/// of what was moved aside after it. With `fail`, a step that must fail is
/// put right before the commit point (named `fail`).
pub fn representative_plan(dir: &Path, fail: Option<Fail>) -> Plan {
    let p = |s: &str| dir.join(s);
    let mut b = PlanBuilder::new("crash-test", "every fs action")
        .note("fixture", "src+old")
        .mkdir("mkdir-new", p("new"), 0o750)
        .write("write-conf", p("new/app.conf"), "key = value\n", 0o640)
        .copy_tree("copy-skel", p("src"), p("new/tree"))
        .symlink("link-current", "js/app", p("current"))
        .rename("aside-old", p("old"), p("old.aside"))
        .rename("promote", p("new"), p("js/app"));
    b = match fail {
        None => b,
        Some(Fail::WriteIntoMissingDir) => {
            b.write("fail", p("missing-dir/conf"), "never written\n", 0o644)
        }
        Some(Fail::RenameMissingSource) => b.rename("fail", p("missing"), p("missing.moved")),
    };
    b.commit_here()
        .remove_tree("remove-old", p("old.aside"))
        .build()
}

/// Checks the AFTER tree of the representative plan (relative to its dir)
/// by hand, once, so that the crash tests compare against a known-good tree.
pub fn check_representative_after(before: &Snapshot, after: &Snapshot) {
    assert_ne!(before, after, "the plan must change the tree");
    assert!(after.contains_key("js/app/tree/sticky/inner"), "{after:?}");
    assert_eq!(after["js/app/app.conf"].mode, 0o640);
    assert_eq!(after["js/app"].mode, 0o750);
    assert_eq!(after["js/app/tree/sticky"].mode, 0o1777);
    assert_eq!(after["js/app/tree/suid"].mode, 0o4755);
    assert_eq!(after["js/app/tree/sticky/inner"].uid, 1234);
    assert_eq!(after["js/app/tree/sticky/inner"].gid, 5678);
    assert_eq!(after["js/app/tree/fifo"].kind, Kind::Fifo);
    assert_eq!(
        after["js/app/tree/hard"].hardlink_of.as_deref(),
        Some("js/app/tree/file.txt")
    );
    assert_eq!(
        after["js/app/tree/sub/big.bin"].content,
        before["src/sub/big.bin"].content
    );
    assert_eq!(after["current"].target.as_deref(), Some("js/app"));
    assert!(!after.contains_key("old") && !after.contains_key("old.aside"));
    assert!(!after.keys().any(|k| k.contains("jailtx")));
}

/// Maps `f` over `items` on a few threads, keeping the order: the crash
/// tests spend their time waiting for fsyncs and child processes, not on the
/// CPU. A panic in any call fails the caller (after the others finish).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4);
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

/// [`par_map`] for its effects.
pub fn par_for_each<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    par_map(items, f);
}
