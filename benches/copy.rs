//! `jailtx::fs::copy_tree` against `cp -a`, and `jailtx::fs::remove_tree`
//! against `rm -rf`, on the same trees in the same run: a skel-like tree
//! (what `jail create` copies) and a generated world-like tree (what a
//! template build copies). Warm cache; median of 5; prints figures and
//! ratios. Every copy, the warm-up's and each timed one (after the timing),
//! is checked against the source (every entry's type, mode, owner, size,
//! mtime, symlink target and hard-link grouping); a timing is never asserted.
//!
//! `cargo bench --bench copy` (or `scripts/bench`) measures. Under
//! `cargo test --all-targets` (no `--bench` argument) a small version of both
//! trees is copied once, as a differential smoke test against `cp -a`.
//! Knobs: `JAILTX_BENCH_DIR` (where trees and copies go; default cargo's
//! target/tmp, never a tmpfs on purpose), `JAILTX_BENCH_REPS`,
//! `JAILTX_BENCH_REGEN=1` (rebuild the cached world tree).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Knobs, median};
use jailtx::fs::{CopyStats, copy_tree, remove_tree, sync_tree};

/// Bumped whenever the generator changes, so a cached world is rebuilt.
const WORLD_VERSION: u32 = 1;
const SEED: u64 = 0x6a61_696c_7478_0001;

// ---------------------------------------------------------------- generation

/// SplitMix64: a fixed seed gives the same tree on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
    /// Uniform in log space over [lo, hi).
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + self.unit() * (h - l)).exp() as u64
    }
}

/// Writes file data from one pseudo-random pool, so no file is sparse or
/// all zeros and generation costs little CPU.
struct Writer {
    pool: Vec<u8>,
    rng: Rng,
    root: bool,
}

impl Writer {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let pool = (0..(8 << 20) / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect();
        Writer {
            pool,
            rng,
            root: nix::unistd::geteuid().is_root(),
        }
    }

    fn file(&mut self, path: &Path, size: u64, mode: u32) -> Result<()> {
        let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut left = usize::try_from(size)?;
        while left > 0 {
            let off = self.rng.below(self.pool.len() / 2);
            let n = left.min(self.pool.len() - off);
            f.write_all(&self.pool[off..off + n])?;
            left -= n;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn dir(&self, path: &Path, mode: u32) -> Result<()> {
        fs::create_dir(path).with_context(|| format!("mkdir {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Owners other than root only where we may set them.
    fn owner(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        if self.root {
            chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

/// A jail skeleton as jailtx's first template build leaves it: FreeBSD's
/// /etc, /var, /root and friends, ~320 small files.
fn build_skel(dst: &Path) -> Result<()> {
    let mut w = Writer::new(SEED ^ 0x5eed);
    let d = |rel: &str| dst.join(rel);
    w.dir(dst, 0o755)?;
    for (rel, mode) in [
        ("etc", 0o755),
        ("etc/rc.d", 0o755),
        ("etc/defaults", 0o755),
        ("etc/periodic", 0o755),
        ("etc/periodic/daily", 0o755),
        ("etc/periodic/weekly", 0o755),
        ("etc/periodic/monthly", 0o755),
        ("etc/periodic/security", 0o755),
        ("etc/mtree", 0o755),
        ("etc/pam.d", 0o755),
        ("etc/ssh", 0o755),
        ("etc/mail", 0o755),
        ("var", 0o755),
        ("var/log", 0o755),
        ("var/db", 0o755),
        ("var/run", 0o755),
        ("var/tmp", 0o1777),
        ("var/mail", 0o775),
        ("var/spool", 0o755),
        ("var/spool/clientmqueue", 0o770),
        ("var/cron", 0o750),
        ("var/cron/tabs", 0o700),
        ("root", 0o750),
        ("tmp", 0o1777),
        ("usr-local", 0o755),
        ("usr-local/bin", 0o755),
        ("usr-local/etc", 0o755),
        ("usr-local/lib", 0o755),
        ("usr-local/sbin", 0o755),
        ("usr-local/share", 0o755),
        ("home", 0o755),
        ("usr-X11R6", 0o755),
        ("distfiles", 0o755),
    ] {
        w.dir(&d(rel), mode)?;
    }
    w.owner(&d("var/spool/clientmqueue"), 25, 25)?;
    w.owner(&d("var/mail"), 0, 6)?;
    let mut files: Vec<(String, u64, u32)> = Vec::new();
    let small = |rng: &mut Rng| rng.log_uniform(40, 6000);
    for i in 0..110 {
        let s = small(&mut w.rng);
        files.push((format!("etc/conf{i:03}"), s, 0o644));
    }
    for i in 0..100 {
        let s = small(&mut w.rng);
        files.push((format!("etc/rc.d/script{i:03}"), s, 0o555));
    }
    for (dir, n) in [
        ("etc/defaults", 6),
        ("etc/periodic/daily", 12),
        ("etc/periodic/weekly", 6),
        ("etc/periodic/monthly", 4),
        ("etc/periodic/security", 18),
        ("etc/mtree", 5),
        ("etc/pam.d", 15),
        ("etc/mail", 6),
        ("var/log", 12),
        ("var/db", 8),
        ("var/run", 3),
    ] {
        for i in 0..n {
            let mode = if dir.starts_with("etc/periodic") {
                0o555
            } else {
                0o644
            };
            let s = small(&mut w.rng);
            files.push((format!("{dir}/f{i:02}"), s, mode));
        }
    }
    for key in ["rsa", "ecdsa", "ed25519"] {
        files.push((format!("etc/ssh/ssh_host_{key}_key"), 1800, 0o600));
        files.push((format!("etc/ssh/ssh_host_{key}_key.pub"), 400, 0o644));
    }
    files.push(("etc/ssh/sshd_config".into(), 3300, 0o644));
    files.push(("etc/ssh/moduli".into(), 560_000, 0o644));
    files.push(("etc/services".into(), 86_000, 0o644));
    files.push(("etc/login.conf".into(), 12_000, 0o644));
    files.push(("etc/master.passwd".into(), 1800, 0o600));
    files.push(("etc/spwd.db".into(), 40_960, 0o600));
    files.push(("etc/pwd.db".into(), 40_960, 0o644));
    for dot in [
        ".cshrc", ".profile", ".login", ".k5login", ".shrc", ".history",
    ] {
        files.push((format!("root/{dot}"), 900, 0o644));
    }
    for (rel, size, mode) in &files {
        w.file(&d(rel), *size, *mode)?;
    }
    w.owner(&d("var/log/f00"), 0, 5)?;
    // FreeBSD's /.cshrc and /root/.cshrc are one file; so are the .profiles.
    fs::hard_link(d("root/.cshrc"), d(".cshrc"))?;
    fs::hard_link(d("root/.profile"), d(".profile"))?;
    for (target, link) in [
        ("/usr/share/misc/termcap", "etc/termcap"),
        ("mail/aliases", "etc/aliases"),
        ("../usr/sbin/rmt", "etc/rmt"),
        ("../var/run/os-release", "etc/os-release"),
        ("../var/unbound", "etc/unbound"),
    ] {
        symlink(target, d(link))?;
    }
    w.dir(&d("var/empty"), 0o555)?;
    Ok(())
}

/// How big a generated world is.
struct WorldShape {
    dirs: usize,
    files: usize,
    rescue_links: usize,
    rescue_bytes: u64,
    extra_links: usize,
    symlinks: usize,
}

const WORLD_FULL: WorldShape = WorldShape {
    dirs: 1500,
    files: 17_200,
    rescue_links: 149,
    rescue_bytes: 8 << 20,
    extra_links: 200,
    symlinks: 500,
};

const WORLD_SMOKE: WorldShape = WorldShape {
    dirs: 60,
    files: 300,
    rescue_links: 9,
    rescue_bytes: 256 << 10,
    extra_links: 10,
    symlinks: 12,
};

/// File sizes: most tiny (man pages, headers, scripts), a third in the tens
/// of KB, a tenth larger (libraries, binaries), a few MB-sized.
fn file_size(rng: &mut Rng) -> u64 {
    let u = rng.unit();
    if u < 0.60 {
        rng.log_uniform(32, 4 << 10)
    } else if u < 0.90 {
        rng.log_uniform(4 << 10, 16 << 10)
    } else if u < 0.9985 {
        rng.log_uniform(16 << 10, 128 << 10)
    } else {
        rng.log_uniform(1 << 20, 4 << 20)
    }
}

/// A FreeBSD-world-like tree: the usual top directories holding many files,
/// a long tail of small directories, /rescue's one binary under many names,
/// hard-linked and symlinked files scattered around.
fn build_world(dst: &Path, shape: &WorldShape) -> Result<()> {
    let mut w = Writer::new(SEED);
    w.dir(dst, 0o755)?;
    let mut dirs: Vec<String> = Vec::new();
    for rel in [
        "bin",
        "sbin",
        "lib",
        "libexec",
        "boot",
        "boot/kernel",
        "boot/defaults",
        "rescue",
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib32",
        "usr/libexec",
        "usr/libdata",
        "usr/include",
        "usr/share",
        "usr/share/man",
        "usr/share/man/man1",
        "usr/share/man/man3",
        "usr/share/man/man8",
        "usr/share/locale",
        "usr/share/zoneinfo",
        "usr/share/misc",
        "usr/tests",
    ] {
        w.dir(&dst.join(rel), 0o755)?;
        dirs.push(rel.to_owned());
    }
    let big = dirs.len();
    while dirs.len() < shape.dirs {
        // Parents skewed towards the earlier (shallower) directories.
        let p = (w.rng.unit().powf(1.6) * dirs.len() as f64) as usize;
        let rel = format!("{}/d{}", dirs[p.min(dirs.len() - 1)], dirs.len());
        w.dir(&dst.join(&rel), 0o755)?;
        dirs.push(rel);
    }
    let mut files: Vec<String> = Vec::new();
    for i in 0..shape.files {
        let dir = if w.rng.unit() < 0.35 {
            &dirs[w.rng.below(big)]
        } else {
            &dirs[w.rng.below(dirs.len())]
        };
        let is_bin = dir.ends_with("bin") || dir.ends_with("libexec");
        let mode = match (is_bin, w.rng.below(200)) {
            (true, 0) => 0o4555,
            (true, _) => 0o555,
            (false, n) if n < 120 => 0o444,
            _ => 0o644,
        };
        let rel = format!("{dir}/f{i}");
        let size = file_size(&mut w.rng);
        w.file(&dst.join(&rel), size, mode)?;
        files.push(rel);
    }
    w.file(&dst.join("rescue/rescue"), shape.rescue_bytes, 0o555)?;
    for i in 0..shape.rescue_links {
        fs::hard_link(dst.join("rescue/rescue"), dst.join(format!("rescue/r{i}")))?;
    }
    for i in 0..shape.extra_links {
        let f = &files[w.rng.below(files.len())];
        fs::hard_link(dst.join(f), dst.join(format!("{f}.l{i}")))?;
    }
    for i in 0..shape.symlinks {
        let f = &files[w.rng.below(files.len())];
        let name = Path::new(f).file_name().context("file name")?;
        let link = dst.join(format!("{f}.so{i}"));
        if i % 10 == 0 {
            // Absolute and dangling, as /etc/termcap -> /usr/share/misc/termcap is outside a jail.
            symlink(Path::new("/nonexistent/usr/share/misc").join(name), &link)?;
        } else {
            symlink(name, &link)?;
        }
    }
    let link = dst.join("usr/share/misc/owned-link");
    symlink("f0", &link)?;
    if w.root {
        lchown(&link, Some(80), Some(80))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- inspection

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Files and symlinks only (a directory's size depends on its history).
    size: u64,
    mtime: (i64, i64),
    target: Option<Vec<u8>>,
    nlink: u64,
    /// For entries with several names: the first of them in the tree.
    link_group: Option<String>,
}

#[derive(Debug, Default)]
struct TreeSize {
    dirs: u64,
    names: u64,
    inodes: u64,
    symlinks: u64,
    extra_links: u64,
    bytes: u64,
}

fn snapshot(root: &Path) -> Result<BTreeMap<String, Meta>> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else {
            '?'
        };
        let key = rel.to_string_lossy().into_owned();
        let link_group = (m.nlink() > 1 && kind != 'd')
            .then(|| inodes.entry(m.ino()).or_insert_with(|| key.clone()).clone());
        out.insert(
            key,
            Meta {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if kind == 'd' { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                target: ft
                    .is_symlink()
                    .then(|| fs::read_link(&path).map(|t| t.as_os_str().as_bytes().to_vec()))
                    .transpose()?,
                nlink: if kind == 'd' { 0 } else { m.nlink() },
                link_group,
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            // Reversed onto the stack: visited in name order, so the first
            // name of a hard-link group is the same in every tree.
            stack.extend(names.into_iter().rev().map(|n| rel.join(n)));
        }
    }
    // Which name is "first" in a group depends on the visiting order only,
    // which the sorted walk fixes; normalise to the smallest name anyway.
    let mut first: HashMap<String, String> = HashMap::new();
    for (k, m) in &out {
        if let Some(g) = &m.link_group {
            let e = first.entry(g.clone()).or_insert_with(|| k.clone());
            if k < e {
                *e = k.clone();
            }
        }
    }
    for m in out.values_mut() {
        if let Some(g) = &mut m.link_group {
            *g = first[g.as_str()].clone();
        }
    }
    Ok(out)
}

fn tree_size(snap: &BTreeMap<String, Meta>) -> TreeSize {
    let mut t = TreeSize::default();
    for (k, m) in snap {
        match m.kind {
            'd' => t.dirs += 1,
            _ => {
                t.names += 1;
                let first = m.link_group.as_ref().is_none_or(|g| g == k);
                if first {
                    t.inodes += 1;
                    if m.kind == 'f' {
                        t.bytes += m.size;
                    }
                } else {
                    t.extra_links += 1;
                }
                if m.kind == 'l' {
                    t.symlinks += 1;
                }
            }
        }
    }
    t
}

/// Every entry of `want` is in `got` with the same metadata, and nothing else.
fn compare(label: &str, want: &BTreeMap<String, Meta>, got: &BTreeMap<String, Meta>) -> Result<()> {
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => diffs.push(format!("{k:?}: missing")),
            Some(g) if g != w => diffs.push(format!("{k:?}: want {w:?}, got {g:?}")),
            Some(_) => {}
        }
    }
    diffs.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("{k:?}: extra")),
    );
    if !diffs.is_empty() {
        bail!(
            "{label}: {} differences, first: {}",
            diffs.len(),
            diffs[..diffs.len().min(10)].join("; ")
        );
    }
    Ok(())
}

// ------------------------------------------------------------------- timing

/// Wall-clock time and CPU time (user + system) of one timed run. On a
/// shared or virtual disk the wall time swings with other I/O; the CPU time
/// is the work the tool itself did.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// User + system CPU time of this thread (`RUSAGE_THREAD`) or of all waited-for
/// children (`RUSAGE_CHILDREN`).
fn cpu_time(who: nix::libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is handed, which is a
    // zeroed plain C struct owned by this frame.
    let ru = unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        nix::libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: nix::libc::timeval| {
        Duration::new(t.tv_sec as u64, 0) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn run(cmd: &mut Command) -> Result<Cost> {
    let cpu = cpu_time(nix::libc::RUSAGE_CHILDREN);
    let t = Instant::now();
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    let wall = t.elapsed();
    ensure!(status.success(), "{cmd:?}: {status}");
    Ok(Cost {
        wall,
        cpu: cpu_time(nix::libc::RUSAGE_CHILDREN) - cpu,
    })
}

fn in_process<T>(f: impl FnOnce() -> Result<T>) -> Result<(Cost, T)> {
    let cpu = cpu_time(nix::libc::RUSAGE_THREAD);
    let t = Instant::now();
    let out = f()?;
    let wall = t.elapsed();
    let cost = Cost {
        wall,
        cpu: cpu_time(nix::libc::RUSAGE_THREAD) - cpu,
    };
    Ok((cost, out))
}

fn cp_a(src: &Path, dst: &Path) -> Result<Cost> {
    run(Command::new("cp").arg("-a").arg(src).arg(dst))
}

fn jail_copy(src: &Path, dst: &Path) -> Result<(Cost, CopyStats)> {
    in_process(|| Ok(copy_tree(src, dst)?))
}

fn rm_rf(path: &Path) -> Result<Cost> {
    run(Command::new("rm").arg("-rf").arg(path))
}

fn jail_remove(path: &Path) -> Result<Cost> {
    in_process(|| Ok(remove_tree(path)?)).map(|(c, _)| c)
}

/// syncfs, untimed: every timed run starts with no dirty data of another's.
fn settle(path: &Path) -> Result<Duration> {
    let t = Instant::now();
    sync_tree(path)?;
    Ok(t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `median (min–max)`, milliseconds.
fn spread(v: &[f64]) -> String {
    common::spread(v, 1)
}

/// Wall and CPU milliseconds of the runs of one tool.
#[derive(Default)]
struct Runs {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Runs {
    fn push(&mut self, c: Cost) {
        self.wall.push(ms(c.wall));
        self.cpu.push(ms(c.cpu));
    }
}

/// `ours/theirs` of the medians, flagged when above 1.
fn ratio(ours: &[f64], theirs: &[f64]) -> String {
    let r = median(ours) / median(theirs);
    if r < 1.005 {
        format!("{r:.2}")
    } else {
        format!("{r:.2} (slower)")
    }
}

#[derive(Default)]
struct Samples {
    cp: Runs,
    copy_tree: Runs,
    rm: Runs,
    remove_tree: Runs,
    syncfs_after_cp: Vec<f64>,
    syncfs_after_copy_tree: Vec<f64>,
}

struct Measured {
    name: &'static str,
    size: TreeSize,
    stats: CopyStats,
    s: Samples,
}

/// Copies first, removals after: every copy of a tree is kept until all of
/// them are made. Removing a copy and copying again at once would make the
/// next copy pay for the removal: ext4 without a journal (this machine's
/// root) skips inodes freed within the last minute when it allocates, and
/// scanning past 18,000 of them costs seconds of CPU in whichever tool
/// happens to copy next (`recently_deleted` in fs/ext4/ialloc.c).
fn measure(name: &'static str, src: &Path, work: &Path, reps: usize) -> Result<Measured> {
    let want = snapshot(src)?;
    let size = tree_size(&want);
    let cp_copy = |r: usize| work.join(format!("{name}.cp{r}"));
    let jt_copy = |r: usize| work.join(format!("{name}.jt{r}"));

    // Warm-up (untimed): brings the source into the page cache and checks
    // that both tools made the same tree as the source. Run "reps" is the
    // warm-up's pair.
    cp_a(src, &cp_copy(reps))?;
    let (_, stats) = jail_copy(src, &jt_copy(reps))?;
    compare(
        &format!("{name}: cp -a vs source"),
        &want,
        &snapshot(&cp_copy(reps))?,
    )?;
    compare(
        &format!("{name}: copy_tree vs source"),
        &want,
        &snapshot(&jt_copy(reps))?,
    )?;
    settle(work)?;

    let mut s = Samples::default();
    // Alternate who goes first, so that drift favours neither.
    for r in 0..reps {
        let cp_first = r % 2 == 0;
        for cp in [cp_first, !cp_first] {
            // Each timed copy is checked against the source too, after its
            // syncfs and outside the timing: a figure counts only for a
            // copy that is right.
            if cp {
                s.cp.push(cp_a(src, &cp_copy(r))?);
                s.syncfs_after_cp.push(ms(settle(work)?));
                let got = snapshot(&cp_copy(r))?;
                compare(&format!("{name}: cp -a run {r} vs source"), &want, &got)?;
            } else {
                s.copy_tree.push(jail_copy(src, &jt_copy(r))?.0);
                s.syncfs_after_copy_tree.push(ms(settle(work)?));
                let got = snapshot(&jt_copy(r))?;
                compare(&format!("{name}: copy_tree run {r} vs source"), &want, &got)?;
            }
        }
    }
    // Each remover gets cp's copy in one run and copy_tree's in the next, so
    // the two tools' inode layouts favour neither.
    for r in 0..reps {
        let (rm_gets, rt_gets) = if r % 2 == 0 {
            (cp_copy(r), jt_copy(r))
        } else {
            (jt_copy(r), cp_copy(r))
        };
        for rm in [r % 2 == 0, r % 2 == 1] {
            if rm {
                s.rm.push(rm_rf(&rm_gets)?);
            } else {
                s.remove_tree.push(jail_remove(&rt_gets)?);
            }
            settle(work)?;
        }
        ensure!(
            !rm_gets.exists() && !rt_gets.exists(),
            "{name}: removal left something"
        );
    }
    remove_tree(&cp_copy(reps))?;
    remove_tree(&jt_copy(reps))?;
    Ok(Measured {
        name,
        size,
        stats,
        s,
    })
}

/// Refuses to start when the copies kept side by side would not fit.
fn check_space(work: &Path, bytes: u64, reps: usize) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(work)?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    // Two copies per run plus the warm-up's, with room for metadata.
    let need = bytes * 2 * (reps as u64 + 1) * 11 / 10;
    ensure!(
        free > need,
        "{}: {} MB free, the copies need {} MB; set JAILTX_BENCH_DIR or lower JAILTX_BENCH_REPS",
        work.display(),
        free >> 20,
        need >> 20
    );
    Ok(())
}

/// The world is generated once and kept (it takes a while); a marker beside
/// it says it is complete and which generator made it.
fn world(k: &Knobs, scratch: &Path) -> Result<PathBuf> {
    if !k.full {
        let dst = scratch.join("world");
        build_world(&dst, &WORLD_SMOKE)?;
        return Ok(dst);
    }
    let dir = k.base.join("jailtx-bench-world");
    let tree = dir.join("world");
    let marker = dir.join(format!("complete-v{WORLD_VERSION}"));
    let regen = std::env::var_os("JAILTX_BENCH_REGEN").is_some_and(|v| v == "1");
    if marker.exists() && !regen {
        println!(
            "world: reusing {} (JAILTX_BENCH_REGEN=1 rebuilds)",
            tree.display()
        );
        return Ok(tree);
    }
    if dir.exists() {
        remove_tree(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let t = Instant::now();
    build_world(&tree, &WORLD_FULL)?;
    sync_tree(&tree)?;
    File::create(&marker)?;
    println!(
        "world: generated {} in {:.1} s",
        tree.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(tree)
}

fn main() -> Result<()> {
    let k = Knobs::from_env()?;
    let scratch = k.scratch("jailtx-bench-copy.")?;
    let work = scratch.path();
    let cp_version = Command::new("cp")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|e| format!("cp --version: {e}"));

    println!("== copy: copy_tree vs cp -a, remove_tree vs rm -rf");
    println!(
        "mode: {}; median (min–max) of {} runs, warm cache; {}; {cp_version}",
        k.mode("smoke (cargo test): small trees, figures mean nothing"),
        k.reps,
        common::machine(),
    );
    common::print_start(work, "tmpfs: not representative of a disk");

    let skel = work.join("skel");
    build_skel(&skel)?;
    let world = world(&k, work)?;
    settle(work)?;

    let spawn: Vec<f64> = (0..20)
        .map(|_| run(&mut Command::new("true")).map(|c| ms(c.wall)))
        .collect::<Result<_>>()?;

    check_space(work, tree_size(&snapshot(&world)?).bytes, k.reps)?;
    let results = [
        measure("skel", &skel, work, k.reps)?,
        measure("world", &world, work, k.reps)?,
    ];

    println!();
    println!("trees:");
    println!(
        "| tree | dirs | names (non-dir) | inodes | symlinks | extra hard-link names | bytes | copy_tree's count (files/dirs/symlinks/hardlinks/bytes) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for m in &results {
        let (t, c) = (&m.size, &m.stats);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({:.1} MB) | {}/{}/{}/{}/{} |",
            m.name,
            t.dirs,
            t.names,
            t.inodes,
            t.symlinks,
            t.extra_links,
            t.bytes,
            t.bytes as f64 / 1e6,
            c.files,
            c.dirs,
            c.symlinks,
            c.hardlinks,
            c.bytes
        );
    }
    println!();
    println!(
        "copy, ms, median (min–max); wall clock (target: copy_tree/cp -a ≤ 1.00) and CPU \
         (user+system) time:"
    );
    println!(
        "| tree | cp -a wall | copy_tree wall | wall ratio | cp -a CPU | copy_tree CPU | CPU ratio | \
         syncfs after cp -a | syncfs after copy_tree |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for m in &results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            spread(&m.s.cp.wall),
            spread(&m.s.copy_tree.wall),
            ratio(&m.s.copy_tree.wall, &m.s.cp.wall),
            spread(&m.s.cp.cpu),
            spread(&m.s.copy_tree.cpu),
            ratio(&m.s.copy_tree.cpu, &m.s.cp.cpu),
            spread(&m.s.syncfs_after_cp),
            spread(&m.s.syncfs_after_copy_tree),
        );
    }
    println!();
    println!("remove, ms, median (min–max):");
    println!(
        "| tree | rm -rf wall | remove_tree wall | wall ratio | rm -rf CPU | remove_tree CPU | CPU ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for m in &results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            spread(&m.s.rm.wall),
            spread(&m.s.remove_tree.wall),
            ratio(&m.s.remove_tree.wall, &m.s.rm.wall),
            spread(&m.s.rm.cpu),
            spread(&m.s.remove_tree.cpu),
            ratio(&m.s.remove_tree.cpu, &m.s.rm.cpu),
        );
    }
    println!();
    println!(
        "cp -a and rm -rf wall times include starting a process: `true` takes {} ms here.",
        spread(&spawn)
    );
    common::print_end();
    Ok(())
}
