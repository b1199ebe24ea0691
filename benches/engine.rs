//! The engine's cost per step: a plan of N `MakeDir` (`WriteFile`,
//! `Rename`, `Mount` through the in-memory host) steps run through
//! `Engine::run` over real journal files, against the same N operations done
//! bare with the `jailtx::fs` primitives, side by side in one run, with the
//! disk's fdatasync cost measured beside each. Prints figures and ratios;
//! asserts only that the work was done, never a timing.
//!
//! `cargo bench --bench engine` (or `scripts/bench`) measures. Under
//! `cargo test --all-targets` (no `--bench` argument) it runs a few steps
//! once, as a smoke test. Knobs: `JAILTX_BENCH_DIR` (where the scratch
//! directories go; default cargo's target/tmp), `JAILTX_BENCH_STEPS`,
//! `JAILTX_BENCH_REPS`.

mod common;

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::{Knobs, env_usize, median};
use jailtx::engine::{Action, Engine, Plan};
use jailtx::fs::{create_dir_durable, fsync_dir, rename_durable, sync_tree, write_atomic};
use jailtx::host::Host;
use jailtx::host::recording::RecordingHost;
use jailtx::journal::{FileStorage, Outcome, Storage};

/// Bytes of each `WriteFile` step: a small config file (rc.conf, fstab.NAME).
const FILE_BYTES: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    MakeDir,
    WriteFile,
    Rename,
    /// A volatile step, through the in-memory `RecordingHost`: no disk work
    /// of its own, so the row shows the journal's cost alone, and the engine
    /// batches a run of such steps under one intent and one done record.
    Mount,
}

impl Op {
    const ALL: [Op; 4] = [Op::MakeDir, Op::WriteFile, Op::Rename, Op::Mount];

    fn name(self) -> &'static str {
        match self {
            Op::MakeDir => "MakeDir",
            Op::WriteFile => "WriteFile",
            Op::Rename => "Rename",
            Op::Mount => "Mount (RecordingHost)",
        }
    }

    /// What the bare primitive does per call, for the reader of the table.
    fn bare_syncs(self) -> &'static str {
        match self {
            Op::MakeDir => "fsync dir + fsync parent",
            Op::WriteFile => "fsync file + fsync parent",
            Op::Rename => "fsync parent (same dir)",
            Op::Mount => "nothing on disk (in-memory host)",
        }
    }
}

/// `median (min–max)` of per-step figures.
fn spread(v: &[f64]) -> String {
    common::spread(v, 0)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn contents(i: usize) -> String {
    let line = format!("# bench file {i}\nkey_{i}=\"value\"\n");
    line.repeat(FILE_BYTES / line.len() + 1)[..FILE_BYTES].to_owned()
}

/// A fresh directory for one measurement: `data/` (what the operations
/// touch) and `state/` (the journal and history). For `Rename`, the N
/// sources are made beforehand. Everything is flushed before returning, so
/// the timed fsyncs do not also write the setup's metadata.
fn prepare(root: &Path, tag: &str, op: Op, steps: usize) -> Result<PathBuf> {
    let dir = root.join(tag);
    fs::create_dir_all(dir.join("data"))?;
    fs::create_dir_all(dir.join("state"))?;
    if op == Op::Rename {
        for i in 0..steps {
            fs::write(dir.join(format!("data/a{i}")), contents(i))?;
        }
    }
    sync_tree(&dir)?;
    Ok(dir)
}

fn action(op: Op, data: &Path, i: usize) -> Action {
    match op {
        Op::MakeDir => Action::MakeDir {
            path: data.join(format!("d{i}")),
            mode: 0o755,
        },
        Op::WriteFile => Action::WriteFile {
            path: data.join(format!("f{i}")),
            contents: contents(i),
            mode: 0o644,
        },
        Op::Rename => Action::Rename {
            from: data.join(format!("a{i}")),
            to: data.join(format!("b{i}")),
        },
        Op::Mount => Action::Mount {
            src: data.join("template"),
            dst: data.join(format!("j{i}")),
            read_only: true,
        },
    }
}

fn bare(op: Op, data: &Path, steps: usize) -> Result<Duration> {
    let paths: Vec<Action> = (0..steps).map(|i| action(op, data, i)).collect();
    let host = RecordingHost::new();
    let t = Instant::now();
    for a in &paths {
        match a {
            Action::MakeDir { path, mode } => create_dir_durable(path, *mode)?,
            Action::WriteFile {
                path,
                contents,
                mode,
            } => write_atomic(path, contents.as_bytes(), *mode)?,
            Action::Rename { from, to } => rename_durable(from, to)?,
            Action::Mount {
                src,
                dst,
                read_only,
            } => host.mount(src, dst, *read_only)?,
            _ => unreachable!("only the three benchmarked kinds are built"),
        }
    }
    Ok(t.elapsed())
}

fn open_engine(state: &Path) -> Result<Engine<FileStorage>> {
    let jpath = state.join("journal");
    let hpath = state.join("history");
    let engine = Engine::open(
        FileStorage::open(&jpath)?,
        &jpath,
        FileStorage::open(&hpath)?,
        &hpath,
        0,
        None,
        Box::new(RecordingHost::new()),
    )?;
    Ok(engine)
}

/// Runs `steps` actions as one transaction; (time of `run`, journal+history
/// fdatasyncs it made).
fn engined(op: Op, dir: &Path, steps: usize) -> Result<(Duration, u64)> {
    let data = dir.join("data");
    let mut engine = open_engine(&dir.join("state"))?;
    let mut plan = Plan::new("bench", format!("{steps} x {}", op.name()));
    for i in 0..steps {
        plan.push(format!("s{i}"), action(op, &data, i));
    }
    let syncs = engine.syncs();
    let t = Instant::now();
    let report = engine.run(plan)?;
    let elapsed = t.elapsed();
    ensure!(
        report.outcome == Outcome::Committed && report.executed == steps,
        "engine run did not commit all steps: {report:?}"
    );
    Ok((elapsed, engine.syncs() - syncs))
}

/// The work really happened, the same way in both arms.
fn check(op: Op, data: &Path, steps: usize) -> Result<()> {
    for i in 0..steps {
        match op {
            Op::MakeDir => ensure!(data.join(format!("d{i}")).is_dir(), "d{i} missing"),
            Op::WriteFile => ensure!(
                fs::read_to_string(data.join(format!("f{i}")))? == contents(i),
                "f{i} wrong"
            ),
            Op::Rename => ensure!(
                data.join(format!("b{i}")).is_file() && !data.join(format!("a{i}")).exists(),
                "a{i} -> b{i} not renamed"
            ),
            // The host is in memory: `executed == steps` (checked by the
            // engine arm) is all there is to see.
            Op::Mount => {}
        }
    }
    Ok(())
}

/// An empty plan: the fixed cost of a transaction (begin, commit, end,
/// history summary, journal reset).
fn empty_tx(dir: &Path) -> Result<(Duration, u64)> {
    let mut engine = open_engine(&dir.join("state"))?;
    let syncs = engine.syncs();
    let t = Instant::now();
    engine.run(Plan::new("bench", "empty"))?;
    Ok((t.elapsed(), engine.syncs() - syncs))
}

/// µs per fdatasync of a 64-byte append to a new file in `dir`: what a
/// journal record costs.
fn append_syncs(dir: &Path, n: usize) -> Result<f64> {
    let path = dir.join("appends");
    let mut file = FileStorage::open(&path)?;
    file.sync_data()?;
    sync_tree(dir)?;
    let record = [0x5au8; 64];
    let t = Instant::now();
    for i in 0..n {
        file.write(i as u64 * 64, &record)?;
        file.sync_data()?;
    }
    let per_call = us(t.elapsed()) / n as f64;
    drop(file);
    fs::remove_file(&path)?;
    Ok(per_call)
}

/// µs per fdatasync of a 64-byte append (what a journal record costs), of a
/// 64-byte overwrite, and per fsync of a directory holding one new entry
/// (what the bare ops pay).
fn raw_syncs(root: &Path, n: usize) -> Result<(f64, f64, f64)> {
    let dir = root.join("raw");
    fs::create_dir_all(&dir)?;
    let fdatasync = append_syncs(&dir, n)?;
    let record = [0x5au8; 64];

    // The same records written over blocks that already hold data, so the
    // file's size and block map never change: fdatasync has no metadata to
    // commit. What a pre-sized journal would pay per record.
    let mut over = FileStorage::open(&dir.join("overwrites"))?;
    over.write(0, &vec![0u8; n * 64])?;
    over.sync_data()?;
    sync_tree(&dir)?;
    let t = Instant::now();
    for i in 0..n {
        over.write(i as u64 * 64, &record)?;
        over.sync_data()?;
    }
    let overwrite = us(t.elapsed()) / n as f64;

    let mut dir_sync = Duration::ZERO;
    for i in 0..n {
        fs::create_dir(dir.join(format!("e{i}")))?;
        let t = Instant::now();
        fsync_dir(&dir)?;
        dir_sync += t.elapsed();
    }
    fs::remove_dir_all(&dir)?;
    Ok((fdatasync, overwrite, us(dir_sync) / n as f64))
}

struct Row {
    op: Op,
    bare_us: f64,
    engine_us: f64,
    bare_samples: Vec<f64>,
    engine_samples: Vec<f64>,
    syncs_per_step: f64,
    /// µs per journal-like fdatasync, measured beside this row's runs.
    fdatasync_samples: Vec<f64>,
    /// µs of an empty transaction, measured beside this row's runs.
    empty_us: f64,
}

fn main() -> Result<()> {
    let k = Knobs::from_env()?;
    let scratch = k.scratch("jailtx-bench-engine.")?;
    let root = scratch.path();
    let n = env_usize("JAILTX_BENCH_STEPS", if k.full { 200 } else { 8 })?.max(1);

    println!("== engine: journal overhead per step");
    println!(
        "mode: {}; {} steps per plan, median of {} runs; {}",
        k.mode("smoke (cargo test): figures mean nothing"),
        n,
        k.reps,
        common::machine(),
    );
    common::print_start(
        root,
        "tmpfs (fsync costs nothing: figures are not representative)",
    );

    let mut fdatasyncs = Vec::new();
    let mut overwrites = Vec::new();
    let mut dirsyncs = Vec::new();
    for _ in 0..k.reps {
        let (a, o, d) = raw_syncs(root, n)?;
        fdatasyncs.push(a);
        overwrites.push(o);
        dirsyncs.push(d);
    }

    let mut empty_all = Vec::new();
    let mut empty_syncs = 0;
    let mut rows = Vec::new();
    for op in Op::ALL {
        let mut bare_t = Vec::new();
        let mut engine_t = Vec::new();
        let mut sync_t = Vec::new();
        let mut empty_t = Vec::new();
        let mut syncs = 0;
        for r in 0..k.reps {
            // Four arms, rotated every run so that drift favours none: the
            // bare loop, the engine, and right beside them the disk's
            // fdatasync cost and an empty transaction, since this disk's
            // latency moves by several times within minutes.
            for k in 0..4 {
                let arm = (k + r) % 4;
                let dir = prepare(root, &format!("{}-{r}-{arm}", op.name()), op, n)?;
                match arm {
                    0 => {
                        bare_t.push(us(bare(op, &dir.join("data"), n)?) / n as f64);
                        check(op, &dir.join("data"), n)?;
                    }
                    1 => {
                        let (t, s) = engined(op, &dir, n)?;
                        engine_t.push(us(t) / n as f64);
                        syncs = s;
                        check(op, &dir.join("data"), n)?;
                    }
                    2 => sync_t.push(append_syncs(&dir, n)?),
                    _ => {
                        let (t, s) = empty_tx(&dir)?;
                        empty_t.push(us(t));
                        empty_syncs = s;
                    }
                }
                fs::remove_dir_all(&dir)?;
            }
        }
        empty_all.extend(&empty_t);
        rows.push(Row {
            op,
            bare_us: median(&bare_t),
            engine_us: median(&engine_t),
            bare_samples: bare_t,
            engine_samples: engine_t,
            syncs_per_step: syncs.saturating_sub(empty_syncs) as f64 / n as f64,
            fdatasync_samples: sync_t,
            empty_us: median(&empty_t),
        });
    }

    println!();
    println!(
        "raw disk, µs per call, median (min–max) of {} runs of {n}:",
        k.reps
    );
    println!("| what | µs |");
    println!("| --- | ---: |");
    println!(
        "| fdatasync after a 64-byte append (one journal record) | {} |",
        spread(&fdatasyncs)
    );
    println!(
        "| fdatasync after a 64-byte overwrite (size and blocks unchanged) | {} |",
        spread(&overwrites)
    );
    println!(
        "| fsync of a directory holding one new entry | {} |",
        spread(&dirsyncs)
    );
    println!();
    println!(
        "per transaction (empty plan: begin, commit, end, history summary, journal reset): \
         {empty_syncs} fdatasyncs, {} µs",
        spread(&empty_all)
    );
    println!();
    println!(
        "per step, {n} steps per plan: median (min–max) of {} runs; engine µs/step includes \
         the per-transaction constant spread over the steps:",
        k.reps
    );
    println!(
        "| operation | steps | bare µs/step | engine µs/step | overhead µs/step | \
         per-step overhead µs (less per-tx constant) | fdatasync µs (beside) | \
         per-step overhead / fdatasync | journal fdatasyncs/step (target ≤ 2) | engine/bare | \
         bare op does |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for row in &rows {
        let overhead = row.engine_us - row.bare_us;
        let per_step = overhead - row.empty_us / n as f64;
        let fdatasync_us = median(&row.fdatasync_samples);
        println!(
            "| {} | {n} | {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.3}{} | {} | {} |",
            row.op.name(),
            spread(&row.bare_samples),
            spread(&row.engine_samples),
            overhead,
            per_step,
            spread(&row.fdatasync_samples),
            per_step / fdatasync_us,
            row.syncs_per_step,
            if row.syncs_per_step <= 2.0 {
                ""
            } else {
                " (over target)"
            },
            // A bare in-memory call has nothing to compare with.
            if row.op != Op::Mount {
                format!("{:.2}", row.engine_us / row.bare_us)
            } else {
                "—".to_owned()
            },
            row.op.bare_syncs(),
        );
    }
    black_box(&rows);
    println!();
    common::print_end();
    Ok(())
}
