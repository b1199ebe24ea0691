//! Issue 12 (hostile input), generative: random hostile worlds — the
//! busybox world of tests/support with symlinks to a decoy host tree, hard
//! links to its files, fifos, files and empty directories planted at random
//! layout-relevant paths — go through `template build` and then `upgrade`,
//! as a directory or as an archive. Each run either exits 2 with nothing
//! changed (root, state dir and history as before) or succeeds; either way
//! the decoy is untouched, and a template that was built has real
//! directories where the layout links or mounts.
//!
//! Cheap by design, so a thousand cases fit in about a minute: the world's
//! busybox is replaced by a small file (no jail is started, so nothing
//! runs it), nothing mounts, each case is a fresh root on a tmpfs in the
//! test's private mount namespace (no fsync waits), and 32 cases run side
//! by side (a case is mostly the manifest's one-second settle wait).
//! proptest generates the worlds; its sequential runner (and so its
//! shrinking) is not used: a failing case prints its whole input.
//! `PROPTEST_CASES=10000 cargo test --test hostile_prop` runs a longer one.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use support::decoy::Decoy;
use support::{Root, Worlds, assert_same};

/// Paths a plant may land on: every directory the layout moves, links,
/// mounts or carries over, the file shape appends to, and a few ordinary
/// ones (a plant there must simply be copied as it is).
const TARGETS: [&str; 22] = [
    "etc",
    "usr",
    "usr/local",
    "var",
    "tmp",
    "root",
    "home",
    "s",
    "usr/X11R6",
    "usr/ports",
    "usr/ports/distfiles",
    "usr/share",
    "usr/share/jailtx",
    "usr/share/jailtx/pristine",
    "usr/local/etc",
    "etc/make.conf",
    "etc/rc.conf",
    "root/.profile",
    "bin",
    "usr/bin",
    "usr/share/misc",
    "var/log",
];

/// What a plant is.
#[derive(Debug, Clone, Copy)]
enum Plant {
    /// A symlink to one of the decoy's entries (absolute).
    LinkOut(usize),
    /// A relative symlink climbing out of the world to a decoy entry.
    RelLinkOut(usize),
    /// A hard link to one of the decoy's files.
    HardLink(usize),
    Fifo,
    File,
    EmptyDir,
}

/// Decoy entries a link may point at.
const DECOY_PATHS: [&str; 6] = ["usr", "usr/local", "s", "srv", "etc", "etc/shadow"];
/// Decoy files a hard link may share.
const DECOY_FILES: [&str; 3] = ["etc/shadow", "etc/make.conf", "usr/ports/Makefile"];

fn plant() -> impl Strategy<Value = Plant> {
    prop_oneof![
        (0..DECOY_PATHS.len()).prop_map(Plant::LinkOut),
        (0..DECOY_PATHS.len()).prop_map(Plant::RelLinkOut),
        (0..DECOY_FILES.len()).prop_map(Plant::HardLink),
        Just(Plant::Fifo),
        Just(Plant::File),
        Just(Plant::EmptyDir),
    ]
}

fn plants() -> impl Strategy<Value = Vec<(usize, Plant)>> {
    prop::collection::vec((0..TARGETS.len(), plant()), 0..4)
}

/// How a world reaches jailtx.
#[derive(Debug, Clone, Copy)]
enum Via {
    Dir,
    Tar,
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::Dir), Just(Via::Tar)]
}

/// Whether every directory on the way to `p` (below `top`) is a real one:
/// the test itself must never write through a link it planted.
fn real_parents(top: &Path, rel: &Path) -> bool {
    let mut cur = top.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(_) => {
                std::fs::create_dir(&cur).unwrap();
            }
        }
    }
    true
}

/// A copy of the small base world with `plants` applied.
fn hostile_world(base: &Path, dest: &Path, decoy: &Decoy, plants: &[(usize, Plant)]) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(base)
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success());
    for (t, plant) in plants {
        let rel = Path::new(TARGETS[*t]);
        if !real_parents(dest, rel) {
            continue;
        }
        let p = dest.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).unwrap(),
            Ok(_) => std::fs::remove_file(&p).unwrap(),
            Err(_) => {}
        }
        match *plant {
            Plant::LinkOut(i) => symlink(decoy.path(DECOY_PATHS[i]), &p).unwrap(),
            Plant::RelLinkOut(i) => {
                let up = "../".repeat(p.components().count());
                symlink(format!("{up}{}", decoy.path(DECOY_PATHS[i]).display()), &p).unwrap();
            }
            Plant::HardLink(i) => std::fs::hard_link(decoy.path(DECOY_FILES[i]), &p).unwrap(),
            Plant::Fifo => {
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
            Plant::File => std::fs::write(&p, "planted\n").unwrap(),
            Plant::EmptyDir => std::fs::create_dir(&p).unwrap(),
        }
    }
}

/// The source arguments for `world` reaching jailtx `via`.
fn source(root: &Root, world: &Path, via: Via, name: &str) -> Vec<String> {
    match via {
        Via::Dir => vec!["--from-dir".into(), world.display().to_string()],
        Via::Tar => {
            let t = root.scratch.join(format!("{name}.tar"));
            let st = Command::new("tar")
                .arg("-cf")
                .arg(&t)
                .arg("-C")
                .arg(world)
                .arg(".")
                .status()
                .unwrap();
            // Exit 1 is GNU tar's "a file changed as we read it": a planted
            // hard link shares its inode with the decoy's file, which the
            // other cases running beside this one link and unlink at the same
            // moment (its ctime moves). The archive is whole; 2 is an error.
            assert!(matches!(st.code(), Some(0 | 1)), "tar: {st}");
            vec!["--from-tar".into(), t.display().to_string()]
        }
    }
}

/// How long one run may take: a hang (a fifo opened for reading, say) is
/// a failure of its own, not a stuck test.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `jailtx --root ROOT ARGS…`, killed and failed after [`RUN_LIMIT`].
fn run_bounded(root: &Root, args: &[&str]) -> Result<support::Out, TestCaseError> {
    use std::io::Read;
    let mut child = root
        .command(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn jailtx");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for jailtx") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestCaseError::fail(format!(
                "{args:?}: still running after {RUN_LIMIT:?} (a hang)"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(support::Out {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `args`: exit 2 must change nothing, exit 0 (or 7) must leave a template
/// whose linked and mounted places are real; the decoy stays untouched.
/// Returns whether it succeeded.
fn run_checked(root: &Root, decoy: &Decoy, args: &[String]) -> Result<bool, TestCaseError> {
    let before = root.everything();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded(root, &a)?;
    decoy.assert_untouched(&format!("{a:?}"));
    match out.code() {
        Some(2) => {
            out.one_line_error(2, &format!("{a:?}"));
            assert_same(&format!("{a:?} refused"), &root.everything(), &before);
            Ok(false)
        }
        // 7: an upgrade that committed, its /etc merge waiting for the
        // operator (a plant in the world's etc can clash with the last).
        Some(0 | 7) => {
            for rel in ["s", "usr", "usr/share", "usr/ports"] {
                let p = root.j().join("mroot").join(rel);
                let m = std::fs::symlink_metadata(&p);
                prop_assert!(
                    m.as_ref().is_ok_and(|m| m.is_dir()),
                    "{a:?}: {} is not a real directory: {m:?}",
                    p.display()
                );
            }
            Ok(true)
        }
        _ => Err(TestCaseError::fail(format!("{a:?}: {out}"))),
    }
}

struct Fixture {
    decoy: Decoy,
    base: PathBuf,
    _worlds: Worlds,
}

/// The small base world: the busybox world with its binary replaced by a
/// few bytes (its applet links still point at it).
fn fixture() -> Fixture {
    let decoy = Decoy::new();
    let worlds = Worlds::new();
    let full = worlds.get(1);
    let base = full.with_file_name("small");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&full)
        .arg(&base)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(base.join("bin/busybox"), "#!/bin/sh\n").unwrap();
    Fixture {
        decoy,
        base,
        _worlds: worlds,
    }
}

/// Cases run by default (`PROPTEST_CASES` overrides it).
const CASES: u32 = 1000;

/// Cases in flight at once. A case mostly waits (each manifest written
/// waits a second for racily clean files to settle, see
/// `manifest::build::settle`), so many run side by side on two cores.
const WORKERS: usize = 32;

type Input = (Vec<(usize, Plant)>, Via, Vec<(usize, Plant)>, Via);

/// One case: `template build` from the first world (a good template when
/// refused), then `upgrade` from the second. Whether each went through.
fn run_case(fx: &Fixture, (first, via1, second, via2): &Input) -> Result<(bool, bool), String> {
    let root = Root::fresh();
    let w1 = root.scratch.join("w1");
    hostile_world(&fx.base, &w1, &fx.decoy, first);
    let mut args = vec!["template".to_owned(), "build".to_owned()];
    args.extend(source(&root, &w1, *via1, "w1"));
    let built = run_checked(&root, &fx.decoy, &args).map_err(|e| e.to_string())?;
    if !built {
        root.template(&fx.base);
    }
    let w2 = root.scratch.join("w2");
    hostile_world(&fx.base, &w2, &fx.decoy, second);
    let mut args = vec!["upgrade".to_owned()];
    args.extend(source(&root, &w2, *via2, "w2"));
    let upgraded = run_checked(&root, &fx.decoy, &args).map_err(|e| e.to_string())?;
    Ok((built, upgraded))
}

#[test]
fn hostile_worlds_either_change_nothing_or_leave_the_host_untouched() {
    if !support::in_private_ns("hostile_worlds_either_change_nothing_or_leave_the_host_untouched") {
        return;
    }
    // In this test's own mount namespace, /tmp (where every root and the
    // decoy go) is a tmpfs: its fsyncs cost nothing. What is under test is
    // where jailtx's effects land, not their durability.
    nix::mount::mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("size=4g,mode=1777"),
    )
    .expect("mount a tmpfs on /tmp in the test's namespace");
    let fx = fixture();
    let started = std::time::Instant::now();
    // proptest generates the worlds; the cases then run side by side (its
    // own runner is sequential, and a case is a second of waiting). A
    // failure prints its whole input, to replay it alone.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (plants(), via(), plants(), via());
    let inputs: Vec<Input> = (0..cases)
        .map(|_| strategy.new_tree(&mut runner).expect("generate").current())
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let (built, upgraded) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = inputs.get(i) else { break };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_case(&fx, input)
                    }));
                    match outcome {
                        Ok(Ok((b, u))) => {
                            built.fetch_add(usize::from(b), Ordering::Relaxed);
                            upgraded.fetch_add(usize::from(u), Ordering::Relaxed);
                        }
                        Ok(Err(e)) => failures.lock().unwrap().push(format!("{input:?}: {e}")),
                        Err(p) => {
                            let why = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{input:?}: panicked: {why}"));
                        }
                    }
                }
            });
        }
    });
    let (built, upgraded) = (built.into_inner(), upgraded.into_inner());
    println!(
        "{cases} cases in {:.1} s: {built} hostile builds and {upgraded} hostile upgrades went through (harmless plants), the rest refused",
        started.elapsed().as_secs_f64(),
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    fx.decoy.assert_untouched("after every case");
    // Both outcomes were reached: the generator is not all refusals.
    assert!(
        built > 0 && built < cases as usize,
        "{built} of {cases} builds went through"
    );
}
