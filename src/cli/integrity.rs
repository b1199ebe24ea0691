//! `audit` and `manifest export`: name the templates, read their manifests, call `manifest`, print.

use crate::cli::stdout::{out, outln};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::Ctx;
use crate::engine::lock::StateLock;
use crate::error::Error;
use crate::manifest::last_audit::{self, LastAudit};
use crate::manifest::{self, Manifest, ManifestError, Mode, Report, audit, mtree};
use crate::ops::upgrade::parse_archive;
use crate::statedir::StateError;

/// A template to check: its directory and its manifest, already read.
struct Target {
    name: String,
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
}

/// Exit 3 for a template that drifted, 2 for everything else (a missing or
/// corrupt manifest, an unreadable template): nothing was changed either way.
fn to_error(e: ManifestError) -> Error {
    match e {
        ManifestError::Drifted { .. } => Error::Drift(e.to_string()),
        e => Error::Usage(e.to_string()),
    }
}

fn resolve(ctx: &Ctx, name: &str) -> Result<Target, Error> {
    if name != "mroot" && name != "mroot2" && parse_archive(name).is_none() {
        return Err(Error::Usage(format!(
            "unknown template {name:?}: expected mroot, mroot2 or an archive mroot.YYYYMMDD[.N] (`jailtx audit --all` checks every template with a manifest)"
        )));
    }
    let dir = ctx.layout.j.join(name);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Err(Error::Usage(format!(
            "template {name}: {} does not exist",
            dir.display()
        )));
    }
    let manifest_path = manifest::path_for(&ctx.layout.manifests, name);
    let manifest = manifest::read(&manifest_path).map_err(to_error)?;
    Ok(Target {
        name: name.to_owned(),
        dir,
        manifest_path,
        manifest,
    })
}

/// The named templates (default `mroot`), or with `--all` the current one
/// and every archive that has a manifest. Every manifest is read and checked
/// before any audit starts, so a bad one fails fast with exit 2.
fn targets(ctx: &Ctx, names: &[String], all: bool) -> Result<Vec<Target>, Error> {
    crate::statedir::require(&ctx.layout)?;
    if all && !names.is_empty() {
        return Err(Error::Usage(
            "give template names or --all, not both".into(),
        ));
    }
    let mut wanted: Vec<String> = if all {
        let mut v = vec!["mroot".to_owned()];
        let mut archives: Vec<String> = std::fs::read_dir(&ctx.layout.manifests)
            .map_err(|e| Error::Usage(format!("read {}: {e}", ctx.layout.manifests.display())))?
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_str()?.to_owned();
                let name = file.strip_suffix(".manifest")?;
                parse_archive(name).map(|_| name.to_owned())
            })
            .collect();
        archives.sort();
        v.extend(archives);
        v
    } else if names.is_empty() {
        vec!["mroot".to_owned()]
    } else {
        names.to_vec()
    };
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|n| seen.insert(n.clone()));
    wanted.iter().map(|n| resolve(ctx, n)).collect()
}

/// Hashed bytes into a progress bar, when there is one.
struct Bar(Option<ProgressBar>);

impl manifest::Progress for Bar {
    fn add(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
}

impl Bar {
    /// A bar on stderr for a full audit, only when stderr is a terminal and
    /// the output is for a person.
    fn new(ctx: &Ctx, t: &Target, mode: Mode) -> Bar {
        let g = &ctx.global;
        if mode != Mode::Full || g.json || g.quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::with_draw_target(
            Some(t.manifest.file_bytes()),
            ProgressDrawTarget::stderr(),
        );
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(format!("audit {}", t.name));
        Bar(Some(bar))
    }

    fn done(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

fn report_json(t: &Target, r: &Report) -> serde_json::Value {
    // Paths as display strings: `json!` panics on a path that is not UTF-8.
    json!({
        "template": t.name,
        "path": t.dir.display().to_string(),
        "manifest": t.manifest_path.display().to_string(),
        "id": t.manifest.id(),
        "clean": r.is_clean(),
        "counts": r.counts(),
        "new_setid": r.new_setid(),
        "report": r,
    })
}

/// `jailtx audit [TEMPLATE…|--all] [--quick]`: exit 0 clean, 3 drift, 2 bad input.
pub(super) fn audit(ctx: &Ctx, names: &[String], all: bool, quick: bool) -> Result<(), Error> {
    // rayon's threads start while the manifests are read, rather than when
    // the first is decoded (which is parallel).
    rayon::spawn(|| {});
    // Bad names are refused (exit 2) before the lock, which writes its pid.
    let targets = targets(ctx, names, all)?;
    // Shared: audits run side by side, but never beside an upgrade, rollback
    // or prune, which rename and remove the trees being walked (exit 5).
    let _lock = StateLock::acquire_shared(&ctx.layout.lock).map_err(StateError::from)?;
    let mode = if quick { Mode::Quick } else { Mode::Full };
    let mut results = Vec::with_capacity(targets.len());
    for t in &targets {
        let bar = Bar::new(ctx, t, mode);
        let report = audit::run(&t.dir, &t.manifest, mode, &bar).map_err(to_error)?;
        bar.done();
        results.push(report);
    }
    record(ctx, &targets, &results, mode);
    let drifted: Vec<String> = targets
        .iter()
        .zip(&results)
        .filter(|(_, r)| !r.is_clean())
        .map(|(t, r)| format!("{} ({} differences)", t.name, r.differences.len()))
        .collect();
    if ctx.global.json {
        let docs: Vec<_> = targets
            .iter()
            .zip(&results)
            .map(|(t, r)| report_json(t, r))
            .collect();
        let code = if drifted.is_empty() { 0 } else { 3 };
        outln!(
            "{}",
            json!({ "audit": docs, "clean": drifted.is_empty(), "exit_code": code })
        );
        if code != 0 {
            // The report above is this command's one JSON document; going
            // through `Err` would print a second (the error object). The
            // shared lock goes with the process.
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        return Ok(());
    }
    for (t, r) in targets.iter().zip(&results) {
        out!("{}", r.render(&t.name));
    }
    // The manifests and reports go with the process: freeing their tens of
    // thousands of small allocations one by one would only delay the exit.
    std::mem::forget(targets);
    std::mem::forget(results);
    if drifted.is_empty() {
        Ok(())
    } else {
        Err(Error::Drift(format!(
            "audit found drift in {}; the differences are listed above",
            drifted.join(", ")
        )))
    }
}

/// Files each template's result as its last audit (`manifests/NAME.audit`,
/// which `jailtx metrics` publishes), still under the shared lock. A record
/// that cannot be written is said on stderr and never changes the audit's
/// own outcome: the report above is the audit's answer.
fn record(ctx: &Ctx, targets: &[Target], results: &[Report], mode: Mode) {
    if ctx.global.dry_run {
        return;
    }
    let finished_ms = chrono::Utc::now().timestamp_millis();
    for (t, r) in targets.iter().zip(results) {
        let rec = LastAudit {
            template: t.name.clone(),
            id: t.manifest.id(),
            finished_ms,
            mode: mode.as_str().to_owned(),
            differences: r.differences.len() as u64,
            new_setid: r.new_setid() as u64,
        };
        if let Err(e) = last_audit::write(&ctx.layout.manifests, &rec) {
            super::output::note(
                ctx.global.json,
                &format!("{e}; `jailtx metrics` keeps showing the one before"),
            );
        }
    }
    last_audit::remove_orphans(&ctx.layout.manifests);
}

/// `jailtx manifest export [TEMPLATE] --format mtree`: the spec on stdout.
pub(super) fn export(ctx: &Ctx, template: Option<&str>, format: &str) -> Result<(), Error> {
    if format != "mtree" {
        return Err(Error::Usage(format!(
            "--format {format:?}: the only export format is mtree"
        )));
    }
    crate::statedir::require(&ctx.layout)?;
    let t = resolve(ctx, template.unwrap_or("mroot"))?;
    let spec = mtree::export(&t.dir, &t.manifest, &t.name).map_err(to_error)?;
    if ctx.global.json {
        outln!(
            "{}",
            json!({ "template": t.name, "id": t.manifest.id(), "format": "mtree", "spec": spec })
        );
        return Ok(());
    }
    out!("{spec}");
    Ok(())
}
