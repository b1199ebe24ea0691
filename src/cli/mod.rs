//! The `jailtx` command: parse, validate, call one library function, print.

pub mod args;
mod bundles;
mod completions;
mod integrity;
mod output;
mod stdout;

use crate::cli::stdout::{out, outln};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, Layout, Sources};
use crate::engine::{EngineError, Fault, Plan, RecoverMode, Report};
use crate::error::Error;
use crate::host::{self, Host};
use crate::journal::Outcome;
use crate::ops::{self, OpsError};
use crate::plan::{ArchiveName, Backend, JailName};
use crate::statedir::{self, State};
use args::{Cli, Command, Global, JailCmd, TemplateCmd};

/// Everything a command needs, resolved and validated before it acts.
struct Ctx {
    global: Global,
    cfg: Config,
    layout: Layout,
    fault: Option<Fault>,
    backend: Backend,
}

impl Ctx {
    fn site<'a>(&'a self, host: &'a dyn Host) -> ops::jail::Site<'a> {
        ops::jail::Site {
            layout: &self.layout,
            cfg: &self.cfg,
            host,
            backend: self.backend,
        }
    }

    fn host(&self) -> Box<dyn Host> {
        match self.backend {
            Backend::FreeBsd => Box::new(host::freebsd::FreeBsdHost::for_cli(
                &self.cfg.freebsd,
                self.global.dry_run,
            )),
            #[cfg(target_os = "linux")]
            Backend::Linux => Box::new(
                host::linux::LinuxHost::new()
                    .without_env(crate::engine::fault::ENV)
                    .with_log_dir(self.layout.jails.clone())
                    .with_log_max_bytes(self.cfg.jail.log_max_bytes),
            ),
            // `run` refuses the linux backend elsewhere.
            #[cfg(not(target_os = "linux"))]
            Backend::Linux => Box::new(host::freebsd::FreeBsdHost::for_cli(
                &self.cfg.freebsd,
                self.global.dry_run,
            )),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version: clap's own output, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Bad usage: one line, exit 2 (SPEC section 4), not clap's block.
            let text = e.render().to_string();
            let head: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let line = head.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            let msg = format!("{line}; see `jailtx --help`");
            if std::env::args_os().any(|a| a == "--json") {
                outln!("{}", serde_json::json!({ "error": msg, "exit_code": 2 }));
            }
            eprintln!("jailtx: {msg}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli.global);
    let json = cli.global.json;
    match run(cli).and_then(|()| match stdout::failure() {
        Some(e) => Err(Error::Io(format!(
            "cannot write the output to stdout: {e}; nothing else failed"
        ))),
        None => Ok(()),
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            output::error(json, &e, code);
            ExitCode::from(code)
        }
    }
}

fn init_logging(g: &Global) {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JAILTX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> Result<(), Error> {
    if let Command::JailInit {
        name,
        root,
        hostname,
        ip,
        start,
        stop_timeout,
        log_dir,
        log_max_bytes,
    } = cli.command
    {
        // The init's grace is the jail's stop timeout: refused outside the
        // config's range, so its deadline arithmetic cannot overflow.
        crate::config::in_range(
            "--stop-timeout",
            stop_timeout,
            &crate::config::STOP_TIMEOUT_SECS,
        )
        .map_err(Error::Usage)?;
        #[cfg(target_os = "linux")]
        host::linux_init::main(host::linux_init::InitArgs {
            name,
            root,
            hostname,
            ip,
            start,
            stop_timeout: std::time::Duration::from_secs(stop_timeout),
            log_dir,
            log_max_bytes,
        });
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (
                name,
                root,
                hostname,
                ip,
                start,
                stop_timeout,
                log_dir,
                log_max_bytes,
            );
            return Err(Error::Usage(
                "__jail-init is the Linux backend's jail init; this is not Linux".into(),
            ));
        }
    }
    // Completions depend on the command line alone: no config, no state dir.
    if let Command::Completions { shell } = cli.command {
        return completions::print(shell, cli.global.json);
    }
    let cfg = Config::load(&Sources {
        root: cli.global.root.clone(),
        config: cli.global.config.clone(),
    })?;
    let layout = Layout::new(&cfg)?;
    let fault = Fault::from_env().map_err(Error::Usage)?;
    let backend = match cli
        .global
        .backend
        .clone()
        .or_else(|| Some(cfg.backend.clone()).filter(|b| !b.is_empty()))
    {
        Some(name) => Backend::parse(&name).map_err(OpsError::from)?,
        None => Backend::native(),
    };
    if backend == Backend::Linux && !cfg!(target_os = "linux") {
        return Err(Error::Usage(
            "--backend linux (bind mounts, namespaced jails) runs only on Linux; use --backend freebsd".into(),
        ));
    }
    let checked = check_input(&cli.command)?;
    let ctx = Ctx {
        global: cli.global,
        cfg,
        layout,
        fault,
        backend,
    };
    match cli.command {
        Command::Init => init(&ctx),
        Command::Recover { rollback } => recover(&ctx, rollback),
        Command::History => history(&ctx),
        Command::Metrics { output } => metrics(&ctx, output.as_deref()),
        Command::RunPlan { file } => run_plan(&ctx, &file),
        Command::Template(TemplateCmd::Build {
            source,
            dist_manifest,
        }) => match world_source(source)? {
            Given::World(source) => {
                ops::bundle::require_signed(&ctx.cfg, &source, dist_manifest.as_deref())?;
                plan_and_run(&ctx, |ctx, _| {
                    let dist = check_dist(&source, dist_manifest.as_deref())?;
                    let plan = ops::template::plan_build(&ctx.layout, source, &ctx.cfg.carry_over)?;
                    Ok(noted(plan, dist))
                })
            }
            Given::Bundle(file) => plan_and_run(&ctx, |ctx, _| {
                ops::template::plan_build_bundle(&ctx.layout, &ctx.cfg, &file, !ctx.global.dry_run)
            }),
        },
        Command::Template(TemplateCmd::Pack { template, output }) => {
            bundles::pack(&ctx, template.as_deref(), &output)
        }
        Command::Template(TemplateCmd::Show { template }) => {
            bundles::show(&ctx, template.as_deref())
        }
        Command::Jail(JailCmd::Create {
            hostname,
            ip,
            start,
            ..
        }) => plan_and_run(&ctx, |ctx, host| {
            let name = checked.the_jail()?;
            ops::jail::plan_create(&ctx.site(host), name, &hostname, &ip, start)
        }),
        Command::Jail(JailCmd::Destroy { purge, .. }) => plan_and_run(&ctx, |ctx, host| {
            ops::jail::plan_destroy(&ctx.site(host), checked.the_jail()?, purge)
        }),
        Command::Start { .. } => plan_and_run(&ctx, |ctx, host| {
            ops::jail::plan_start(&ctx.site(host), &checked.jails)
        }),
        Command::Stop { .. } => plan_and_run(&ctx, |ctx, host| {
            ops::jail::plan_stop(&ctx.site(host), &checked.jails)
        }),
        Command::Restart { .. } => plan_and_run(&ctx, |ctx, host| {
            ops::jail::plan_restart(&ctx.site(host), &checked.jails)
        }),
        Command::Status => status(&ctx),
        Command::Upgrade {
            source,
            dist_manifest,
            ..
        } => match world_source(source)? {
            Given::World(source) => {
                ops::bundle::require_signed(&ctx.cfg, &source, dist_manifest.as_deref())?;
                plan_window_and_run(&ctx, AfterSwitch::MergeAndPrune, |ctx, host| {
                    let dist = check_dist(&source, dist_manifest.as_deref())?;
                    let (plan, window) =
                        ops::upgrade::plan_upgrade(&ctx.site(host), source, &checked.canary)?;
                    Ok((noted(plan, dist), window))
                })
            }
            Given::Bundle(file) => {
                plan_window_and_run(&ctx, AfterSwitch::MergeAndPrune, |ctx, host| {
                    ops::upgrade::plan_upgrade_bundle(
                        &ctx.site(host),
                        &file,
                        &checked.canary,
                        !ctx.global.dry_run,
                    )
                })
            }
        },
        Command::EtcMerge { names } => etc_merge(&ctx, &names),
        Command::Rollback { .. } => rollback(&ctx, checked.archive.as_ref()),
        Command::Prune { keep } => plan_and_run(&ctx, |ctx, host| {
            let keep = keep.unwrap_or(ctx.cfg.keep_archives);
            ops::upgrade::plan_prune(&ctx.site(host), keep as usize)
        }),
        Command::Audit {
            templates,
            all,
            quick,
        } => integrity::audit(&ctx, &templates, all, quick),
        Command::Manifest(args::ManifestCmd::Export { template, format }) => {
            integrity::export(&ctx, template.as_deref(), &format)
        }
        other => Err(Error::Usage(format!(
            "`jailtx {}` is not implemented in this build yet",
            command_name(&other)
        ))),
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Init => "init",
        Command::Template(_) => "template",
        Command::Jail(_) => "jail",
        Command::Start { .. } => "start",
        Command::Stop { .. } => "stop",
        Command::Restart { .. } => "restart",
        Command::Status => "status",
        Command::Upgrade { .. } => "upgrade",
        Command::Rollback { .. } => "rollback",
        Command::Recover { .. } => "recover",
        Command::Audit { .. } => "audit",
        Command::EtcMerge { .. } => "etc-merge",
        Command::Manifest(_) => "manifest",
        Command::History => "history",
        Command::Metrics { .. } => "metrics",
        Command::Prune { .. } => "prune",
        Command::RunPlan { .. } => "run-plan",
        Command::Completions { .. } => "completions",
        Command::JailInit { .. } => "__jail-init",
    }
}

/// Locks the state dir and deals with an interrupted transaction: exit 4,
/// or resume it first under `--auto-recover`.
fn open_state(ctx: &Ctx) -> Result<State, Error> {
    let mut state = State::open(&ctx.layout, ctx.fault.clone(), ctx.host())?;
    state.engine.set_parallel(ctx.cfg.upgrade.threads());
    if let Some(p) = state.engine.pending() {
        let (tx, op, summary) = (
            p.tx(),
            p.begin.plan.op.clone(),
            p.begin.plan.summary.clone(),
        );
        if !ctx.global.auto_recover {
            return Err(EngineError::Pending { tx, op, summary }.into());
        }
        if let Some(report) = state.engine.recover(RecoverMode::Resume)? {
            output::note(
                ctx.global.json,
                &format!("recovered: {}", output::report_line(&report)),
            );
            // The command asked for still runs; a clash or a failed merge
            // is reported here (what `recover` would exit 7 for).
            if let Some(merged) = after_recovered_switch(ctx, &mut state, &report)
                && let Err(e) = merged.outcome()
            {
                output::note(
                    ctx.global.json,
                    &format!("after the recovered {}: {e}", report.op),
                );
            }
        }
    }
    Ok(state)
}

/// What `upgrade` or `rollback` does after its commit, for one that a crash
/// interrupted and recovery carried to its commit: the `/etc` merge (and
/// after an upgrade the prune), each its own transaction (SPEC section 3).
/// None for any other transaction, or one that was rolled back (the jails
/// keep their template and their `/etc`). An interrupted merge or prune is
/// recovered as itself and not continued: the next `upgrade` prunes, and
/// `jailtx etc-merge` re-plans a merge.
fn after_recovered_switch(
    ctx: &Ctx,
    state: &mut State,
    report: &Report,
) -> Option<output::EtcMerged> {
    let after = match report.op.as_str() {
        "upgrade" => AfterSwitch::MergeAndPrune,
        "rollback" => AfterSwitch::Merge,
        _ => return None,
    };
    if report.outcome != Outcome::Committed {
        return None;
    }
    let host = ctx.host();
    let merged = merge_etc_after_commit(ctx, state, host.as_ref());
    if after == AfterSwitch::MergeAndPrune {
        prune_after_upgrade(ctx, state, host.as_ref());
    }
    Some(merged)
}

/// Prints the plan under `--dry-run`, otherwise runs it as one transaction.
fn execute(ctx: &Ctx, state: Option<&mut State>, plan: Plan) -> Result<(), Error> {
    plan.validate().map_err(EngineError::from)?;
    if let Some(t) = freebsd_dry_run(ctx, &plan) {
        if ctx.global.json {
            outln!("{}", t.to_json());
        } else {
            out!("{t}");
        }
        return Ok(());
    }
    if ctx.global.dry_run {
        output::plan(ctx.global.json, &plan);
        return Ok(());
    }
    let Some(state) = state else {
        return Err(Error::Usage("internal: a run without the state dir".into()));
    };
    if plan.is_empty() {
        output::nothing_to_do(ctx.global.json, &plan);
        return Ok(());
    }
    let report = state.engine.run(plan)?;
    output::report(ctx.global.json, &report);
    run_derived(ctx, ctx.host().as_ref());
    Ok(())
}

/// etcupdate's post-merge steps due in the jails that run now
/// (`etcmerge::derived`), after a transaction committed: a jail the merge
/// found stopped gets them after the command that starts it. A failure is
/// said and retried later, never the command's failure (what it did is
/// committed).
fn run_derived(ctx: &Ctx, host: &dyn Host) {
    use crate::etcmerge::derived;
    match derived::run_due(&ctx.site(host)) {
        Ok(ran) => {
            for line in ran.iter().filter_map(derived::describe) {
                output::note(ctx.global.json, &line);
            }
        }
        Err(e) => output::note(
            ctx.global.json,
            &format!("etcupdate's steps inside the jails: {e}"),
        ),
    }
}

/// Under `--backend freebsd --dry-run`: the exact commands and files of
/// `plan`, to print instead of the generic step listing.
fn freebsd_dry_run(ctx: &Ctx, plan: &Plan) -> Option<crate::engine::transcript::Transcript> {
    if !(ctx.global.dry_run && ctx.backend == Backend::FreeBsd) {
        return None;
    }
    if Backend::native() != Backend::FreeBsd {
        output::note(ctx.global.json, host::freebsd::SIMULATED_NOTE);
    }
    Some(crate::engine::transcript::of_plan(plan, &ctx.cfg.freebsd))
}

fn init(ctx: &Ctx) -> Result<(), Error> {
    if ctx.global.dry_run {
        return execute(ctx, None, ops::init::plan(&ctx.layout));
    }
    // The journal lives in the state dir, so the state dir itself is made
    // before the transaction (durably, parent by parent); the rest is journaled.
    crate::fs::create_dir_all_durable(&ctx.layout.base, 0o755)?;
    crate::fs::create_dir_all_durable(&ctx.layout.state, 0o700)?;
    let mut state = open_state(ctx)?;
    let plan = ops::init::plan(&ctx.layout);
    execute(ctx, Some(&mut state), plan)
}

fn recover(ctx: &Ctx, rollback: bool) -> Result<(), Error> {
    let mode = if rollback {
        RecoverMode::Rollback
    } else {
        RecoverMode::Resume
    };
    if ctx.global.dry_run {
        // Read only: opening for writing would trim a torn tail.
        crate::statedir::require(&ctx.layout)?;
        let (_, pending) = statedir::read_history(&ctx.layout)?;
        output::pending(ctx.global.json, pending.as_ref(), mode);
        return Ok(());
    }
    let mut state = State::open(&ctx.layout, ctx.fault.clone(), ctx.host())?;
    state.engine.set_parallel(ctx.cfg.upgrade.threads());
    let report = state.engine.recover(mode)?;
    let merged = report
        .as_ref()
        .and_then(|r| after_recovered_switch(ctx, &mut state, r));
    if report.is_some() {
        run_derived(ctx, ctx.host().as_ref());
    }
    output::recovered(ctx.global.json, report.as_ref(), merged.as_ref());
    merged.map_or(Ok(()), |m| m.outcome())
}

fn history(ctx: &Ctx) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let (done, pending) = statedir::read_history(&ctx.layout)?;
    output::history(ctx.global.json, &done, pending.as_ref());
    Ok(())
}

fn run_plan(ctx: &Ctx, file: &std::path::Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::Usage(format!("read plan {}: {e}", file.display())))?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("plan {}: {e}", file.display())))?;
    // Before the lock and before any --auto-recover: exit 2 changes nothing.
    plan.validate().map_err(EngineError::from)?;
    if ctx.global.dry_run {
        return execute(ctx, None, plan);
    }
    let mut state = open_state(ctx)?;
    execute(ctx, Some(&mut state), plan)
}

/// The checks of a command's arguments that need no state: run before the
/// lock, so that a typo is exit 2 with nothing changed even while a
/// transaction is pending (which would be exit 4, or, under
/// `--auto-recover`, a recovery the operator did not mean to start now).
/// Names are parsed here once, into the types the planners take; the
/// planners check the rest again against the state.
fn check_input(command: &Command) -> Result<Checked, Error> {
    use ops::validate;
    let mut parsed = Checked::default();
    let checked = match command {
        Command::Jail(JailCmd::Create {
            name, hostname, ip, ..
        }) => {
            parsed.jails = vec![JailName::parse(name).map_err(OpsError::from)?];
            validate::hostname(hostname).and_then(|()| validate::ip(ip).map(drop))
        }
        Command::Jail(JailCmd::Destroy { name, .. }) => {
            parsed.jails = vec![JailName::parse(name).map_err(OpsError::from)?];
            Ok(())
        }
        Command::Start { names: n }
        | Command::Stop { names: n }
        | Command::Restart { names: n } => {
            parsed.jails = JailName::parse_all(n).map_err(OpsError::from)?;
            Ok(())
        }
        // skel's /etc is merged like a jail's.
        Command::EtcMerge { names: n } => n
            .iter()
            .filter(|n| n.as_str() != "skel")
            .try_for_each(|n| validate::jail_name(n)),
        Command::Rollback { to: Some(to) } => {
            parsed.archive = Some(ArchiveName::parse(to).map_err(OpsError::from)?);
            Ok(())
        }
        Command::Template(TemplateCmd::Build {
            source,
            dist_manifest,
        }) => {
            dist_needs_tar(source, dist_manifest.as_deref())?;
            check_given(source)?
        }
        Command::Upgrade {
            source,
            dist_manifest,
            canary,
            canary_wait,
        } => {
            dist_needs_tar(source, dist_manifest.as_deref())?;
            parsed.canary = canary_of(canary, *canary_wait)?;
            check_given(source)?
        }
        Command::Prune { keep: Some(keep) } => {
            crate::config::in_range("--keep", *keep, &crate::config::KEEP_ARCHIVES)
                .map(drop)
                .map_err(OpsError::from)
        }
        _ => Ok(()),
    };
    checked?;
    Ok(parsed)
}

/// The names of a command's arguments, parsed by [`check_input`].
#[derive(Default)]
struct Checked {
    /// The jail (`jail create`, `jail destroy`) or jails (`start`, `stop`,
    /// `restart`; none: all) named.
    jails: Vec<JailName>,
    /// `rollback --to`.
    archive: Option<ArchiveName>,
    /// `upgrade --canary`, `--canary-wait`.
    canary: ops::upgrade::Canary,
}

/// `--dist-manifest` checks a `--from-tar` archive: refused without one.
fn dist_needs_tar(source: &args::Source, manifest: Option<&std::path::Path>) -> Result<(), Error> {
    if let (Some(m), None) = (manifest, &source.from_tar) {
        return Err(OpsError::from(format!(
            "--dist-manifest {}: it checks a --from-tar archive; give --from-tar FILE with it",
            m.display()
        ))
        .into());
    }
    Ok(())
}

/// A world source's own checks, or a bundle that is a file.
fn check_given(source: &args::Source) -> Result<Result<(), OpsError>, Error> {
    Ok(match world_source(source.clone())? {
        Given::World(source) => ops::validate::source(&source),
        Given::Bundle(file) if !file.is_file() => {
            Err(format!("--from-bundle {}: no such file", file.display()).into())
        }
        Given::Bundle(_) => Ok(()),
    })
}

/// `--canary` names (each once) and `--canary-wait` (default 30 s).
fn canary_of(names: &[String], wait: Option<u64>) -> Result<ops::upgrade::Canary, Error> {
    let jails = JailName::parse_all(names).map_err(OpsError::from)?;
    if let Some(dup) = jails
        .iter()
        .enumerate()
        .find(|(i, j)| jails[..*i].contains(j))
        .map(|(_, j)| j)
    {
        return Err(Error::Usage(format!(
            "--canary names {dup} twice; name each canary jail once"
        )));
    }
    let wait_secs = match wait {
        Some(w) => crate::config::in_range("--canary-wait", w, &crate::config::CANARY_WAIT_SECS)
            .map_err(OpsError::from)?,
        None => 30,
    };
    Ok(ops::upgrade::Canary { jails, wait_secs })
}

impl Checked {
    /// The one jail `jail create` or `jail destroy` names.
    fn the_jail(&self) -> Result<&JailName, OpsError> {
        match self.jails.as_slice() {
            [one] => Ok(one),
            _ => Err("internal: the jail name was not parsed".into()),
        }
    }
}

/// What a build or upgrade was given: a world, or a bundle (whose source
/// in the plan is known only once it is checked).
enum Given {
    World(crate::world::Source),
    Bundle(std::path::PathBuf),
}

fn world_source(s: args::Source) -> Result<Given, Error> {
    use crate::world::Source;
    match (s.from_dir, s.from_tar, s.from_cmd, s.from_bundle) {
        (Some(d), None, None, None) => Ok(Given::World(Source::Dir(d))),
        (None, Some(t), None, None) => Ok(Given::World(Source::Tar(t))),
        (None, None, Some(c), None) => Ok(Given::World(Source::Cmd(c))),
        (None, None, None, Some(b)) => Ok(Given::Bundle(b)),
        _ => Err(Error::Usage(
            "give exactly one of --from-dir, --from-tar, --from-cmd, --from-bundle".into(),
        )),
    }
}

/// `--dist-manifest`: the `--from-tar` archive checked against a FreeBSD
/// release MANIFEST (its SHA-256, found by the archive's file name) before
/// the planner reads a byte of it, so a damaged or substituted archive is
/// never even decompressed; exit 2 on any mismatch. Done after the lock,
/// where the planner runs: the check reads the whole archive.
fn check_dist(
    source: &crate::world::Source,
    manifest: Option<&std::path::Path>,
) -> Result<Option<crate::world::distmanifest::DistEntry>, OpsError> {
    let (Some(manifest), crate::world::Source::Tar(archive)) = (manifest, source) else {
        return Ok(None);
    };
    crate::world::distmanifest::verify(archive, manifest)
        .map(Some)
        .map_err(|e| OpsError::Refused(e.to_string()))
}

/// The plan with the checksum `--dist-manifest` vouched for in its notes
/// (the journal, `--dry-run` and `history` show it).
fn noted(mut plan: Plan, dist: Option<crate::world::distmanifest::DistEntry>) -> Plan {
    if let Some(d) = dist {
        plan.notes.insert(
            "sha256".into(),
            format!(
                "{} ({} in MANIFEST)",
                crate::manifest::hex(&d.sha256),
                d.name
            ),
        );
    }
    plan
}

/// The common shape of a mutating command: lock (unless dry-run), deal with
/// a pending transaction, plan against the current state, then run or print.
fn plan_and_run(
    ctx: &Ctx,
    planner: impl FnOnce(&Ctx, &dyn Host) -> Result<Plan, OpsError>,
) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    if ctx.global.dry_run {
        let plan = planner(ctx, host.as_ref()).map_err(|e| dry_run_refusal(ctx, e))?;
        return execute(ctx, None, plan);
    }
    let mut state = open_state(ctx)?;
    let plan = planner(ctx, host.as_ref())?;
    execute(ctx, Some(&mut state), plan)
}

/// Why a dry run could not plan. A dry run takes no lock, so what it finds
/// in the way (`mroot2.jailtx-partial`, a staged manifest) may belong to a
/// run in progress or to an interrupted transaction: then that is the
/// answer (exit 5 or 4), never advice to remove what a transaction owns.
fn dry_run_refusal(ctx: &Ctx, planner_error: OpsError) -> Error {
    if let Err(held) = crate::engine::lock::StateLock::probe(&ctx.layout.lock) {
        return statedir::StateError::Lock(held).into();
    }
    match statedir::read_history(&ctx.layout) {
        Ok((_, Some(p))) => EngineError::Pending {
            tx: p.tx(),
            op: p.begin.plan.op.clone(),
            summary: p.begin.plan.summary.clone(),
        }
        .into(),
        _ => planner_error.into(),
    }
}

/// What follows the commit of a switch to another template, each its own
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterSwitch {
    /// `upgrade`: the `/etc` merge to the new world, then the prune.
    MergeAndPrune,
    /// `rollback`: the same `/etc` merge, back to the world returned to
    /// (its base the world the jails leave, theirs the one they return to).
    /// No prune: a rollback never removed archives, and the template it
    /// leaves is the one a second rollback would return to.
    Merge,
}

/// `rollback [--to ARCHIVE]`: the window back to an archived template,
/// then the `/etc` merge back. Its dry run shows both: the merge as it
/// would be planned after the commit, to the archive returned to (named as
/// it is now, before the switch renames it `mroot`).
fn rollback(ctx: &Ctx, to: Option<&ArchiveName>) -> Result<(), Error> {
    if !ctx.global.dry_run {
        return plan_window_and_run(ctx, AfterSwitch::Merge, |ctx, host| {
            ops::upgrade::plan_rollback(&ctx.site(host), to)
        });
    }
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    let site = ctx.site(host.as_ref());
    let (plan, _) = ops::upgrade::plan_rollback(&site, to).map_err(|e| dry_run_refusal(ctx, e))?;
    plan.validate().map_err(EngineError::from)?;
    let target = ops::upgrade::rollback_target(&site, to)?;
    let between = crate::etcmerge::Between::rollback_to(&target);
    let mut merged = output::EtcMerged::default();
    let merge = match crate::etcmerge::plan_between(&site, &[], between) {
        Ok((merge, report)) => {
            merge.validate().map_err(EngineError::from)?;
            merged.report = Some(report);
            Some(merge)
        }
        Err(e) => {
            merged.error = Some(format!(
                "{e}; fix that, then run `jailtx etc-merge` after the rollback"
            ));
            None
        }
    };
    if let Some(t) = freebsd_dry_run(ctx, &plan) {
        let mt = merge
            .as_ref()
            .map(|m| crate::engine::transcript::of_plan(m, &ctx.cfg.freebsd));
        output::rollback_transcript(ctx.global.json, &t, &merged, mt.as_ref());
    } else {
        output::rollback_plan(ctx.global.json, &plan, &merged, merge.as_ref());
    }
    merged.outcome()
}

/// [`plan_and_run`] for plans with a downtime window, which the end record
/// and the output report in milliseconds; after a commit, what `after` says.
fn plan_window_and_run(
    ctx: &Ctx,
    after: AfterSwitch,
    planner: impl FnOnce(&Ctx, &dyn Host) -> Result<(Plan, (usize, usize)), OpsError>,
) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    if ctx.global.dry_run {
        let (plan, _) = planner(ctx, host.as_ref()).map_err(|e| dry_run_refusal(ctx, e))?;
        return execute(ctx, None, plan);
    }
    let mut state = open_state(ctx)?;
    let (plan, window) = planner(ctx, host.as_ref())?;
    plan.validate().map_err(EngineError::from)?;
    let notes = ops::upgrade::downtime_notes(
        window,
        crate::manifest::path_for(&ctx.layout.manifests, "mroot"),
    );
    let report = state.engine.run_noted(plan, &notes)?;
    // A clash or a failure here never undoes the committed switch. The
    // merge plans against the state the switch left: `mroot` is the world
    // switched to, the newest archive the one left (see `etcmerge::plan`).
    let merged = merge_etc_after_commit(ctx, &mut state, host.as_ref());
    if merged.tx.is_none() {
        // The steps a merge runs after its own commit are due after any
        // committed transaction: the switch restarted the jails.
        run_derived(ctx, host.as_ref());
    }
    // Pruning last, as its own transaction: the merge needs the old template
    // (now the newest archive) as its base, even with keep_archives = 0.
    if after == AfterSwitch::MergeAndPrune {
        prune_after_upgrade(ctx, &mut state, host.as_ref());
    }
    output::upgrade_and_merge(ctx.global.json, &report, &merged);
    merged.outcome()
}

/// `prune --keep keep_archives` after an upgrade; a failure is reported, never
/// turned into the upgrade's failure (the upgrade is committed).
fn prune_after_upgrade(ctx: &Ctx, state: &mut State, host: &dyn Host) {
    let keep = ctx.cfg.keep_archives as usize;
    let result = ops::upgrade::plan_prune(&ctx.site(host), keep)
        .map_err(|e| e.to_string())
        .and_then(|plan| {
            if plan.is_empty() {
                return Ok(None);
            }
            state.engine.run(plan).map(Some).map_err(|e| e.to_string())
        });
    match result {
        Ok(Some(r)) => output::note(ctx.global.json, &output::report_line(&r)),
        Ok(None) => {}
        Err(e) => output::note(
            ctx.global.json,
            &format!("pruning after the upgrade failed: {e}; run `jailtx prune` later"),
        ),
    }
}

/// The `/etc` merge as its own transaction: planned against the state the
/// previous transaction left, run, and described (never an `Err`: the caller
/// has committed work to report first).
fn merge_etc_after_commit(ctx: &Ctx, state: &mut State, host: &dyn Host) -> output::EtcMerged {
    let mut out = output::EtcMerged::default();
    let (plan, report) = match crate::etcmerge::plan(&ctx.site(host), &[]) {
        Ok(p) => p,
        Err(e) => {
            out.error = Some(format!("{e}; fix that, then run `jailtx etc-merge`"));
            return out;
        }
    };
    out.report = Some(report);
    if plan.is_empty() {
        return out;
    }
    match state.engine.run(plan) {
        Ok(tx) => {
            out.tx = Some(tx);
            run_derived(ctx, host);
        }
        Err(e) => out.error = Some(format!("the /etc merge: {e}")),
    }
    out
}

/// `etc-merge [NAME…]`: the three-way `/etc` merge as one transaction.
fn etc_merge(ctx: &Ctx, names: &[String]) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    let mut state = if ctx.global.dry_run {
        None
    } else {
        Some(open_state(ctx)?)
    };
    let (plan, report) = crate::etcmerge::plan(&ctx.site(host.as_ref()), names)?;
    plan.validate().map_err(EngineError::from)?;
    let mut merged = output::EtcMerged {
        report: Some(report),
        ..Default::default()
    };
    if let Some(t) = freebsd_dry_run(ctx, &plan) {
        // The commands, and beside them the per-file report: refusals and
        // conflicts have no step, and still make the dry run exit 7.
        output::etc_merge_transcript(ctx.global.json, &merged, &t);
        return merged.outcome();
    }
    match &mut state {
        None => output::etc_merge_plan(ctx.global.json, &merged, &plan),
        Some(state) => {
            if !plan.is_empty() {
                merged.tx = Some(state.engine.run(plan)?);
                run_derived(ctx, host.as_ref());
            }
            output::etc_merge(ctx.global.json, &merged);
        }
    }
    merged.outcome()
}

/// `metrics [--output FILE]`: read only, as `status` (no lock, so it never
/// waits for a running transaction), then stdout or the file.
fn metrics(ctx: &Ctx, output: Option<&std::path::Path>) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let target = output.map(crate::metrics::Output::check).transpose()?;
    let host = ctx.host();
    let facts = crate::metrics::gather(&ctx.site(host.as_ref()))?;
    let text = crate::metrics::render(&facts);
    match target {
        Some(t) if !ctx.global.dry_run => {
            t.write(&text)?;
            if !t.collected() {
                output::note(
                    ctx.global.json,
                    &format!(
                        "{}: node_exporter's textfile collector reads only files named *.prom",
                        t.path().display()
                    ),
                );
            }
            output::metrics_written(ctx.global.json, t.path(), text.len());
        }
        _ => output::metrics(ctx.global.json, &text),
    }
    Ok(())
}

fn status(ctx: &Ctx) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    let site = ctx.site(host.as_ref());
    // The whole id, which is the same on every host holding the same
    // template (a fleet's `status --json` shows who runs what); each row
    // shows the short id of the template that jail's root is.
    let id =
        crate::manifest::template_id(&crate::manifest::path_for(&ctx.layout.manifests, "mroot"))
            .ok();
    let rows = ops::jail::status(&site)?;
    // The jails' state alone can look like a quiet stopped host; an
    // interrupted transaction is what explains it at 3 a.m.
    let pending = statedir::read_pending(&ctx.layout)?;
    // A transaction without an end is either interrupted or running now
    // (an upgrade's canaries soaking, a world being copied): only the lock
    // tells. Probed only then, so a quiet host's status never touches it.
    let running = pending.as_ref().and_then(|_| {
        match crate::engine::lock::StateLock::probe(&ctx.layout.lock) {
            Err(held @ crate::engine::lock::LockError::Held { .. }) => Some(held.to_string()),
            _ => None,
        }
    });
    let origin = ops::bundle::origin(&ctx.layout, "mroot");
    output::status(
        ctx.global.json,
        &rows,
        id.as_deref(),
        pending.as_ref(),
        running.as_deref(),
        origin.as_ref(),
    );
    Ok(())
}
