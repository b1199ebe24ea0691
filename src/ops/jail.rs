//! Planners for `jail create`, `jail destroy`, `start`, `stop`, `restart`,
//! and the rows of `status`.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, Layout};
use crate::engine::volatile_key;
use crate::host::{Host, Running};
use crate::plan::{Action, Backend, JailName, JailSpec, Plan};

use super::OpsError;
use super::records::{self, JailRecord};
use super::validate;

fn exists(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Refuses a mount source or target that is not a real directory or absent:
/// a symlink in any component of `p`, or a last component that is not a
/// directory, is exit 2 with nothing changed. The host backend checks again
/// when it mounts (through descriptors opened without following links);
/// this is what turns a planted link into a clear refusal before anything
/// happens, instead of a failed step and a rollback.
fn mountable(p: &std::path::Path) -> Result<(), OpsError> {
    let mut cur = PathBuf::new();
    for c in p.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink; jailtx mounts only onto directories it made: replace it with a directory",
                    cur.display()
                ).into());
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{} is not a directory; jailtx mounts only onto directories it made: move it aside",
                    cur.display()
                ).into());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", cur.display()).into()),
        }
    }
    Ok(())
}

/// [`mountable`] for every path a jail's two mounts involve: the template
/// and its `s` (which `j/NAME/s` is once the root is mounted), `j/NAME`,
/// `j/NAME/s` as it stands, and `js/NAME`.
fn mounts_ok(l: &Layout, name: &str) -> Result<(), OpsError> {
    let root = l.j.join(name);
    for p in [
        l.mroot.clone(),
        l.mroot.join("s"),
        root.join("s"),
        root,
        l.js.join(name),
    ] {
        mountable(&p)?;
    }
    Ok(())
}

/// The site a plan is made for: the base directory's layout, the config,
/// the host to ask what is mounted and running, and the backend that will
/// carry the plan out. Everything a planner reads besides its arguments.
pub struct Site<'a> {
    pub layout: &'a Layout,
    pub cfg: &'a Config,
    pub host: &'a dyn Host,
    pub backend: Backend,
}

impl Site<'_> {
    fn running(&self) -> Result<Vec<Running>, OpsError> {
        Ok(self.host.running()?)
    }

    fn is_running(&self, spec: &JailSpec) -> Result<bool, OpsError> {
        Ok(self
            .running()?
            .iter()
            .any(|r| r.name == spec.name && r.path == spec.path))
    }

    fn mounted(&self, p: &std::path::Path) -> Result<bool, OpsError> {
        Ok(self.host.is_mounted(p)?)
    }

    fn records(&self) -> Result<Vec<JailRecord>, OpsError> {
        records::load_all(self.layout)
    }

    /// The named records (all when `names` is empty); an unknown name is an error.
    fn select(&self, names: &[JailName]) -> Result<Vec<JailRecord>, OpsError> {
        let all = self.records()?;
        if names.is_empty() {
            return Ok(all);
        }
        names
            .iter()
            .map(|n| {
                all.iter().find(|r| *n == *r.name).cloned().ok_or_else(|| {
                    format!("no jail named {n:?}; `jailtx status` lists the jails").into()
                })
            })
            .collect()
    }

    /// Records in `plan` the mounts and running jails no step touches (see
    /// [`Plan::bystanders`]), in bring-up order.
    pub fn add_bystanders(&self, plan: &mut Plan) -> Result<(), OpsError> {
        let touched: std::collections::BTreeSet<String> = plan
            .steps
            .iter()
            .filter_map(|s| volatile_key(&s.action))
            .collect();
        let running = self.running()?;
        for rec in self.records()? {
            let spec = rec.spec(self.layout, self.cfg);
            let s = spec.path.join("s");
            let candidates = [
                (
                    self.mounted(&spec.path)?,
                    Action::Mount {
                        src: self.layout.mroot.clone(),
                        dst: spec.path.clone(),
                        read_only: true,
                    },
                ),
                (
                    self.mounted(&s)?,
                    Action::Mount {
                        src: self.layout.js.join(&rec.name),
                        dst: s.clone(),
                        read_only: false,
                    },
                ),
                (
                    running
                        .iter()
                        .any(|r| r.name == spec.name && r.path == spec.path),
                    Action::StartJail { jail: spec.clone() },
                ),
            ];
            for (up, action) in candidates {
                let untouched = volatile_key(&action).is_some_and(|k| !touched.contains(&k));
                if up && untouched {
                    plan.bystanders.push(action);
                }
            }
        }
        Ok(())
    }

    /// Mount steps that are missing for `spec`, then its start.
    fn bring_up(&self, plan: &mut Plan, spec: &JailSpec) -> Result<(), OpsError> {
        let name = &spec.name;
        mounts_ok(self.layout, name)?;
        if !self.mounted(&spec.path)? {
            plan.push(
                format!("mount-root-{name}"),
                Action::Mount {
                    src: self.layout.mroot.clone(),
                    dst: spec.path.clone(),
                    read_only: true,
                },
            );
        }
        let s = spec.path.join("s");
        if !self.mounted(&s)? {
            plan.push(
                format!("mount-s-{name}"),
                Action::Mount {
                    src: self.layout.js.join(name),
                    dst: s,
                    read_only: false,
                },
            );
        }
        plan.push(
            format!("start-{name}"),
            Action::StartJail { jail: spec.clone() },
        );
        Ok(())
    }
}

pub fn plan_create(
    w: &Site,
    name: &JailName,
    hostname: &str,
    ip: &str,
    start: bool,
) -> Result<Plan, OpsError> {
    validate::hostname(hostname)?;
    let addr = validate::ip(ip)?;
    let l = w.layout;
    validate::physical_path(&l.j)?;
    for r in w.records()? {
        if *name == *r.name {
            return Err(format!("jail {name} already exists").into());
        }
        // Canonical on both sides: a record may predate canonical recording.
        if r.ip
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|a| a.to_canonical())
            == Some(addr)
        {
            return Err(format!("IP address {ip} is already jail {}'s", r.name).into());
        }
    }
    if !l.mroot.is_dir() || !l.skel.is_dir() {
        return Err(format!(
            "no template at {}; run `jailtx template build` first",
            l.mroot.display()
        )
        .into());
    }
    let root = l.j.join(name);
    mounts_ok(l, name.as_str())?;
    if exists(&root) {
        return Err(format!(
            "{} already exists; move it aside or pick another name",
            root.display()
        )
        .into());
    }
    let rec = JailRecord {
        name: name.to_string(),
        hostname: hostname.to_owned(),
        ip: addr.to_string(),
    };
    let spec = rec.spec(l, w.cfg);
    let data = l.js.join(name);
    let mut plan = Plan::new(
        "jail-create",
        format!("create jail {name} ({hostname}, {addr})"),
    );
    plan.notes.insert("jail".into(), name.to_string());
    plan.push(
        format!("mkdir-{name}"),
        Action::MakeDir {
            path: root.clone(),
            mode: 0o755,
        },
    );
    let reused = exists(&data);
    if reused {
        // Kept by an earlier `jail destroy` without --purge: the jail gets it back.
        plan.notes
            .insert("data".into(), format!("reusing {}", data.display()));
    } else {
        plan.push(
            format!("copy-skel-{name}"),
            Action::CopyTree {
                from: l.skel.clone(),
                to: data.clone(),
            },
        );
    }
    plan.push(
        format!("mount-root-{name}"),
        Action::Mount {
            src: l.mroot.clone(),
            dst: root.clone(),
            read_only: true,
        },
    );
    plan.push(
        format!("mount-s-{name}"),
        Action::Mount {
            src: data,
            dst: root.join("s"),
            read_only: false,
        },
    );
    plan.push(
        format!("record-{name}"),
        Action::WriteFile {
            path: records::path(l, name.as_str()),
            contents: rec.to_toml(),
            mode: 0o600,
        },
    );
    // The skel's /etc may have been merged since its derived databases were
    // made (the skel never runs): a copy of it gets the steps due there.
    if !reused && let Some(due) = super::due::load_due(l, "skel")? {
        super::due::push_due(l, &mut plan, name.as_str(), &due.steps)?;
    }
    if w.backend == Backend::FreeBsd {
        // jail.conf.d/NAME.conf (which `jail -c` reads) and fstab.NAME.
        let files = crate::host::freebsd_conf::create_steps(l, &w.cfg.freebsd, &spec)?;
        for (step, action) in files {
            plan.push(step, action);
        }
    }
    if start {
        plan.push(format!("start-{name}"), Action::StartJail { jail: spec });
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

/// The name a path is moved aside to before the commit, and removed under after it.
fn aside(p: &std::path::Path) -> PathBuf {
    let mut n = p.file_name().unwrap_or_default().to_os_string();
    n.push(".jailtx-destroyed");
    p.with_file_name(n)
}

pub fn plan_destroy(w: &Site, name: &JailName, purge: bool) -> Result<Plan, OpsError> {
    let l = w.layout;
    let rec = w
        .select(std::slice::from_ref(name))?
        .pop()
        .ok_or_else(|| format!("no jail named {name:?}"))?;
    let spec = rec.spec(l, w.cfg);
    let data = l.js.join(name);
    let record = records::path(l, name.as_str());
    let mut moves = vec![(format!("set-aside-record-{name}"), record.clone())];
    if exists(&spec.path) {
        moves.push((format!("set-aside-root-{name}"), spec.path.clone()));
    }
    if purge && exists(&data) {
        moves.push((format!("set-aside-data-{name}"), data.clone()));
    }
    if w.backend == Backend::FreeBsd {
        // Set aside after the stop, which still reads NAME.conf.
        moves.extend(crate::host::freebsd_conf::existing_files(
            &w.cfg.freebsd,
            name.as_str(),
        ));
    }
    for (_, p) in &moves {
        if exists(&aside(p)) {
            return Err(format!(
                "{} is in the way (left by an earlier destroy?); remove it first",
                aside(p).display()
            )
            .into());
        }
    }
    let what = if purge {
        "destroy and purge"
    } else {
        "destroy"
    };
    let mut plan = Plan::new("jail-destroy", format!("{what} jail {name}"));
    plan.notes.insert("jail".into(), name.to_string());
    if w.is_running(&spec)? {
        plan.push(
            format!("stop-{name}"),
            Action::StopJail { jail: spec.clone() },
        );
    }
    let s = spec.path.join("s");
    if w.mounted(&s)? {
        plan.push(
            format!("unmount-s-{name}"),
            Action::Unmount {
                src: data.clone(),
                dst: s,
                read_only: false,
            },
        );
    }
    if w.mounted(&spec.path)? {
        plan.push(
            format!("unmount-root-{name}"),
            Action::Unmount {
                src: l.mroot.clone(),
                dst: spec.path.clone(),
                read_only: true,
            },
        );
    }
    for (step, p) in &moves {
        plan.push(
            step.clone(),
            Action::Rename {
                from: p.clone(),
                to: aside(p),
            },
        );
    }
    for (step, p) in &moves {
        if *p == data {
            // A jail's data holds `schg` entries on FreeBSD (skel's
            // var/empty, anything the jail's root flagged): no unlink works
            // until the flags are cleared.
            super::upgrade::clear_flags_after_commit(
                w,
                &mut plan,
                &format!("clear-flags-data-{name}"),
                aside(p),
            );
        }
        let step = step.replace("set-aside-", "remove-");
        plan.push_after_commit(step, Action::RemoveTree { path: aside(p) });
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

pub fn plan_start(w: &Site, names: &[JailName]) -> Result<Plan, OpsError> {
    let mut plan = Plan::new("start", describe("start", names));
    for rec in w.select(names)? {
        let spec = rec.spec(w.layout, w.cfg);
        if !w.is_running(&spec)? {
            w.bring_up(&mut plan, &spec)?;
        }
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

pub fn plan_stop(w: &Site, names: &[JailName]) -> Result<Plan, OpsError> {
    let mut plan = Plan::new("stop", describe("stop", names));
    for rec in w.select(names)? {
        let spec = rec.spec(w.layout, w.cfg);
        // A FreeBSD jail that died on its own left its devfs mounted: the
        // stop step unmounts it (no Linux jail mounts on the host's PATH/dev).
        if w.is_running(&spec)? || w.mounted(&spec.path.join("dev"))? {
            plan.push(
                format!("stop-{}", rec.name),
                Action::StopJail { jail: spec },
            );
        }
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

pub fn plan_restart(w: &Site, names: &[JailName]) -> Result<Plan, OpsError> {
    let mut plan = Plan::new("restart", describe("restart", names));
    for rec in w.select(names)? {
        let spec = rec.spec(w.layout, w.cfg);
        if w.is_running(&spec)? {
            plan.push(
                format!("stop-{}", rec.name),
                Action::StopJail { jail: spec.clone() },
            );
        }
        w.bring_up(&mut plan, &spec)?;
    }
    w.add_bystanders(&mut plan)?;
    Ok(plan)
}

fn describe(verb: &str, names: &[JailName]) -> String {
    if names.is_empty() {
        format!("{verb} all jails")
    } else {
        let names: Vec<&str> = names.iter().map(JailName::as_str).collect();
        format!("{verb} {}", names.join(" "))
    }
}

/// One line of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub jid: Option<u32>,
    pub ip: String,
    pub hostname: String,
    pub path: PathBuf,
    pub running: bool,
    pub mounted: bool,
    pub template: Option<String>,
}

/// Each jail's row; `template` is the template its mounted root is at this
/// instant (see `running_on`), not the current one: during a canary
/// upgrade, or after a rolled-back canary on FreeBSD, they differ.
pub fn status(w: &Site) -> Result<Vec<StatusRow>, OpsError> {
    let running = w.running()?;
    let templates = super::running_on::Templates::load(w);
    w.records()?
        .into_iter()
        .map(|rec| {
            let spec = rec.spec(w.layout, w.cfg);
            let jid = running
                .iter()
                .find(|r| r.name == spec.name && r.path == spec.path)
                .map(|r| r.jid);
            let root = w.mounted(&spec.path)?;
            let mounted = root && w.mounted(&spec.path.join("s"))?;
            let template = if root {
                templates.of(w, &spec.path)
            } else {
                None
            };
            Ok(StatusRow {
                name: rec.name,
                jid,
                ip: rec.ip,
                hostname: rec.hostname,
                path: spec.path,
                running: jid.is_some(),
                mounted,
                template,
            })
        })
        .collect()
}
