//! `upgrade`, `rollback` and `prune`: switching every jail from one template
//! to another inside one short window, on the same engine as everything else.
//!
//! The window (SPEC section 3): archive `mroot`, move the new template in,
//! move the carry-over paths across (the jails still run, on the old
//! template under its archive name), then switch each jail on its own
//! (stop, unmount `s` and the root, mount, start), canaries first, and
//! health-check.
//! Everything slow (building, shaping, hashing) happens before it; removals
//! (pruning) happen after the commit, outside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Layout;
use crate::engine::StepTiming;
use crate::plan::{Action, ArchiveName, Backend, JailName, JailSpec, Plan, Source};

use super::OpsError;
use super::jail::Site;
use super::validate;

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The manifest file of the template directory called `name` (`mroot`, `mroot2`, …).
pub fn manifest_file(w: &Site, name: &str) -> PathBuf {
    w.layout.manifests.join(format!("{name}.manifest"))
}

/// `(date, n)` of an archive name `mroot.YYYYMMDD[.N]` (see [`ArchiveName`]).
pub fn parse_archive(name: &str) -> Option<(u32, u32)> {
    ArchiveName::exact(name).map(|a| a.date_and_number())
}

/// Archived templates in `j/`, newest first.
pub fn archives(w: &Site) -> Result<Vec<String>, OpsError> {
    let dir = &w.layout.j;
    let mut found: Vec<(u32, u32, String)> = std::fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let (d, n) = parse_archive(&name)?;
            e.path().is_dir().then_some((d, n, name))
        })
        .collect();
    found.sort();
    found.reverse();
    Ok(found.into_iter().map(|(_, _, n)| n).collect())
}

/// A fresh archive name for today: `mroot.YYYYMMDD`, then `.N` one above the
/// highest number the day already has. Never reusing a lower number keeps
/// name order chronological even after a rollback took an archive back out,
/// which `prune` relies on.
pub fn new_archive_name(w: &Site, today: &str) -> Result<String, OpsError> {
    let base = format!("mroot.{today}");
    let day: u32 = today.parse().map_err(|_| format!("bad date {today}"))?;
    let taken = |n: &str| exists(&w.layout.j.join(n)) || exists(&manifest_file(w, n));
    let highest = archives(w)?
        .iter()
        .filter_map(|a| parse_archive(a))
        .filter(|(d, _)| *d == day)
        .map(|(_, n)| n)
        .max();
    let mut n = match highest {
        None if !taken(&base) => return Ok(base),
        None => 1,
        Some(h) => h + 1,
    };
    while taken(&format!("{base}.{n}")) {
        n += 1;
    }
    Ok(format!("{base}.{n}"))
}

fn today() -> String {
    chrono::Local::now().format("%Y%m%d").to_string()
}

/// The jails an upgrade switches first, and how long they must stay healthy
/// before the others switch. No jails: every jail switches at once.
#[derive(Debug, Clone, Default)]
pub struct Canary {
    pub jails: Vec<JailName>,
    pub wait_secs: u64,
}

/// A jail as the switch finds it: whether it runs, and which of its root and
/// `s` are mounted.
struct Found {
    name: String,
    spec: JailSpec,
    ran: bool,
    root: bool,
    s: bool,
}

/// The template a switch moves in: a staged or archived directory, and
/// which of its state files (manifest, origin) move along with it.
struct Target<'a> {
    dir: &'a Path,
    /// Its name under `j/` and in the state dir (`mroot2`, `mroot.DATE`).
    name: &'a str,
    manifest: bool,
    origin: bool,
}

/// Appends the switch to `target`. Returns the indices of the window's
/// first and last steps.
///
/// The templates are renamed first, while the jails still run: a mount
/// holds the directory, not its name, so a running jail stays on the old
/// template, now at `archive`. Then each jail switches on its own (stop,
/// unmount `s` and the root, mount the root from `mroot` and `s`, start):
/// a jail is down for its own stop and start only, and the engine runs the
/// jails' chains side by side. Canaries switch first and are health-checked,
/// then soak (`CanaryWait`, a step of its own) before any other jail stops.
fn switch(
    w: &Site,
    plan: &mut Plan,
    to: &Target,
    archive: &str,
    canary: &Canary,
) -> Result<(usize, usize), OpsError> {
    let (target, target_name) = (to.dir, to.name);
    let l = w.layout;
    let first = plan.steps.len();
    let running: Vec<_> = w.host.running()?;
    let mut jails = Vec::new();
    for rec in super::records::load_all(l)? {
        let spec = rec.spec(l, w.cfg);
        let ran = running
            .iter()
            .any(|r| r.name == spec.name && r.path == spec.path);
        let root = w.host.is_mounted(&spec.path)?;
        let s = w.host.is_mounted(&spec.path.join("s"))?;
        jails.push(Found {
            name: rec.name,
            spec,
            ran,
            root,
            s,
        });
    }
    check_canaries(&jails, canary)?;
    let archive_dir = l.j.join(archive);
    plan.push(
        "archive-mroot",
        Action::Rename {
            from: l.mroot.clone(),
            to: archive_dir.clone(),
        },
    );
    if exists(&manifest_file(w, "mroot")) {
        plan.push(
            "archive-manifest",
            Action::Rename {
                from: manifest_file(w, "mroot"),
                to: manifest_file(w, archive),
            },
        );
    }
    plan.push(
        "switch-mroot",
        Action::Rename {
            from: target.to_owned(),
            to: l.mroot.clone(),
        },
    );
    if to.manifest {
        plan.push(
            "switch-manifest",
            Action::Rename {
                from: manifest_file(w, target_name),
                to: manifest_file(w, "mroot"),
            },
        );
    }
    // A template's origin (a bundle's signer, say) moves with it too.
    let origin = |name: &str| super::bundle::origin_file(l, name);
    if exists(&origin("mroot")) {
        plan.push(
            "archive-origin",
            Action::Rename {
                from: origin("mroot"),
                to: origin(archive),
            },
        );
    }
    if to.origin {
        plan.push(
            "switch-origin",
            Action::Rename {
                from: origin(target_name),
                to: origin("mroot"),
            },
        );
    }
    // Below `j/`, resolved without following any link: the templates'
    // trees came from worlds, and a template made before worlds were
    // checked may hold a link on the way (`usr -> /usr`). Such a way is
    // refused here, before anything moves (a refused move in the window
    // would also refuse its own undo).
    let j = crate::fs::beneath::open_root(&l.j).map_err(|e| e.to_string())?;
    for rel in &w.cfg.carry_over {
        if exists(&l.mroot.join(rel)) {
            let target_dir = target.file_name().map(Path::new).unwrap_or(target);
            for top in [Path::new("mroot"), target_dir] {
                if let Some(parent) = top.join(rel).parent() {
                    j.walk(parent).map_err(|e| {
                        format!(
                            "carry-over {}: {e}; move that aside (jailtx never made it), then run the command again",
                            rel.display()
                        )
                    })?;
                }
            }
            plan.push(
                format!("carry-{}", rel.display()).replace('/', "-"),
                Action::RenameIn {
                    root: l.j.clone(),
                    from: Path::new(archive).join(rel),
                    to: Path::new("mroot").join(rel),
                    expect: None,
                },
            );
        }
    }
    let is_canary = |f: &&Found| canary.jails.iter().any(|c| c.as_str() == f.name);
    let (canaries, rest): (Vec<&Found>, Vec<&Found>) = jails.iter().partition(is_canary);
    let checks = |group: &[&Found]| -> Vec<(JailSpec, Option<String>)> {
        group
            .iter()
            .filter(|f| f.ran)
            .map(|f| (f.spec.clone(), w.cfg.health.command_for(&f.name)))
            .collect()
    };
    let timeout_secs = w.cfg.health.timeout_secs;
    if !canaries.is_empty() {
        switch_jails(plan, l, &canaries, &archive_dir);
        let checked = checks(&canaries);
        plan.push(
            "health-check-canary",
            Action::HealthCheck {
                jails: checked.clone(),
                timeout_secs,
            },
        );
        plan.push(
            "canary-wait",
            Action::CanaryWait {
                jails: checked,
                wait_secs: canary.wait_secs,
                timeout_secs,
            },
        );
    }
    switch_jails(plan, l, &rest, &archive_dir);
    let all: Vec<&Found> = jails.iter().collect();
    let started = checks(&all);
    if !started.is_empty() {
        plan.push(
            "health-check",
            Action::HealthCheck {
                jails: started,
                timeout_secs,
            },
        );
    }
    Ok((first, plan.steps.len().saturating_sub(1)))
}

/// Canaries must be jails that run: a stopped one has no health to check.
fn check_canaries(jails: &[Found], canary: &Canary) -> Result<(), OpsError> {
    for c in &canary.jails {
        match jails.iter().find(|f| f.name == c.as_str()) {
            None => {
                let names: Vec<&str> = jails.iter().map(|f| f.name.as_str()).collect();
                return Err(OpsError::Refused(format!(
                    "--canary {c}: no such jail (jails: {}); name jails that exist",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            Some(f) if !f.ran => {
                return Err(OpsError::Refused(format!(
                    "--canary {c}: the jail is not running, so its health cannot be checked; start it or leave it out of --canary"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Each jail's own chain: stop, unmount `s` and the root (whose template now
/// lives at `archive_dir`), mount the root from `mroot` and `s`, start. The
/// steps of one jail are consecutive, so the engine's chains are the jails.
fn switch_jails(plan: &mut Plan, l: &Layout, jails: &[&Found], archive_dir: &Path) {
    for f in jails {
        let name = &f.name;
        if f.ran {
            plan.push(
                format!("stop-{name}"),
                Action::StopJail {
                    jail: f.spec.clone(),
                },
            );
        }
        if f.s {
            plan.push(
                format!("unmount-s-{name}"),
                Action::Unmount {
                    src: l.js.join(name),
                    dst: f.spec.path.join("s"),
                    read_only: false,
                },
            );
        }
        if f.root {
            plan.push(
                format!("unmount-root-{name}"),
                Action::Unmount {
                    src: archive_dir.to_owned(),
                    dst: f.spec.path.clone(),
                    read_only: true,
                },
            );
            plan.push(
                format!("mount-root-{name}"),
                Action::Mount {
                    src: l.mroot.clone(),
                    dst: f.spec.path.clone(),
                    read_only: true,
                },
            );
        }
        if f.s {
            plan.push(
                format!("mount-s-{name}"),
                Action::Mount {
                    src: l.js.join(name),
                    dst: f.spec.path.join("s"),
                    read_only: false,
                },
            );
        }
        if f.ran {
            plan.push(
                format!("start-{name}"),
                Action::StartJail {
                    jail: f.spec.clone(),
                },
            );
        }
    }
}

/// The downtime window: from the start of its first step to the end of its
/// last, both run in this run (a resumed transaction has no such figure).
/// Also each jail's own downtime, from the start of its stop to the end of
/// its start (exec.start exited 0), for the jails whose stop and start both
/// ran in this run, as `jail_downtime_ms` (`NAME=MS` pairs, by name) and
/// the longest as `max_jail_downtime_ms`. Also records `to`: the id of the
/// template now current (its manifest).
pub fn downtime_notes(
    window: (usize, usize),
    current_manifest: PathBuf,
) -> impl Fn(&[StepTiming]) -> BTreeMap<String, String> {
    move |timings: &[StepTiming]| {
        let mut notes = BTreeMap::new();
        if let Ok(id) = crate::manifest::template_id(&current_manifest) {
            notes.insert("to".into(), short_id(&id));
        }
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        let inside: Vec<&StepTiming> = timings
            .iter()
            .filter(|t| (window.0..=window.1).contains(&t.index))
            .collect();
        let ran = |i: usize| inside.iter().any(|t| t.index == i);
        // Steps of one batch run side by side: the window spans them all.
        if ran(window.0) && ran(window.1) {
            let start = inside.iter().map(|t| t.start_us).min().unwrap_or(0);
            let end = inside.iter().map(|t| t.end_us).max().unwrap_or(0);
            notes.insert("downtime_ms".into(), ms(end.saturating_sub(start)));
        }
        let mut per_jail = BTreeMap::new();
        for stop in &inside {
            let Some(name) = stop.name.strip_prefix("stop-") else {
                continue;
            };
            let start = format!("start-{name}");
            if let Some(up) = inside.iter().find(|t| t.name == start) {
                per_jail.insert(name.to_owned(), up.end_us.saturating_sub(stop.start_us));
            }
        }
        if let Some((name, longest)) = per_jail.iter().max_by_key(|(_, us)| **us) {
            notes.insert("max_jail_downtime_ms".into(), ms(*longest));
            notes.insert("max_jail_downtime_jail".into(), name.clone());
            let all: Vec<String> = per_jail
                .iter()
                .map(|(n, us)| format!("{n}={}", ms(*us)))
                .collect();
            notes.insert("jail_downtime_ms".into(), all.join(" "));
        }
        notes
    }
}

/// The first 12 hex digits of a template id, as `status` and `history` show it.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The id of the current template, when it has a manifest.
pub fn current_id(w: &Site) -> Option<String> {
    crate::manifest::template_id(&manifest_file(w, "mroot"))
        .ok()
        .map(|id| short_id(&id))
}

fn check_carry_over_target(w: &Site, target: &Path) -> Result<(), OpsError> {
    for rel in &w.cfg.carry_over {
        if exists(&w.layout.mroot.join(rel)) && exists(&target.join(rel)) {
            return Err(format!(
                "{} already has {}; the carry-over would overwrite it: move one aside",
                target.display(),
                rel.display()
            )
            .into());
        }
    }
    Ok(())
}

/// FreeBSD: an installed world holds `schg` files (libc, ld-elf.so, the
/// PRECIOUSPROG binaries, var/empty) that cannot be unlinked until
/// `chflags -R 0`; the step goes right before the tree's removal (of a
/// template, or of a purged jail's data).
pub(super) fn clear_flags_after_commit(w: &Site, plan: &mut Plan, step: &str, path: PathBuf) {
    if w.backend == Backend::FreeBsd {
        plan.push_after_commit(step, Action::ClearFlags { path });
    }
}

/// Plans an upgrade. Returns the plan and its window's step indices.
pub fn plan_upgrade(
    w: &Site,
    source: Source,
    canary: &Canary,
) -> Result<(Plan, (usize, usize)), OpsError> {
    plan_upgrade_on(w, source, canary, &today())
}

/// [`plan_upgrade`] with the archive's date (`YYYYMMDD`) given: reproducible plans.
pub fn plan_upgrade_on(
    w: &Site,
    source: Source,
    canary: &Canary,
    today: &str,
) -> Result<(Plan, (usize, usize)), OpsError> {
    plan_upgrade_from(w, source, canary, today, None)
}

/// Plans an upgrade from the bundle `file`: checked (signature, header,
/// every entry) and, with `stage` (not in a dry run), unpacked to `mroot2`
/// with its tree's id checked and its manifest written, all before the
/// transaction, so a refusal is exit 2 with nothing changed. The tree is
/// already shaped: no shape step.
pub fn plan_upgrade_bundle(
    w: &Site,
    file: &Path,
    canary: &Canary,
    stage: bool,
) -> Result<(Plan, (usize, usize)), OpsError> {
    let (checked, _) = super::bundle::check(w.cfg, file)?;
    let planned = plan_upgrade_from(
        w,
        checked.source.clone(),
        canary,
        &today(),
        Some(&checked.origin),
    )?;
    if stage {
        super::bundle::stage(w.layout, w.cfg, &checked)?;
    }
    Ok(planned)
}

fn plan_upgrade_from(
    w: &Site,
    source: Source,
    canary: &Canary,
    today: &str,
    origin: Option<&super::bundle::Origin>,
) -> Result<(Plan, (usize, usize)), OpsError> {
    validate::source(&source)?;
    let l = w.layout;
    if !l.mroot.is_dir() {
        return Err(format!(
            "no template at {}; run `jailtx template build` first",
            l.mroot.display()
        )
        .into());
    }
    for stale in [&l.mroot2, &crate::world::partial_path(&l.mroot2)] {
        if exists(stale) {
            return Err(format!(
                "{} is left from an earlier build; remove it, then upgrade again",
                stale.display()
            )
            .into());
        }
    }
    if let Source::Dir(d) = &source
        && let Ok(real) = d.canonicalize()
        && (real.starts_with(&l.j) || l.j.starts_with(&real))
    {
        return Err(format!(
            "--from-dir {}: the world cannot overlap {}",
            d.display(),
            l.j.display()
        )
        .into());
    }
    let staged_manifest = manifest_file(w, "mroot2");
    for stale in [&staged_manifest, &super::bundle::origin_file(l, "mroot2")] {
        if exists(stale) {
            return Err(format!(
                "{} is left from an earlier build; remove it, then upgrade again",
                stale.display()
            )
            .into());
        }
    }
    let shaped = matches!(source, Source::Bundle(_));
    // Last, as the dearest check (an archive is read whole): a world the
    // layout cannot take is exit 2 with nothing changed (SPEC section 5).
    crate::world::check_source(&source, &w.cfg.carry_over)?;
    let archive = new_archive_name(w, today)?;
    let mut plan = Plan::new(
        "upgrade",
        format!("upgrade to a new template from {source}"),
    );
    plan.notes.insert("source".into(), source.to_string());
    plan.notes.insert("archive".into(), archive.clone());
    if let Some(id) = current_id(w) {
        plan.notes.insert("from".into(), id);
    }
    plan.push(
        "populate",
        Action::Populate {
            source,
            to: l.mroot2.clone(),
        },
    );
    if w.backend == Backend::FreeBsd && !shaped {
        // The Handbook's `chflags -R 0 var` before `rm -R etc var root usr/local tmp`.
        let rels = crate::world::MOVES.iter().map(|m| PathBuf::from(m.0));
        for rel in rels.chain(w.cfg.carry_over.iter().cloned()) {
            plan.push(
                format!("clear-flags-{}", rel.display()).replace('/', "-"),
                Action::ClearFlags {
                    path: l.mroot2.join(rel),
                },
            );
        }
    }
    if !shaped {
        plan.push(
            "shape",
            Action::Shape {
                template: l.mroot2.clone(),
                skel: None,
                carry_over: w.cfg.carry_over.clone(),
            },
        );
    }
    plan.push(
        "manifest",
        Action::WriteManifest {
            template: l.mroot2.clone(),
            to: staged_manifest.clone(),
            exclude: w.cfg.carry_over.clone(),
        },
    );
    if let Some(origin) = origin {
        super::bundle::push_origin(l, &mut plan, origin)?;
    }
    // Right before the window: the staged tree is still what was hashed.
    plan.push(
        "verify-staged",
        Action::VerifyManifest {
            template: l.mroot2.clone(),
            manifest: staged_manifest,
        },
    );
    let staged = Target {
        dir: &l.mroot2,
        name: "mroot2",
        manifest: true,
        origin: origin.is_some(),
    };
    let window = switch(w, &mut plan, &staged, &archive, canary)?;
    Ok((plan, window))
}

/// The archive a rollback to `to` (default: the newest) returns to.
pub fn rollback_target(w: &Site, to: Option<&ArchiveName>) -> Result<String, OpsError> {
    let list = archives(w)?;
    match to {
        Some(t) => {
            let name = t.to_string();
            if !list.contains(&name) {
                return Err(format!(
                    "no archived template {name:?}; archives: {}",
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                )
                .into());
            }
            Ok(name)
        }
        None => Ok(list
            .first()
            .cloned()
            .ok_or("no archived template to roll back to")?),
    }
}

/// Plans a rollback to archive `to` (default: the newest); the template it
/// leaves becomes an archive in turn, so a rollback can be undone the same way.
pub fn plan_rollback(
    w: &Site,
    to: Option<&ArchiveName>,
) -> Result<(Plan, (usize, usize)), OpsError> {
    plan_rollback_on(w, to, &today())
}

/// [`plan_rollback`] with the date of the archive it makes (`YYYYMMDD`) given.
pub fn plan_rollback_on(
    w: &Site,
    to: Option<&ArchiveName>,
    today: &str,
) -> Result<(Plan, (usize, usize)), OpsError> {
    let l = w.layout;
    if !l.mroot.is_dir() {
        return Err(format!("no template at {}", l.mroot.display()).into());
    }
    let target = rollback_target(w, to)?;
    let target_dir = l.j.join(&target);
    check_carry_over_target(w, &target_dir)?;
    let archive = new_archive_name(w, today)?;
    let mut plan = Plan::new("rollback", format!("roll back to {target}"));
    plan.notes.insert("target".into(), target.clone());
    plan.notes.insert("archive".into(), archive.clone());
    if let Some(id) = current_id(w) {
        plan.notes.insert("from".into(), id);
    }
    let has_manifest = exists(&manifest_file(w, &target));
    let has_origin = exists(&super::bundle::origin_file(l, &target));
    let archived = Target {
        dir: &target_dir,
        name: &target,
        manifest: has_manifest,
        origin: has_origin,
    };
    let window = switch(w, &mut plan, &archived, &archive, &Canary::default())?;
    Ok((plan, window))
}

/// Plans `prune --keep N`: archives beyond the newest N are moved aside
/// before the commit and removed after it.
pub fn plan_prune(w: &Site, keep: usize) -> Result<Plan, OpsError> {
    let list = archives(w)?;
    let mut plan = Plan::new(
        "prune",
        format!("keep the newest {keep} archived templates"),
    );
    for name in list.iter().skip(keep) {
        let dir = w.layout.j.join(name);
        let aside = w.layout.j.join(format!("{name}.jailtx-pruned"));
        if exists(&aside) {
            return Err(format!("{} is in the way; remove it first", aside.display()).into());
        }
        plan.push(
            format!("set-aside-{name}"),
            Action::Rename {
                from: dir,
                to: aside.clone(),
            },
        );
        clear_flags_after_commit(w, &mut plan, &format!("clear-flags-{name}"), aside.clone());
        plan.push_after_commit(format!("remove-{name}"), Action::RemoveTree { path: aside });
        let m = manifest_file(w, name);
        if exists(&m) {
            plan.push_after_commit(
                format!("remove-manifest-{name}"),
                Action::RemoveTree { path: m },
            );
        }
        let o = super::bundle::origin_file(w.layout, name);
        if exists(&o) {
            plan.push_after_commit(
                format!("remove-origin-{name}"),
                Action::RemoveTree { path: o },
            );
        }
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(index: usize, name: &str, start_us: u64, end_us: u64) -> StepTiming {
        StepTiming {
            index,
            name: name.into(),
            start_us,
            end_us,
        }
    }

    /// Steps that ran side by side: the window is the span of them all, and
    /// each jail's downtime runs from its stop's start to its start's end.
    #[test]
    fn window_and_per_jail_downtime() {
        let notes = downtime_notes((1, 6), PathBuf::from("/nonexistent"));
        let got = notes(&[
            t(0, "verify-staged", 0, 500),
            t(1, "stop-a", 1_000, 3_000),
            t(2, "stop-b", 900, 2_000),
            t(3, "switch-mroot", 3_000, 3_100),
            t(4, "start-b", 3_200, 4_000),
            t(5, "start-a", 3_300, 9_000),
            t(6, "health-check", 9_000, 9_500),
        ]);
        assert_eq!(got["downtime_ms"], "8.600");
        assert_eq!(got["jail_downtime_ms"], "a=8.000 b=3.100");
        assert_eq!(got["max_jail_downtime_ms"], "8.000");
        assert_eq!(got["max_jail_downtime_jail"], "a");
        // A resumed window, whose stops ran before the crash: no figures.
        let resumed = notes(&[t(5, "start-a", 0, 10), t(6, "health-check", 10, 20)]);
        assert!(!resumed.contains_key("downtime_ms"), "{resumed:?}");
        assert!(!resumed.contains_key("jail_downtime_ms"), "{resumed:?}");
    }

    #[test]
    fn archive_names() {
        assert_eq!(parse_archive("mroot.20261129"), Some((20261129, 0)));
        assert_eq!(parse_archive("mroot.20261129.3"), Some((20261129, 3)));
        for bad in [
            "mroot",
            "mroot2",
            "mroot.2026112",
            "mroot.20261129.x",
            "mroot.20261129.jailtx-pruned",
        ] {
            assert_eq!(parse_archive(bad), None, "{bad}");
        }
    }
}
