//! Issue 12 (hostile input), the world side: a world — a `--from-dir` tree,
//! a `--from-tar` archive or what a `--from-cmd` made — written by an
//! attacker never moves, reads, writes or removes anything outside the
//! layout. A world whose shape is wrong (a symlink, file, fifo or device
//! where the layout moves or links a directory, `etc/make.conf` not a
//! regular file) is refused before anything changes: exit 2, one line
//! naming the path, no history row, the state dir and the layout as they
//! were, and the decoy host tree (tests/support/decoy.rs) untouched.
//!
//! What broke before: `usr -> /usr` had `shape` move the host's `usr/local`
//! into skel (and an upgrade delete it); `s -> /srv` put a jail's data on a
//! host directory; `etc/make.conf -> /etc/shadow` copied the host's shadow
//! into every jail; an archive that was a symlink to a secret echoed its
//! bytes into the error and history; corrupt archives were exit 1 with a
//! history row; an empty `.tar` made an empty template; `{dest}` was pasted
//! into the `--from-cmd` shell line unquoted.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::decoy::{Decoy, SECRET};
use support::{Root, Worlds, assert_same, mkworld};

/// A copy of the busybox world in `root`'s scratch folder, to make hostile.
fn world(root: &Root, name: &str) -> PathBuf {
    let w = root.scratch.join(name);
    mkworld(&w, 1);
    w
}

fn rm(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        std::fs::remove_file(p).unwrap();
    }
}

/// Runs `args`, which must be refused with exit 2 and one line naming
/// `names` (and never quoting the decoy's secret), changing nothing: the
/// root (state dir and history included) and the decoy are as before.
#[track_caller]
fn refused(root: &Root, decoy: &Decoy, args: &[&str], names: &str) -> String {
    let before = root.everything();
    let history = root.transactions().len();
    let out = root.run(args);
    let line = out.one_line_error(2, &format!("{args:?}")).to_owned();
    assert!(line.contains(names), "the error names {names}: {line}");
    assert!(
        !out.stderr.contains("decoy-secret") && !out.stdout.contains("decoy-secret"),
        "the secret leaked: {out}"
    );
    assert_same(&format!("{args:?}"), &root.everything(), &before);
    assert_eq!(root.transactions().len(), history, "no history row");
    decoy.assert_untouched(&format!("{args:?}"));
    line
}

fn build_dir(w: &Path) -> Vec<String> {
    ["template", "build", "--from-dir", w.to_str().unwrap()]
        .map(String::from)
        .to_vec()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn issue12_world_usr_symlink_to_a_host_dir_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    rm(&w.join("usr"));
    symlink(decoy.path("usr"), w.join("usr")).unwrap();
    let a = build_dir(&w);
    let line = refused(&r, &decoy, &args(&a), "usr");
    assert!(line.contains("symlink"), "{line}");
}

#[test]
fn issue12_world_s_symlink_to_a_host_dir_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    symlink(decoy.path("s"), w.join("s")).unwrap();
    let a = build_dir(&w);
    refused(&r, &decoy, &args(&a), "`s`");
}

#[test]
fn issue12_world_make_conf_symlink_to_shadow_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    symlink(decoy.path("etc/shadow"), w.join("etc/make.conf")).unwrap();
    let a = build_dir(&w);
    refused(&r, &decoy, &args(&a), "etc/make.conf");
}

#[test]
fn issue12_world_usr_local_as_a_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    rm(&w.join("usr/local"));
    std::fs::write(w.join("usr/local"), "not a dir\n").unwrap();
    let a = build_dir(&w);
    refused(&r, &decoy, &args(&a), "usr/local");
}

#[test]
fn issue12_world_fifo_and_carry_over_parent_are_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    rm(&w.join("var"));
    nix::unistd::mkfifo(
        &w.join("var"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let a = build_dir(&w);
    refused(&r, &decoy, &args(&a), "var");
    // usr/ports is the default carry-over path: its link moves the host's tree.
    let w = world(&r, "w2");
    rm(&w.join("usr/ports"));
    symlink(decoy.path("usr/ports"), w.join("usr/ports")).unwrap();
    let a = build_dir(&w);
    refused(&r, &decoy, &args(&a), "usr/ports");
}

#[test]
fn issue12_from_dir_that_is_a_symlink_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    let link = r.scratch.join("link");
    symlink(&w, &link).unwrap();
    let a = build_dir(&link);
    refused(&r, &decoy, &args(&a), "link");
}

fn tar(args: &[&str], cwd: &Path) {
    let st = Command::new("tar")
        .args(args)
        .current_dir(cwd)
        .status()
        .unwrap();
    assert!(st.success(), "tar {args:?}");
}

#[test]
fn issue12_empty_tar_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let empty = r.scratch.join("empty.tar");
    tar(
        &["-cf", empty.to_str().unwrap(), "-T", "/dev/null"],
        &r.scratch,
    );
    refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", empty.to_str().unwrap()],
        "empty.tar",
    );
    // Only the root directory is just as empty.
    std::fs::create_dir(r.scratch.join("nothing")).unwrap();
    let dot = r.scratch.join("dot.tar");
    tar(
        &["-cf", dot.to_str().unwrap(), "-C", "nothing", "."],
        &r.scratch,
    );
    refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", dot.to_str().unwrap()],
        "dot.tar",
    );
}

#[test]
fn issue12_tar_that_is_a_symlink_to_a_secret_is_refused_without_echoing_it() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let link = r.scratch.join("base.tar");
    symlink(decoy.path("etc/shadow"), &link).unwrap();
    let line = refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", link.to_str().unwrap()],
        "base.tar",
    );
    for part in SECRET.split(':').filter(|p| p.len() > 3) {
        assert!(!line.contains(part.trim()), "{line}");
    }
    // The same for a regular file that holds the secret and is no tar.
    let fake = r.scratch.join("fake.tar");
    std::fs::write(&fake, SECRET.repeat(20)).unwrap();
    let line = refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", fake.to_str().unwrap()],
        "fake.tar",
    );
    assert!(!line.contains("root"), "{line}");
}

#[test]
fn issue12_corrupt_and_truncated_txz_are_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    let good = r.scratch.join("good.txz");
    tar(
        &[
            "-cJf",
            good.to_str().unwrap(),
            "-C",
            w.to_str().unwrap(),
            ".",
        ],
        &r.scratch,
    );
    let bytes = std::fs::read(&good).unwrap();
    let corrupt = r.scratch.join("corrupt.txz");
    let mut c = bytes.clone();
    let mid = c.len() / 2;
    for b in &mut c[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &c).unwrap();
    refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", corrupt.to_str().unwrap()],
        "corrupt.txz",
    );
    let cut = r.scratch.join("cut.txz");
    std::fs::write(&cut, &bytes[..bytes.len() - 200]).unwrap();
    refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", cut.to_str().unwrap()],
        "cut.txz",
    );
    // The archive itself is fine: it builds.
    r.ok(&["template", "build", "--from-tar", good.to_str().unwrap()]);
    decoy.assert_untouched("good archive");
}

/// A tar whose `usr` is a symlink out of the world, then a file through it.
#[test]
fn issue12_tar_with_a_link_out_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    rm(&w.join("usr"));
    symlink(decoy.path("usr"), w.join("usr")).unwrap();
    let t = r.scratch.join("links.tar");
    tar(
        &["-cf", t.to_str().unwrap(), "-C", w.to_str().unwrap(), "."],
        &r.scratch,
    );
    refused(
        &r,
        &decoy,
        &["template", "build", "--from-tar", t.to_str().unwrap()],
        "usr",
    );
}

/// `{dest}` reaches the command quoted: a root whose path holds `$(…)` and
/// spaces runs nothing and splits nothing, and the build succeeds.
#[test]
fn issue12_from_cmd_dest_is_never_pasted_into_the_shell_line() {
    let decoy = Decoy::new();
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().canonicalize().unwrap();
    let root = base.join("r $(touch PWNED) x");
    std::fs::create_dir(&root).unwrap();
    let worlds = Worlds::new();
    let w = worlds.get(1);
    let run = |args: &[&str]| {
        let mut c = support::jailtx(&["--root", root.to_str().unwrap()]);
        c.args(args).current_dir(&base);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    let cmd = format!(
        "cp -a {}/. {{dest}} && test -d \"$DEST\" && test \"$1\" = \"$DEST\" && test \"$DESTDIR\" = \"$DEST\"",
        w.display()
    );
    run(&["template", "build", "--from-cmd", &cmd]);
    assert!(!base.join("PWNED").exists(), "the $(…) in the root ran");
    let names: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "nothing split off beside the root: {names:?}"
    );
    assert!(root.join("j/mroot/bin/busybox").is_file());
    decoy.assert_untouched("from-cmd");
}

/// A `--from-cmd` world is checked inside `populate`, before it is renamed
/// into place: the transaction fails and is rolled back (exit 1).
#[test]
fn issue12_from_cmd_hostile_world_is_rolled_back() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    let before = r.tree();
    let cmd = format!(
        "cp -a {}/. {{dest}} && rm -rf {{dest}}/usr && ln -s {} {{dest}}/usr",
        w.display(),
        decoy.path("usr").display()
    );
    let out = r.run(&["template", "build", "--from-cmd", &cmd]);
    let line = out.error_line(1);
    assert!(line.contains("usr"), "{line}");
    assert_same("rolled back", &r.tree(), &before);
    decoy.assert_untouched("from-cmd hostile");
}

/// A `--from-dir` tree swapped for a hostile one after the planner checked
/// it (here: between a crash before `populate` and the `recover` that runs
/// it) is refused inside `populate` and rolled back.
#[test]
fn issue12_from_dir_swapped_after_the_check_is_refused_in_populate() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let w = world(&r, "w");
    let before = r.tree();
    let a = build_dir(&w);
    let out = r.run_env(&args(&a), &[("JAILTX_FAULT", "before-intent:populate")]);
    out.assert_killed("crash before populate");
    rm(&w.join("usr"));
    symlink(decoy.path("usr"), w.join("usr")).unwrap();
    let out = r.run(&["recover"]);
    let line = out.error_line(1);
    assert!(line.contains("usr"), "{line}");
    assert_same("rolled back", &r.tree(), &before);
    decoy.assert_untouched("swapped world");
}

/// After a good template, an upgrade from a hostile world (dir or archive)
/// changes nothing: template, skel, manifests and history as they were.
#[test]
fn issue12_upgrade_with_a_hostile_world_changes_nothing() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let good = world(&r, "good");
    r.template(&good);
    let w = world(&r, "w");
    rm(&w.join("usr"));
    symlink(decoy.path("usr"), w.join("usr")).unwrap();
    refused(
        &r,
        &decoy,
        &["upgrade", "--from-dir", w.to_str().unwrap()],
        "usr",
    );
    let t = r.scratch.join("hostile.tar");
    tar(
        &["-cf", t.to_str().unwrap(), "-C", w.to_str().unwrap(), "."],
        &r.scratch,
    );
    refused(
        &r,
        &decoy,
        &["upgrade", "--from-tar", t.to_str().unwrap()],
        "usr",
    );
    // A good upgrade still goes through.
    let good2 = world(&r, "good2");
    r.ok(&["upgrade", "--from-dir", good2.to_str().unwrap()]);
    decoy.assert_untouched("good upgrade");
}

/// The decoy check can fail: touching the decoy makes it panic.
#[test]
#[should_panic(expected = "the decoy host tree")]
fn decoy_check_panics_when_the_decoy_is_touched() {
    let decoy = Decoy::new();
    std::fs::write(decoy.path("usr/local/etc/keep.conf"), "changed\n").unwrap();
    decoy.assert_untouched("touched on purpose");
}

/// A template whose `usr` is a link (made by a jailtx from before worlds
/// were checked, or by hand): the upgrade's carry-over move of `usr/ports`
/// would take the host's ports tree through it. Refused before anything
/// moves.
#[test]
fn issue12_carry_over_move_never_follows_a_link_in_the_old_template() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let good = world(&r, "good");
    r.template(&good);
    let usr = r.j().join("mroot/usr");
    std::fs::rename(&usr, r.scratch.join("old-usr")).unwrap();
    symlink(decoy.path("usr"), &usr).unwrap();
    let good2 = world(&r, "good2");
    refused(
        &r,
        &decoy,
        &["upgrade", "--from-dir", good2.to_str().unwrap()],
        "mroot/usr",
    );
}
