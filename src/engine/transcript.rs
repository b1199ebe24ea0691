//! A plan as the FreeBSD backend carries it out: for each step the exact
//! commands it runs, the files it writes, and (shown as the equivalent
//! command) the work jailtx does itself. `--backend freebsd --dry-run`
//! prints it; the golden transcripts under `tests/golden/` are it.
//!
//! Commands come from the same `*_argv` functions [`crate::host::freebsd`]
//! runs. It lives above the host layer: it reads plans and worlds.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::FreeBsd;
use crate::host::{freebsd, freebsd_conf};
use crate::plan::derived;
use crate::plan::{Action, JailSpec, Plan};
use crate::world::{self, Source};

/// What a transcript line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// A command jailtx runs, exactly as shown.
    #[serde(rename = "run")]
    Run,
    /// Work jailtx does itself (system calls, made durable), shown as the
    /// equivalent command.
    #[serde(rename = "self")]
    Own,
    /// A file jailtx writes whole (temp file, fsync, rename, fsync dir).
    #[serde(rename = "file")]
    File,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Run => "run ",
            Kind::Own => "self",
            Kind::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub step: usize,
    pub name: String,
    pub kind: Kind,
    /// The command line (shell-quoted), or the path of a file.
    pub line: String,
    /// For `run`: the argv.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// A condition or remark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For `file`: what is written, and its mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transcript {
    pub op: String,
    pub summary: String,
    /// Steps before this index are undone, newest first, if one fails.
    pub commit: usize,
    /// `(name, kind)` of every step, in order.
    pub steps: Vec<(String, String)>,
    pub entries: Vec<Entry>,
    /// Commands run after the transaction commits, outside it: etcupdate's
    /// post-merge steps inside each jail that runs (a stopped jail: after
    /// the command that next starts it). Their `step` is the step count.
    pub after: Vec<Entry>,
}

/// `arg` as sh(1) reads it back: bare when it is plain, else single-quoted.
pub fn sh_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// An argv as one shell line.
pub fn sh_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn p(path: &Path) -> String {
    sh_quote(&path.display().to_string())
}

struct Builder<'a> {
    cfg: &'a FreeBsd,
    step: usize,
    name: String,
    out: Vec<Entry>,
}

impl Builder<'_> {
    fn entry(&mut self, kind: Kind, line: String) -> &mut Entry {
        self.out.push(Entry {
            step: self.step,
            name: self.name.clone(),
            kind,
            line,
            argv: Vec::new(),
            note: None,
            contents: None,
            mode: None,
        });
        self.out.last_mut().expect("just pushed")
    }

    fn own(&mut self, line: String) -> &mut Entry {
        self.entry(Kind::Own, line)
    }

    /// jls, then each jail's health command, as the engine's health check.
    fn health_check(&mut self, jails: &[(JailSpec, Option<String>)], timeout_secs: u64) {
        let names: Vec<&str> = jails.iter().map(|(j, _)| j.name.as_str()).collect();
        self.run(freebsd::jls_argv()).note = Some(format!("must list {}", names.join(" ")));
        for (jail, command) in jails {
            let Some(cmd) = command else { continue };
            // The same environment as the engine's health check.
            let env = [
                ("JAIL_NAME".to_owned(), jail.name.clone()),
                ("JAIL_IP".to_owned(), jail.ip.clone()),
                ("JAIL_JID".to_owned(), "JID".to_owned()),
                ("JAIL_HOSTNAME".to_owned(), jail.hostname.clone()),
            ];
            let t = std::time::Duration::from_secs(timeout_secs.max(1));
            self.run(freebsd::command_argv(cmd, &[], &env, Some(t)))
                .note = Some("JID: the jail's JID from jls".into());
        }
    }

    fn run(&mut self, argv: Vec<String>) -> &mut Entry {
        let e = self.entry(Kind::Run, sh_line(&argv));
        e.argv = argv;
        e
    }

    fn conf(&self, name: &str) -> PathBuf {
        freebsd_conf::conf_path(self.cfg, name)
    }

    /// A tree built under its side name, then published by one rename.
    fn publish(&mut self, partial: &Path, to: &Path) {
        self.own(format!("sync; mv {} {}", p(partial), p(to)));
    }

    fn action(&mut self, a: &Action) {
        match a {
            Action::MakeDir { path, mode } => {
                self.own(format!("mkdir -m {mode:04o} {}", p(path)));
            }
            Action::Rename { from, to } => {
                self.own(format!("mv {} {}", p(from), p(to)));
            }
            Action::WriteFile {
                path,
                contents,
                mode,
            } => {
                let e = self.entry(Kind::File, path.display().to_string());
                e.contents = Some(contents.clone());
                e.mode = Some(*mode);
            }
            Action::Symlink { target, link } => {
                self.own(format!("ln -s {} {}", p(target), p(link)));
            }
            Action::RemoveTree { path } => {
                self.own(format!("rm -rf {}", p(path)));
            }
            Action::CopyTree { from, to } => {
                let partial = super::action::partial_path(to);
                self.own(format!("cpdup {} {}", p(from), p(&partial))).note =
                    Some("modes, owners, times, symlinks, hard links, special files".into());
                self.publish(&partial, to);
            }
            Action::Mount {
                src,
                dst,
                read_only,
            } => {
                self.run(freebsd::mount_argv(src, dst, *read_only));
            }
            Action::Unmount { dst, .. } => {
                self.run(freebsd::umount_argv(dst));
            }
            Action::StartJail { jail } => {
                let dev = jail.path.join("dev");
                self.run(freebsd::jail_create_argv(
                    &self.conf(&jail.name),
                    &jail.name,
                ))
                .note = Some(format!("first `umount {}` if a dead jail left it", p(&dev)));
            }
            Action::StopJail { jail } => {
                let dev = jail.path.join("dev");
                self.run(freebsd::jail_remove_argv(
                    &self.conf(&jail.name),
                    &jail.name,
                ))
                .note = Some(format!(
                    "`umount {}` instead if the jail died, leaving it",
                    p(&dev)
                ));
            }
            Action::Populate { source, to } => self.populate(source, to),
            Action::CanaryWait {
                jails,
                wait_secs,
                timeout_secs,
            } => {
                self.own(format!("sleep {wait_secs}")).note =
                    Some("the canaries soak before the other jails switch".into());
                self.health_check(jails, *timeout_secs);
            }
            Action::HealthCheck {
                jails,
                timeout_secs,
            } => self.health_check(jails, *timeout_secs),
            Action::Shape {
                template,
                skel,
                carry_over,
            } => self.shape(template, skel.as_deref(), carry_over),
            Action::WriteManifest {
                template,
                to,
                exclude,
            } => {
                let mut line = "manifest".to_owned();
                for x in exclude {
                    line.push_str(&format!(" -x {}", p(x)));
                }
                line.push_str(&format!(" {} > {}", p(template), p(to)));
                self.own(line).note =
                    Some("BLAKE3 of every entry; `jailtx manifest export` gives mtree(5)".into());
            }
            Action::VerifyManifest { template, manifest } => {
                self.own(format!("audit --quick {} {}", p(template), p(manifest)))
                    .note =
                    Some("refuses a staged template that changed since it was hashed".into());
            }
            Action::ClearFlags { path } => {
                self.run(freebsd::chflags_argv(path)).note =
                    Some(format!("only if {} exists", path.display()));
            }
            Action::WriteFileIn { .. }
            | Action::RenameIn { .. }
            | Action::RemoveFileIn { .. }
            | Action::MakeDirIn { .. }
            | Action::SymlinkIn { .. } => {
                self.own(a.to_string()).note =
                    Some("below a jail-writable root: *at calls, no symlink followed".into());
            }
        }
    }

    fn populate(&mut self, source: &Source, to: &Path) {
        let partial = world::partial_path(to);
        match source {
            Source::Dir(dir) => {
                self.own(format!("cpdup {} {}", p(dir), p(&partial)));
            }
            Source::Tar(archive) => {
                self.own(format!("mkdir -m 0755 {}", p(&partial)));
                // bsdtar -p also restores file flags (schg on /lib/libc.so.7,
                // /sbin/init...); the tar crate jailtx reads archives with
                // does not, so the line says so rather than claim the same work.
                self.own(format!("tar -xpf {} -C {}", p(archive), p(&partial)))
                    .note = Some(
                    "file flags (schg, ...) are not restored: `chflags` them after the build if the world relies on them"
                        .into(),
                );
            }
            Source::Bundle(crate::plan::BundleSource { file, id, .. }) => {
                self.own(format!("minisign -Vm {}", p(file))).note =
                    Some("against each [trust] key; refused unless one verifies (or the bundle is unsigned and no signature is required)".into());
                self.own(format!("jailtx-unbundle {} {}", p(file), p(&partial)))
                    .note = Some(format!(
                    "the tree, checked as an archive is, whose manifest must have id {id}"
                ));
            }
            Source::Cmd(cmd) => {
                // As world::populate runs it: the side dir is $1, DEST and
                // DESTDIR, and {dest} a quoted reference to it.
                let dest = partial.display().to_string();
                self.own(format!("mkdir -m 0755 {}", p(&partial)));
                let env = [
                    ("DESTDIR".to_owned(), dest.clone()),
                    ("DEST".to_owned(), dest.clone()),
                ];
                self.run(freebsd::command_argv(
                    &world::dest_command(cmd),
                    std::slice::from_ref(&dest),
                    &env,
                    None,
                ));
            }
        }
        self.publish(&partial, to);
    }

    /// The Handbook's shaping commands, in the order world::shape does them.
    fn shape(&mut self, t: &Path, skel: Option<&Path>, carry_over: &[PathBuf]) {
        match skel {
            Some(skel) => {
                self.own(format!("mkdir -m 0755 {}", p(skel))).note = Some(
                    "a directory the world lacks below is made empty instead, with its usual mode"
                        .into(),
                );
                for (rel, name, _) in world::MOVES {
                    self.own(format!("mv {} {}", p(&t.join(rel)), p(&skel.join(name))));
                }
            }
            None => {
                let dirs: Vec<String> = world::MOVES.iter().map(|m| p(&t.join(m.0))).collect();
                self.own(format!("rm -rf {}", dirs.join(" ")));
                for rel in carry_over {
                    let path = t.join(rel);
                    let parent = path.parent().unwrap_or(t);
                    self.own(format!("rm -rf {}; mkdir -p {}", p(&path), p(parent)))
                        .note = Some(format!("{} comes from the old template", rel.display()));
                }
            }
        }
        self.own(format!("mkdir -m 0755 {}", p(&t.join("s"))));
        for (rel, target) in world::LINKS {
            if skel.is_none() && carry_over.iter().any(|c| Path::new(rel).starts_with(c)) {
                continue;
            }
            self.own(format!(
                "ln -s {} {}",
                p(Path::new(target)),
                p(&t.join(rel))
            ));
        }
        if let Some(skel) = skel {
            self.own(format!(
                "echo {} >> {}",
                sh_quote(world::MAKE_CONF_LINE),
                p(&skel.join("etc/make.conf"))
            ));
        }
    }
}

/// The transcript of `plan` on the FreeBSD backend whose files go where `cfg` says.
pub fn of_plan(plan: &Plan, cfg: &FreeBsd) -> Transcript {
    let mut b = Builder {
        cfg,
        step: 0,
        name: String::new(),
        out: Vec::new(),
    };
    for (i, step) in plan.steps.iter().enumerate() {
        b.step = i;
        b.name = step.name.clone();
        b.action(&step.action);
    }
    let entries = std::mem::take(&mut b.out);
    b.step = plan.steps.len();
    let due = plan.notes.get(derived::NOTE).map(String::as_str);
    for (jail, steps) in derived::parse_note(due.unwrap_or_default()) {
        b.name = format!("in-jail-{jail}");
        for step in steps {
            b.run(freebsd::jexec_argv(&jail, &step.freebsd_argv())).note =
                Some(format!("if {jail} runs; else after it next starts"));
        }
    }
    Transcript {
        op: plan.op.clone(),
        summary: plan.summary.clone(),
        commit: plan.commit as usize,
        steps: plan
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.action.kind().to_owned()))
            .collect(),
        entries,
        after: b.out,
    }
}

impl Transcript {
    /// The commands jailtx runs, in order.
    pub fn commands(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.kind == Kind::Run)
    }

    /// The `--json` form: one document.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "dry_run": true,
            "backend": "freebsd",
            "op": self.op,
            "summary": self.summary,
            "commit": self.commit,
            "steps": self.steps.iter().map(|(n, k)| serde_json::json!({"name": n, "kind": k})).collect::<Vec<_>>(),
            "commands": self.entries,
        });
        if !self.after.is_empty() {
            v["after_commit"] = serde_json::json!(self.after);
        }
        v
    }
}

const LEGEND: &str = "\
# run   the exact command jailtx runs (a look at the mount table, getfsstat(2),
#       or `jls --libxo=json -v` before it makes a repeated step a no-op)
# self  done by jailtx itself with system calls, made durable; the same
#       work as the command shown
# file  written whole by jailtx (temp file, fsync, rename), contents below
";

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# jailtx {} on FreeBSD: {}", self.op, self.summary)?;
        f.write_str(LEGEND)?;
        let mut entries = self.entries.iter().peekable();
        for (i, (name, _)) in self.steps.iter().enumerate() {
            if i == self.commit {
                writeln!(
                    f,
                    "\n-- commit: a failure above is undone in reverse; below only goes forward"
                )?;
            }
            writeln!(f, "\n[{i}] {name}")?;
            while let Some(e) = entries.next_if(|e| e.step == i) {
                match &e.note {
                    Some(n) => writeln!(f, "  {}  {}  # {n}", e.kind.label(), e.line)?,
                    None => writeln!(f, "  {}  {}", e.kind.label(), e.line)?,
                }
                if let (Some(text), Some(mode)) = (&e.contents, e.mode) {
                    writeln!(f, "        (mode {mode:04o})")?;
                    for l in text.lines() {
                        writeln!(f, "        | {l}")?;
                    }
                }
            }
        }
        if self.commit >= self.steps.len() {
            writeln!(f, "\n-- commit: a failure above is undone in reverse")?;
        }
        if !self.after.is_empty() {
            writeln!(
                f,
                "\n-- after the commit, inside the jails (etcupdate's steps; a failure is reported and retried)"
            )?;
            for e in &self.after {
                match &e.note {
                    Some(n) => writeln!(f, "  {}  {}  # {n}", e.kind.label(), e.line)?,
                    None => writeln!(f, "  {}  {}", e.kind.label(), e.line)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_only_when_sh_needs_it() {
        assert_eq!(sh_quote("/usr/home/j/ns"), "/usr/home/j/ns");
        assert_eq!(sh_quote("DESTDIR=/x"), "DESTDIR=/x");
        assert_eq!(sh_quote("make -C /usr/src"), "'make -C /usr/src'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
