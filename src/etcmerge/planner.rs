//! The planner: reads the three trees, decides per file, and turns the decisions into journaled steps.
//!
//! Per file, with base B (the old world's pristine `etc`), theirs T (the
//! current template's) and ours O (the target's `etc`):
//!
//! | case | action |
//! | --- | --- |
//! | T = B, mode too (the world did not change it) | nothing, whatever O is |
//! | T = B but for the mode, or O = T | O's contents kept; mode by the rule below |
//! | O = B (the admin never touched it) | follow T: update, add or remove |
//! | all three files, O ≠ B ≠ T | merged by the path's strategy (`strategy::TABLE`: line-wise diff3 by default, union, keyed records), or a proposal `NAME.jailtx-merge` beside O |
//! | T removed it, O changed; O removed it, T changed | conflict, O kept |
//!
//! A file's mode follows the same three-way rule ([`Node::merged_mode`]):
//! O's unless it equals B's, then T's; "=" above compares contents only.
//!
//! O is read only through `fs::beneath`; a symlink or special file where a
//! world has a file, or a directory that cannot be entered without following
//! a link, is refused and reported (noted, without changing the exit code,
//! when the new world did not change it). A file with a proposal waiting beside it
//! (unresolved) is left alone.
//!
//! Every change is a pair of steps around the commit point: the admin's
//! file is renamed aside (`NAME.jailtx-old`, checked against its BLAKE3 at
//! plan time) and the new one written before it; the aside copy is removed
//! after it. So a rollback puts back exactly the admin's bytes (the very same
//! inode), and the forward-only removals come after the point of no return.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::config::Layout;
use crate::fs::FsError;
use crate::fs::beneath::{self, DirFd, Kind};
use crate::ops::OpsError;
use crate::ops::jail::Site;
use crate::ops::{records, upgrade, validate};
use crate::plan::{Action, Plan};

use super::derived;
use super::diff3::Labels;
use super::record::{self, MergeRecord};
use super::report::{Conflict, MergeReport, Refusal, TargetReport};
use super::strategy::{self, Outcome, Strategy};
use super::tree::{self, Node, Tree};
use super::{ASIDE, Blob, PRISTINE_ETC, PROPOSAL};

/// File contents one plan may carry: a journal record holds at most 16 MiB.
const MAX_PLAN_BYTES: usize = 12 << 20;

/// A template's pristine `etc`, loaded.
pub struct WorldEtc {
    pub name: String,
    pub tree: Tree,
    pub id: String,
}

/// The pristine `etc` of template directory `name` in `j/`, if it has one.
pub fn load_world(layout: &Layout, name: &str) -> Result<Option<WorldEtc>, String> {
    let dir = layout.j.join(name).join(PRISTINE_ETC);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(None),
    }
    let tree = tree::load(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let id = tree::id(&tree);
    Ok(Some(WorldEtc {
        name: name.to_owned(),
        tree,
        id,
    }))
}

/// A `/etc` to merge: a jail's `js/NAME`, or `j/skel`.
struct Target {
    name: String,
    root: PathBuf,
}

fn targets(w: &Site, names: &[String]) -> Result<Vec<Target>, OpsError> {
    let l = w.layout;
    let jails = records::load_all(l)?;
    let skel = || Target {
        name: "skel".into(),
        root: l.skel.clone(),
    };
    let jail = |n: &str| Target {
        name: n.to_owned(),
        root: l.js.join(n),
    };
    if names.is_empty() {
        let mut out = Vec::new();
        if l.skel.is_dir() {
            out.push(skel());
        }
        out.extend(jails.iter().map(|r| jail(&r.name)));
        return Ok(out);
    }
    let mut out: Vec<Target> = Vec::new();
    for n in names {
        if out.iter().any(|t| &t.name == n) {
            continue;
        }
        if n == "skel" {
            out.push(skel());
            continue;
        }
        validate::jail_name(n)?;
        if !jails.iter().any(|r| &r.name == n) {
            return Err(format!("no jail named {n:?}; `jailtx status` lists the jails").into());
        }
        out.push(jail(n));
    }
    Ok(out)
}

/// The two templates a merge goes between, by their directory names in
/// `j/`. `upgrade`, `rollback` and `etc-merge` differ only in these: the
/// merge itself has no direction (base and theirs are two worlds, whichever
/// is older).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Between<'a> {
    /// Theirs: the template whose pristine `etc` the targets are merged to.
    pub to: &'a str,
    /// The template the targets are taken to be on when no record names
    /// their world: the one the last switch left (after an upgrade or a
    /// rollback, the newest archive; before a rollback, `mroot`), or none
    /// on a system never switched (then `to` itself: nothing to do).
    pub left: Option<&'a str>,
}

impl<'a> Between<'a> {
    /// The merge a rollback to archive `target` is followed by, as planned
    /// before the switch (`rollback --dry-run`): to the archive returned
    /// to, from the world each target was last merged to, or else from
    /// `mroot`, the template the rollback leaves. Once the rollback has
    /// committed, the same merge is [`plan`]'s: `target` is `mroot` then,
    /// and the template left the newest archive.
    pub fn rollback_to(target: &'a str) -> Between<'a> {
        Between {
            to: target,
            left: Some("mroot"),
        }
    }
}

/// Plans the merge of `names` (all jails and skel when empty) to the
/// current template, from the world each target was last merged to (its
/// record), else from the newest archive: after an upgrade the old world,
/// after a rollback the world rolled back from. Returns the plan (empty
/// when nothing is to change) and what it does, per target and file.
pub fn plan(w: &Site, names: &[String]) -> Result<(Plan, MergeReport), OpsError> {
    let archives = upgrade::archives(w)?;
    let between = Between {
        to: "mroot",
        left: archives.first().map(String::as_str),
    };
    plan_between(w, names, between)
}

/// [`plan`] to any template: `rollback --dry-run` shows the merge its
/// commit would be followed by, to the archive it returns to, before that
/// archive is `mroot`. Every other kept template can be a target's base.
pub fn plan_between(
    w: &Site,
    names: &[String],
    between: Between,
) -> Result<(Plan, MergeReport), OpsError> {
    let l = w.layout;
    let to_dir = l.j.join(between.to);
    if !to_dir.is_dir() {
        return Err(format!(
            "no template at {}; run `jailtx template build` first",
            to_dir.display()
        )
        .into());
    }
    let current = load_world(l, between.to)?.ok_or_else(|| {
        format!(
            "{} has no pristine etc ({PRISTINE_ETC}: it was built by a jailtx that kept none); \
             nothing to merge to until the next upgrade",
            to_dir.display()
        )
    })?;
    let mut worlds = Vec::new();
    let others = std::iter::once("mroot".to_owned()).chain(upgrade::archives(w)?);
    for a in others.filter(|a| a != between.to) {
        if let Some(x) = load_world(l, &a)? {
            worlds.push(x);
        }
    }
    let targets = targets(w, names)?;
    let skel_record = record::load(l, "skel")?;
    let list: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let mut plan = Plan::new(
        "etc-merge",
        format!("merge /etc of {} to {}", list.join(", "), between.to),
    );
    let mut report = MergeReport::default();
    let mut new_records = Vec::new();
    let mut due = Vec::new();
    for t in &targets {
        let own = record::load(l, &t.name)?;
        let inherited = (t.name != "skel").then_some(skel_record.as_ref()).flatten();
        let choice = Choice {
            current: &current,
            worlds: &worlds,
            left: between.left,
            own: own.as_ref(),
            inherited,
        };
        let (tr, rec) = plan_target(&mut plan, t, &choice)?;
        due.push((t.name.clone(), derived::due_after(&tr, &t.root)));
        report.targets.push(tr);
        if let Some(rec) = rec
            && own.as_ref() != Some(&rec)
        {
            new_records.push((t.name.clone(), rec));
        }
    }
    write_records(l, &mut plan, &new_records)?;
    let mut in_jails = Vec::new();
    for (name, steps) in &due {
        // The skel never runs: its record goes to each jail created from it.
        if let Some(all) = crate::ops::due::push_due(l, &mut plan, name, steps)?
            && name != "skel"
        {
            in_jails.push(format!("{name}: {}", crate::plan::derived::names(&all)));
        }
    }
    if !in_jails.is_empty() {
        plan.notes
            .insert(crate::plan::derived::NOTE.into(), in_jails.join("; "));
    }
    let bytes: usize = plan
        .steps
        .iter()
        .map(|s| match &s.action {
            Action::WriteFileIn { contents, .. } => contents.len(),
            _ => 0,
        })
        .sum();
    if bytes > MAX_PLAN_BYTES {
        return Err(format!(
            "the merge would write {bytes} bytes, more than one transaction holds; \
             merge fewer jails at a time (`jailtx etc-merge NAME`)"
        )
        .into());
    }
    plan.notes.insert("targets".into(), list.join(" "));
    plan.notes.insert("result".into(), report.summary());
    w.add_bystanders(&mut plan)?;
    Ok((plan, report))
}

fn write_records(
    l: &Layout,
    plan: &mut Plan,
    recs: &[(String, MergeRecord)],
) -> Result<(), String> {
    let dir = record::dir(l);
    if !recs.is_empty() && std::fs::symlink_metadata(&dir).is_err() {
        plan.push(
            "mkdir-etc-merge-records",
            Action::MakeDir {
                path: dir,
                mode: 0o700,
            },
        );
    }
    for (name, rec) in recs {
        let path = record::path(l, name);
        if std::fs::symlink_metadata(&path).is_ok() {
            let mut n = path.as_os_str().to_owned();
            n.push(ASIDE);
            let old = PathBuf::from(n);
            if std::fs::symlink_metadata(&old).is_ok() {
                return Err(format!(
                    "{} is left from an earlier run; remove it, then merge again",
                    old.display()
                ));
            }
            plan.push(
                format!("aside-record-{name}"),
                Action::Rename {
                    from: path.clone(),
                    to: old.clone(),
                },
            );
            plan.push_after_commit(
                format!("drop-record-{name}"),
                Action::RemoveTree { path: old },
            );
        }
        plan.push(
            format!("record-{name}"),
            Action::WriteFile {
                path,
                contents: rec.to_toml(),
                mode: 0o600,
            },
        );
    }
    Ok(())
}

/// What the base of one target is chosen from.
struct Choice<'a> {
    /// Theirs: the world merged to ([`Between::to`]).
    current: &'a WorldEtc,
    /// The other kept templates with a pristine `etc`.
    worlds: &'a [WorldEtc],
    /// The template a target without a usable record is on ([`Between::left`]).
    left: Option<&'a str>,
    /// The target's own record, and (jails) the skel's, which a jail without
    /// a record of its own was copied from.
    own: Option<&'a MergeRecord>,
    inherited: Option<&'a MergeRecord>,
}

impl<'a> Choice<'a> {
    fn by_id(&self, id: &str) -> Option<&'a WorldEtc> {
        std::iter::once(self.current)
            .chain(self.worlds.iter())
            .find(|w| w.id == id)
    }

    /// The base and, when it is not the recorded one, why.
    fn base(&self, etc_ino: u64) -> (Option<&'a WorldEtc>, Option<String>) {
        let mut note = None;
        let recorded = self.own.filter(|r| r.etc_ino == etc_ino).or(self.inherited);
        if let Some(r) = recorded {
            match self.by_id(&r.base) {
                Some(w) => return (Some(w), None),
                None => {
                    note = Some(format!(
                        "the world last merged to ({}) is no longer kept",
                        r.template
                    ))
                }
            }
        }
        // Never merged: the template in use before the newest switch (an
        // upgrade's archive), or the current one on a system never upgraded.
        match self.left {
            None => (Some(self.current), note),
            Some(a) => (self.worlds.iter().find(|w| w.name == a), note),
        }
    }
}

fn plan_target(
    plan: &mut Plan,
    t: &Target,
    choice: &Choice,
) -> Result<(TargetReport, Option<MergeRecord>), String> {
    let mut tr = TargetReport {
        target: t.name.clone(),
        etc: t.root.join("etc"),
        to: choice.current.name.clone(),
        ..Default::default()
    };
    let top = match beneath::open_root(&t.root) {
        Ok(d) => d,
        Err(FsError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tr.note = Some(format!("no {}: nothing to merge", t.root.display()));
            return Ok((tr, None));
        }
        Err(e) => return Err(e.to_string()),
    };
    let etc_name = OsStr::new("etc");
    let etc = match top.subdir(etc_name) {
        Ok(Some(d)) => d,
        Ok(None) => {
            tr.note = Some("no etc: nothing to merge".into());
            return Ok((tr, None));
        }
        Err(FsError::Refused { why, .. }) => {
            tr.refused.push(Refusal {
                path: "etc".into(),
                why: format!("{why}; nothing merged"),
            });
            return Ok((tr, None));
        }
        Err(e) => return Err(e.to_string()),
    };
    let etc_ino = top
        .stat(etc_name)
        .map_err(|e| e.to_string())?
        .map(|s| s.ino)
        .unwrap_or(0);
    let record = MergeRecord {
        base: choice.current.id.clone(),
        template: choice.current.name.clone(),
        etc_ino,
    };
    let (base, note) = choice.base(etc_ino);
    tr.note = note;
    let Some(base) = base else {
        tr.note = Some(format!(
            "{} has no pristine etc (built before jailtx kept one): nothing merged; \
             later merges start from {}",
            choice.left.unwrap_or("the old template"),
            choice.current.name
        ));
        return Ok((tr, Some(record)));
    };
    tr.from = Some(base.name.clone());
    tr.unresolved = tree::proposals(&etc, PROPOSAL)
        .into_iter()
        .map(|p| format!("etc/{}", p.display()))
        .collect();
    let ours_label = format!("{} (yours)", t.name);
    let base_label = format!("{} (old world)", base.name);
    let theirs_label = format!("{} (new world)", choice.current.name);
    let mut m = Merger {
        target: &t.name,
        root: &t.root,
        top: &top,
        labels: Labels {
            ours: &ours_label,
            base: &base_label,
            theirs: &theirs_label,
        },
        plan,
        tr: &mut tr,
        made: BTreeSet::new(),
        skip: Vec::new(),
    };
    m.run(&base.tree, &choice.current.tree)?;
    Ok((tr, Some(record)))
}

/// Where a file's directory stands in the target.
enum Parent {
    Dir(DirFd),
    /// Made by an earlier step of this plan: empty.
    ToBeMade,
    Missing,
    Refused(String),
}

struct Merger<'a> {
    target: &'a str,
    root: &'a Path,
    top: &'a DirFd,
    labels: Labels<'a>,
    plan: &'a mut Plan,
    tr: &'a mut TargetReport,
    /// Directories (relative to etc) this plan makes.
    made: BTreeSet<PathBuf>,
    /// Subtrees (relative to etc) left alone.
    skip: Vec<PathBuf>,
}

fn with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let mut n = name.to_owned();
    n.push(suffix);
    n
}

fn io(e: FsError) -> String {
    e.to_string()
}

impl Merger<'_> {
    fn run(&mut self, base: &Tree, theirs: &Tree) -> Result<(), String> {
        let keys: BTreeSet<&PathBuf> = base.keys().chain(theirs.keys()).collect();
        for k in keys {
            if self.skip.iter().any(|s| k.starts_with(s)) {
                continue;
            }
            let (b, t) = (base.get(k), theirs.get(k));
            if Node::is_dir(b) || Node::is_dir(t) {
                self.dir(k, b, t)?;
            } else {
                self.file(k, b, t)?;
            }
        }
        // A directory noted as a symlink before a changed file below it was
        // refused is a refusal, said once.
        let refused = &self.tr.refused;
        self.tr
            .notes
            .retain(|n| !refused.iter().any(|r| r.path == n.path));
        Ok(())
    }

    /// Notes `k` when the target has a symlink or special file there (a
    /// symlink where the world has a directory: `dir`) although the new
    /// world did not change it: left alone as a refusal would be, but
    /// nothing was to change, so the operator is told without being asked
    /// for. Best effort: one lstat through the same no-follow walk, and a
    /// failure only means no note (a changed entry is checked in full).
    fn note_unfollowed(&mut self, k: &Path, dir: bool) {
        let Ok(Parent::Dir(d)) = self.parent(k) else {
            return;
        };
        let Ok(Some(st)) = d.stat(k.file_name().unwrap_or_default()) else {
            return;
        };
        let world_has = if dir { "a directory" } else { "a regular file" };
        let why = match st.kind {
            Kind::Symlink => "a symlink",
            Kind::Special if !dir => "a special file",
            _ => return,
        };
        self.tr.notes.push(Refusal {
            path: Self::shown(k),
            why: format!(
                "{why} where the world has {world_has}: never followed, left alone; \
                 the new world did not change it"
            ),
        });
    }

    /// `etc/k`, as reported and as the steps name it below the root.
    fn rel(k: &Path) -> PathBuf {
        Path::new("etc").join(k)
    }

    fn shown(k: &Path) -> String {
        Self::rel(k).display().to_string()
    }

    fn step(&self, verb: &str, k: &Path) -> String {
        format!("{verb}-{}-{}", self.target, Self::shown(k))
    }

    fn refuse(&mut self, k: &Path, why: impl Into<String>) {
        self.tr.refused.push(Refusal {
            path: Self::shown(k),
            why: why.into(),
        });
        self.skip.push(k.to_owned());
    }

    fn conflict(&mut self, k: &Path, why: impl Into<String>) {
        self.tr.conflicts.push(Conflict {
            path: Self::shown(k),
            proposal: None,
            why: why.into(),
        });
    }

    fn parent(&self, k: &Path) -> Result<Parent, String> {
        let p = k.parent().unwrap_or(Path::new(""));
        if self.made.contains(p) {
            return Ok(Parent::ToBeMade);
        }
        match self.top.walk(&Self::rel(p)) {
            Ok(Some(d)) => Ok(Parent::Dir(d)),
            Ok(None) => Ok(Parent::Missing),
            Err(FsError::Refused { why, .. }) => Ok(Parent::Refused(why)),
            Err(e) => Err(io(e)),
        }
    }

    /// A file's directory that is not there to merge into: report it once
    /// and leave its subtree alone. `true` when `d` is usable.
    fn usable(&mut self, k: &Path, parent: &Parent) -> bool {
        let p = k.parent().unwrap_or(Path::new("")).to_owned();
        match parent {
            Parent::Dir(_) | Parent::ToBeMade => true,
            Parent::Missing => {
                self.conflict(
                    &p,
                    "removed here; the new world changed files in it: left alone",
                );
                self.skip.push(p);
                false
            }
            Parent::Refused(why) => {
                let why = why.clone();
                self.refuse(&p, why);
                false
            }
        }
    }

    fn dir(&mut self, k: &Path, b: Option<&Node>, t: Option<&Node>) -> Result<(), String> {
        let name = k.file_name().unwrap_or_default();
        match (Node::is_dir(b), t) {
            (false, Some(Node::Dir { mode, uid, gid })) => {
                let parent = self.parent(k)?;
                if !self.usable(k, &parent) {
                    return Ok(());
                }
                let there = match &parent {
                    Parent::Dir(d) => d.stat(name).map_err(io)?.map(|s| s.kind),
                    _ => None,
                };
                match there {
                    None => {
                        self.plan.push(
                            self.step("mkdir", k),
                            Action::MakeDirIn {
                                root: self.root.to_owned(),
                                rel: Self::rel(k),
                                mode: *mode,
                                uid: *uid,
                                gid: *gid,
                            },
                        );
                        self.made.insert(k.to_owned());
                        self.tr.added.push(format!("{}/", Self::shown(k)));
                    }
                    Some(Kind::Dir) => {}
                    Some(Kind::Symlink) => {
                        self.refuse(k, "a symlink where the new world has a directory")
                    }
                    Some(_) => {
                        self.conflict(k, "the new world has a directory here: left alone");
                        self.skip.push(k.to_owned());
                    }
                }
            }
            (true, Some(n)) if !Node::is_dir(Some(n)) => {
                let what = Node::what(Some(n));
                self.conflict(
                    k,
                    format!("the new world replaced this directory with {what}: left alone"),
                );
            }
            (true, Some(Node::Dir { .. })) => self.note_unfollowed(k, true),
            // One the new world dropped: its files are merged one by one;
            // directories themselves are never removed.
            _ => {}
        }
        Ok(())
    }

    fn file(&mut self, k: &Path, b: Option<&Node>, t: Option<&Node>) -> Result<(), String> {
        // The new world changed neither the contents nor the mode: nothing
        // to carry over, whatever ours is. A mode-only change goes on.
        if Node::identical(b, t) {
            if matches!(b, Some(Node::File { .. })) {
                self.note_unfollowed(k, false);
            }
            return Ok(());
        }
        let parent = self.parent(k)?;
        if !self.usable(k, &parent) {
            return Ok(());
        }
        let Parent::Dir(d) = parent else {
            // Its directory is made by this plan: a new file of the new world.
            return self.follow(k, None, None, b, t);
        };
        let name = k.file_name().unwrap_or_default();
        if d.stat(&with_suffix(name, PROPOSAL)).map_err(io)?.is_some() {
            // Listed as unresolved; a new proposal waits until that one goes.
            return Ok(());
        }
        let ours = match tree::read_ours(&d, name) {
            Ok(o) => o.map(|(n, _)| n),
            Err(FsError::Refused { why, .. }) => {
                self.refuse(k, why);
                return Ok(());
            }
            Err(e) => return Err(io(e)),
        };
        let o = ours.as_ref();
        let file = |n: Option<&Node>| matches!(n, Some(Node::File { .. }));
        match o {
            Some(Node::Special) => {
                self.refuse(k, "a special file where the world has a file");
                return Ok(());
            }
            Some(Node::Dir { .. }) => {
                let what = Node::what(t);
                self.conflict(
                    k,
                    format!("a directory here, the new world has {what}: left alone"),
                );
                self.skip.push(k.to_owned());
                return Ok(());
            }
            Some(Node::Link(_)) if file(b) || file(t) => {
                self.refuse(
                    k,
                    "a symlink where the world has a regular file: never followed, left alone",
                );
                return Ok(());
            }
            _ => {}
        }
        if Node::same(b, t) || Node::same(o, t) {
            // Ours already has the contents the rules give: its own when
            // the world changed only the mode (whatever the admin did to
            // the bytes stays), or the new world's. Only the mode is left.
            return self.remode(k, &d, o, b, t);
        }
        if Node::same(o, b) {
            return self.follow(k, Some(&d), o, b, t);
        }
        self.both(k, &d, o, b, t)
    }

    /// Moves ours aside before the commit point and removes the aside copy
    /// after it; `false` (and a refusal) when the aside name is taken.
    fn aside(&mut self, k: &Path, d: &DirFd, o: &Node) -> Result<bool, String> {
        let name = k.file_name().unwrap_or_default();
        if d.stat(&with_suffix(name, ASIDE)).map_err(io)?.is_some() {
            self.refuse(
                k,
                format!("{}{ASIDE} is in the way; remove it", Self::shown(k)),
            );
            return Ok(false);
        }
        let rel = Self::rel(k);
        let aside = PathBuf::from(with_suffix(rel.as_os_str(), ASIDE));
        let expect = match o {
            Node::File { bytes, .. } => Some(blake3::hash(bytes).to_hex().to_string()),
            _ => None,
        };
        self.plan.push(
            self.step("aside", k),
            Action::RenameIn {
                root: self.root.to_owned(),
                from: rel,
                to: aside.clone(),
                expect,
            },
        );
        self.plan.push_after_commit(
            self.step("drop", k),
            Action::RemoveFileIn {
                root: self.root.to_owned(),
                rel: aside,
            },
        );
        Ok(true)
    }

    /// Writes `n` at `k` (the name is free by then): a file with the mode
    /// the three-way rule gives and ours' owner when ours was a file, or a link.
    fn put(&mut self, verb: &str, k: &Path, n: &Node, o: Option<&Node>, b: Option<&Node>) {
        let action = match n {
            Node::File {
                bytes,
                mode,
                uid,
                gid,
            } => {
                let (mode, uid, gid) = match o {
                    Some(Node::File {
                        mode: om, uid, gid, ..
                    }) => (Node::merged_mode(*om, b, *mode), *uid, *gid),
                    _ => (*mode, *uid, *gid),
                };
                Action::WriteFileIn {
                    root: self.root.to_owned(),
                    rel: Self::rel(k),
                    contents: Blob(bytes.clone()),
                    mode,
                    uid,
                    gid,
                }
            }
            Node::Link(target) => Action::SymlinkIn {
                root: self.root.to_owned(),
                rel: Self::rel(k),
                target: target.clone(),
            },
            Node::Dir { .. } | Node::Special => return,
        };
        self.plan.push(self.step(verb, k), action);
    }

    /// Ours keeps its contents; its mode becomes what the three-way rule
    /// gives, by writing the same bytes with that mode over it (the same
    /// aside-and-write pair as any update, so a rollback gives back the very
    /// inode and the apply re-checks the bytes the plan read). Nothing when
    /// ours or theirs is not a file, or the mode is already right.
    fn remode(
        &mut self,
        k: &Path,
        d: &DirFd,
        o: Option<&Node>,
        b: Option<&Node>,
        t: Option<&Node>,
    ) -> Result<(), String> {
        let (
            Some(
                on @ Node::File {
                    bytes,
                    mode,
                    uid,
                    gid,
                },
            ),
            Some(tm),
        ) = (o, Node::mode(t))
        else {
            return Ok(());
        };
        if Node::merged_mode(*mode, b, tm) == *mode {
            return Ok(());
        }
        if self.aside(k, d, on)? {
            let same_bytes = Node::File {
                bytes: bytes.clone(),
                mode: tm,
                uid: *uid,
                gid: *gid,
            };
            self.put("update", k, &same_bytes, o, b);
            self.tr.updated.push(Self::shown(k));
        }
        Ok(())
    }

    /// Ours is as the old world had it: becomes what the new world has.
    fn follow(
        &mut self,
        k: &Path,
        d: Option<&DirFd>,
        o: Option<&Node>,
        b: Option<&Node>,
        t: Option<&Node>,
    ) -> Result<(), String> {
        if matches!(t, Some(Node::Special)) {
            return Ok(());
        }
        match (o, t, d) {
            (Some(on), None, Some(d)) => {
                let moved = self.aside(k, d, on)?;
                if moved {
                    self.tr.removed.push(Self::shown(k));
                }
            }
            (None, Some(tn), _) => {
                self.put("add", k, tn, None, b);
                self.tr.added.push(Self::shown(k));
            }
            (Some(on), Some(tn), Some(d)) => {
                let moved = self.aside(k, d, on)?;
                if moved {
                    self.put("update", k, tn, o, b);
                    self.tr.updated.push(Self::shown(k));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Both sides changed the file: merged by the strategy its path has in
    /// `strategy::TABLE` (line-wise when none).
    fn both(
        &mut self,
        k: &Path,
        d: &DirFd,
        o: Option<&Node>,
        b: Option<&Node>,
        t: Option<&Node>,
    ) -> Result<(), String> {
        let empty = Vec::new();
        match (o, b, t) {
            (
                Some(
                    on @ Node::File {
                        bytes: ob,
                        mode,
                        uid,
                        gid,
                    },
                ),
                None | Some(Node::File { .. }),
                Some(Node::File { bytes: tb, .. }),
            ) => {
                let bb = match b {
                    Some(Node::File { bytes, .. }) => bytes,
                    _ => &empty,
                };
                let owner = Owner {
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                };
                match strategy::merge(&Self::shown(k), bb, ob, tb, self.labels) {
                    // The new world's change is in ours already (the same
                    // edit on both sides): only the mode may follow it.
                    Outcome::Clean(m, _) if m == *ob => return self.remode(k, d, o, b, t),
                    Outcome::Clean(m, strategy) => {
                        self.write_merged(k, d, on, b, t, m, strategy)?
                    }
                    Outcome::Conflict(text) => {
                        let why = if b.is_none() {
                            "added here and by the new world, differently"
                        } else {
                            "changed here and by the new world"
                        };
                        self.propose(k, text, owner, why.into());
                    }
                    Outcome::Records {
                        text,
                        proposal,
                        why,
                        strategy,
                    } => {
                        // The records that merge are merged now (a user the
                        // new world adds exists at once); the clashing ones
                        // stay as the admin has them until resolved.
                        if text != *ob {
                            self.write_merged(k, d, on, b, t, text, strategy)?;
                        }
                        self.propose(k, proposal, owner, why);
                    }
                }
            }
            (Some(_), _, None) => self.conflict(k, "removed by the new world, changed here: kept"),
            (None, _, Some(_)) => {
                self.conflict(k, "removed here, changed by the new world: not restored")
            }
            _ => self.conflict(k, "changed here and by the new world: kept"),
        }
        Ok(())
    }

    /// Ours aside, the merged `bytes` in its place (mode by the three-way
    /// rule, ours' owner), reported as merged by `strategy`.
    #[allow(clippy::too_many_arguments)]
    fn write_merged(
        &mut self,
        k: &Path,
        d: &DirFd,
        on: &Node,
        b: Option<&Node>,
        t: Option<&Node>,
        bytes: Vec<u8>,
        strategy: Strategy,
    ) -> Result<(), String> {
        let Node::File { mode, uid, gid, .. } = on else {
            return Ok(());
        };
        if self.aside(k, d, on)? {
            // `put` gives it the mode of the three-way rule.
            let merged = Node::File {
                bytes,
                mode: Node::mode(t).unwrap_or(*mode),
                uid: *uid,
                gid: *gid,
            };
            self.put("merge", k, &merged, Some(on), b);
            self.tr.merged.push(Self::shown(k));
            self.tr.strategy.insert(Self::shown(k), strategy.name());
        }
        Ok(())
    }

    /// A proposal with conflict markers beside ours, with ours' owner and
    /// never executable (an rc.d or periodic directory must not run one).
    fn propose(&mut self, k: &Path, text: Vec<u8>, owner: Owner, why: String) {
        let rel = PathBuf::from(with_suffix(Self::rel(k).as_os_str(), PROPOSAL));
        self.plan.push(
            self.step("propose", k),
            Action::WriteFileIn {
                root: self.root.to_owned(),
                rel: rel.clone(),
                contents: Blob(text),
                mode: owner.mode & 0o666,
                uid: owner.uid,
                gid: owner.gid,
            },
        );
        self.tr.conflicts.push(Conflict {
            path: Self::shown(k),
            proposal: Some(rel.display().to_string()),
            why,
        });
    }
}

/// Ours' mode and owner, which a proposal takes.
#[derive(Clone, Copy)]
struct Owner {
    mode: u32,
    uid: u32,
    gid: u32,
}
