//! The transaction engine: runs a [`Plan`] through the write-ahead journal,
//! compensates on failure, and finishes interrupted transactions (`recover`).
//!
//! Protocol, per step `i` (each append is fdatasync'ed before returning):
//! intent(i) → effect → done(i). The commit record is appended when execution
//! reaches the plan's commit point. On a failure before it: abort, then for
//! each step with an intent, newest first: comp-intent(i) → undo → comp-done(i);
//! then end. See `journal-format/README.md` for why each crash point recovers.

pub mod action;
pub mod fault;
pub mod lock;
pub mod parallel;
pub mod transcript;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant as Clock;

use serde::Serialize;
use tracing::{info, info_span, warn};

use crate::host::Host;
use crate::journal::state::{TxStatus, fold, summaries};
use crate::journal::{
    Abort, Begin, Commit, End, HISTORY_MAGIC, JOURNAL_MAGIC, JournalError, Log, Outcome, Record,
    StepMark, StepRange, Storage, Summary, TxId, TxState,
};

pub use crate::plan::{self, Action, Plan, PlanError, Step};
pub use action::ActionError;
pub use fault::{Fault, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A test's `JAILTX_FAULT` names no step of the transaction it applies
    /// to: refused before the transaction begins, so a crash test cannot
    /// pass without crashing.
    #[error(
        "{}={fault} names no step of this {op} transaction (its steps: {steps}); nothing was done: name one of them or its index",
        fault::ENV
    )]
    FaultNamesNoStep {
        fault: String,
        op: String,
        steps: String,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "transaction {tx} ({op}: {summary}) was interrupted; run `jailtx recover` first (or pass --auto-recover)"
    )]
    Pending {
        tx: TxId,
        op: String,
        summary: String,
    },
    #[error(
        "step {step} ({name}: {action}) failed: {source}; transaction {tx} was rolled back, nothing changed"
    )]
    RolledBack {
        tx: TxId,
        step: usize,
        name: String,
        action: String,
        source: Box<ActionError>,
    },
    #[error(
        "transaction {tx}: undoing step {step} ({name}: {action}) failed: {source}; the rollback is stopped half way: fix that, then run `jailtx recover`"
    )]
    CompensationFailed {
        tx: TxId,
        step: usize,
        name: String,
        action: String,
        source: Box<ActionError>,
    },
    #[error(
        "transaction {tx}: putting back what step {step} ({name}: {action}) did before the restart failed: {source}; fix that, then run `jailtx recover`"
    )]
    Reconcile {
        tx: TxId,
        step: usize,
        name: String,
        action: String,
        source: Box<ActionError>,
    },
    /// An fsync or syncfs of a step's effect or undo failed. Whether the
    /// disk holds what was written is unknown (after a failed fsync the
    /// kernel may drop the dirty pages and a retry "succeeds"), so nothing
    /// more is done or journaled: compensating would fsync the same
    /// directories again and call the result safe.
    #[error(
        "transaction {tx}: {doing} step {step} ({name}) failed: {source}; the disk may have lost writes, so jailtx stopped and left the transaction pending: once the disk is healthy, run `jailtx recover`"
    )]
    SyncFailed {
        tx: TxId,
        doing: &'static str,
        step: usize,
        name: String,
        /// What failed to sync (the source's message names it too).
        path: std::path::PathBuf,
        source: Box<ActionError>,
    },
    #[error(
        "transaction {tx} is committed but step {step} ({name}: {action}) failed: {source}; fix that, then run `jailtx recover` to finish it"
    )]
    AfterCommit {
        tx: TxId,
        step: usize,
        name: String,
        action: String,
        source: Box<ActionError>,
    },
}

impl EngineError {
    /// The exit code of SPEC section 2.
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::Journal(j) => j.exit_code(),
            EngineError::Plan(_) | EngineError::FaultNamesNoStep { .. } => 2,
            EngineError::Pending { .. } => 4,
            EngineError::RolledBack { .. } => 1,
            EngineError::CompensationFailed { .. }
            | EngineError::SyncFailed { .. }
            | EngineError::AfterCommit { .. }
            | EngineError::Reconcile { .. } => 6,
        }
    }
}

/// Which way the engine is taking a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// How `recover` finishes a transaction that may still go either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverMode {
    Resume,
    Rollback,
}

impl RecoverMode {
    /// The way `recover` in this mode takes a transaction in `status`: the
    /// one rule both the real run and `recover --dry-run` print from, so the
    /// preview cannot promise what the run will not do. A committed
    /// transaction only goes forwards; a rollback that had begun goes on.
    pub fn direction(self, status: TxStatus) -> Direction {
        match (status, self) {
            (TxStatus::InFlight, RecoverMode::Rollback) | (TxStatus::RollingBack, _) => {
                Direction::Backward
            }
            _ => Direction::Forward,
        }
    }
}

/// What a finished transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub tx: TxId,
    pub op: String,
    pub summary: String,
    pub outcome: Outcome,
    pub steps: usize,
    /// Steps (or compensations) this run executed.
    pub executed: usize,
    pub reason: Option<String>,
    pub elapsed_ms: u64,
    /// The steps this run carried out forwards, with when they ran.
    pub timings: Vec<StepTiming>,
    /// Facts written into the end record (and so into `history`).
    pub notes: BTreeMap<String, String>,
}

/// When one step ran, in microseconds from the start of this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepTiming {
    pub index: usize,
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
}

/// Computes the end record's notes from the timings (e.g. a downtime window).
pub type NotesFn<'a> = &'a dyn Fn(&[StepTiming]) -> BTreeMap<String, String>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The journal and history of one state dir, opened for writing.
pub struct Engine<S: Storage> {
    journal: Log<S>,
    history: Log<S>,
    pending: Option<TxState>,
    next_tx: TxId,
    fault: Option<Fault>,
    /// Whether an earlier transaction of this process had the fault's step:
    /// the follow-up transactions of one command (the merge or prune after an
    /// upgrade) then need not have it too.
    fault_found: bool,
    executed: usize,
    host: Box<dyn Host>,
    timings: Vec<StepTiming>,
    /// What steps of this run moved out of their way (fs::quarantine).
    quarantined: Vec<String>,
    /// Threads a batch's independent chains run on (`[upgrade] parallel`).
    parallel: usize,
    /// Steps of the batch that just failed which never started (see `backward`).
    not_started: std::collections::BTreeSet<usize>,
}

impl<S: Storage> Engine<S> {
    /// Opens both files (trimming torn tails, refusing corruption), files the
    /// summary of any transaction that ended but was not yet in the history,
    /// and finds the interrupted transaction, if there is one.
    /// `min_next_tx`: the highest transaction already filed in rotated
    /// history, so numbers keep growing and nothing is filed twice.
    pub fn open(
        journal: S,
        journal_path: &Path,
        history: S,
        history_path: &Path,
        min_next_tx: TxId,
        fault: Option<Fault>,
        host: Box<dyn Host>,
    ) -> Result<Self, EngineError> {
        let (mut history, hscan) = Log::open(history, history_path, HISTORY_MAGIC)?;
        let (mut journal, jscan) = Log::open(journal, journal_path, JOURNAL_MAGIC)?;
        let last_filed = summaries(history_path, &hscan.records)?
            .last()
            .map(|s| s.tx)
            .unwrap_or(0)
            .max(min_next_tx);
        let txs = fold(journal_path, &jscan.records)?;
        let last_in_journal = txs.last().map(TxState::tx).unwrap_or(0);
        let mut pending = None;
        for tx in txs {
            if tx.end.is_none() {
                pending = Some(tx);
            } else if tx.tx() > last_filed {
                history.append(&Record::Summary(summary_of(&tx)))?;
            }
        }
        if pending.is_none() && !journal.is_empty() {
            journal.reset()?;
        }
        if let Some(st) = pending.as_mut() {
            // The trimmed tail belonged to the pending transaction (the last
            // one in the journal; a tail after an End could only have been
            // the next Begin, before which nothing acts).
            st.tail_trimmed = jscan.torn_bytes > 0;
            reassert_lost_intent(&mut journal, st)?;
        }
        Ok(Engine {
            journal,
            history,
            pending,
            next_tx: (last_filed + 1).max(last_in_journal + 1),
            fault,
            fault_found: false,
            executed: 0,
            host,
            timings: Vec::new(),
            quarantined: Vec::new(),
            parallel: 1,
            not_started: Default::default(),
        })
    }

    /// Runs a batch's independent per-jail chains on up to `n` threads
    /// (1, the default: every step in plan order). See [`parallel`].
    pub fn set_parallel(&mut self, n: usize) {
        self.parallel = n.max(1);
    }

    /// The interrupted transaction, if any.
    pub fn pending(&self) -> Option<&TxState> {
        self.pending.as_ref()
    }

    /// fdatasyncs made on the journal and history so far.
    pub fn syncs(&self) -> u64 {
        self.journal.syncs() + self.history.syncs()
    }

    /// Runs `plan` as a new transaction.
    pub fn run(&mut self, plan: Plan) -> Result<Report, EngineError> {
        self.run_noted(plan, &|_| BTreeMap::new())
    }

    /// Runs `plan`; when it commits, `notes` turns the step timings into facts
    /// for the end record (written before the transaction ends, so history has them).
    pub fn run_noted(&mut self, plan: Plan, notes: NotesFn) -> Result<Report, EngineError> {
        if let Some(p) = &self.pending {
            return Err(EngineError::Pending {
                tx: p.tx(),
                op: p.begin.plan.op.clone(),
                summary: p.begin.plan.summary.clone(),
            });
        }
        plan.validate()?;
        self.check_fault(&plan)?;
        let begin = Begin {
            tx: self.next_tx,
            started_ms: now_ms(),
            plan,
        };
        self.next_tx += 1;
        self.journal.append(&Record::Begin(begin.clone()))?;
        let mut st = TxState::new(begin);
        let _span = info_span!("tx", tx = st.tx(), op = %st.begin.plan.op).entered();
        let result = self.forward_noted(&mut st, notes);
        self.keep_if_unfinished(st);
        result
    }

    /// Refuses a fault that applies to `plan` but names none of its steps,
    /// unless an earlier transaction of this process had that step.
    fn check_fault(&mut self, plan: &Plan) -> Result<(), EngineError> {
        check_fault(self.fault.as_ref(), &mut self.fault_found, plan)
    }

    /// Finishes the interrupted transaction: forwards by default, backwards
    /// with [`RecoverMode::Rollback`] unless it is committed; a rollback that
    /// had begun always goes on. `Ok(None)` when nothing was pending.
    pub fn recover(&mut self, mode: RecoverMode) -> Result<Option<Report>, EngineError> {
        let Some(pending) = &self.pending else {
            return Ok(None);
        };
        check_fault(
            self.fault.as_ref(),
            &mut self.fault_found,
            &pending.begin.plan,
        )?;
        let Some(mut st) = self.pending.take() else {
            return Ok(None);
        };
        let _span = info_span!("recover", tx = st.tx(), op = %st.begin.plan.op).entered();
        let status = st.status();
        if status == TxStatus::Committed && mode == RecoverMode::Rollback {
            warn!("transaction is past its commit point: finishing it forwards instead");
        }
        let dir = mode.direction(status);
        let result = self.settle(&st, dir).and_then(|()| match dir {
            Direction::Forward => self.forward(&mut st),
            Direction::Backward if st.abort.is_none() => self
                .abort(
                    &mut st,
                    None,
                    "rolled back by `jailtx recover --rollback`".into(),
                )
                .and_then(|()| self.backward(&mut st)),
            Direction::Backward => self.backward(&mut st),
        });
        self.keep_if_unfinished(st);
        result.map(Some)
    }

    /// Puts the kernel state a reboot wipes (mounts, running jails) back to
    /// what the journal says it is before `dir`'s next step or compensation
    /// runs, so that step finds what it expects. Without a reboot every call
    /// is a no-op (host calls are idempotent). Per mount point or jail:
    ///
    /// - resuming: the state the last done step left it in; untouched or only
    ///   intended ones are the remaining steps' business;
    /// - rolling back: the state the last finished compensation left it in;
    ///   if none of its steps even started, the state before the transaction
    ///   (on, when its first step turns it off), since compensations of
    ///   other steps may rely on it (undoing a jail's stop needs its mounts);
    ///   one with a step started and not yet compensated is left to that
    ///   step's undo;
    /// - either way, the plan's bystanders (jails it never touched, and
    ///   their mounts) are on.
    ///
    /// Only ever turns things on, in one order: mounts shallowest first (a
    /// jail's root before its `s`), then jails, each group in plan order.
    fn settle(&mut self, st: &TxState, dir: Direction) -> Result<(), EngineError> {
        let steps = &st.begin.plan.steps;
        let turns_on = |a: &Action| matches!(a, Action::Mount { .. } | Action::StartJail { .. });
        // Per resource: the step whose record decides, and whether that leaves it on.
        let mut decided: BTreeMap<String, (usize, bool)> = BTreeMap::new();
        match dir {
            Direction::Forward => {
                for i in (0..steps.len()).filter(|&i| st.done[i]) {
                    if let Some(k) = volatile_key(&steps[i].action) {
                        decided.insert(k, (i, turns_on(&steps[i].action)));
                    }
                }
            }
            Direction::Backward => {
                // Compensations run last step first: the lowest finished one
                // ran last.
                for i in (0..steps.len()).rev().filter(|&i| st.comp_done[i]) {
                    if let Some(k) = volatile_key(&steps[i].action) {
                        decided.insert(k, (i, !turns_on(&steps[i].action)));
                    }
                }
                let mut started = std::collections::BTreeSet::new();
                let mut first = BTreeMap::new();
                for (i, step) in steps.iter().enumerate() {
                    if let Some(k) = volatile_key(&step.action) {
                        if st.intent[i] {
                            started.insert(k.clone());
                        }
                        first.entry(k).or_insert(i);
                    }
                }
                for (k, i) in first {
                    if !started.contains(&k) {
                        decided.entry(k).or_insert((i, !turns_on(&steps[i].action)));
                    }
                }
            }
        }
        let bystanders = st.begin.plan.bystanders.iter().enumerate();
        let mut on: Vec<(usize, String, &Action)> = bystanders
            .map(|(i, a)| (i, format!("bystander-{i}"), a))
            .collect();
        on.extend(
            decided
                .into_values()
                .filter(|&(_, on)| on)
                .map(|(i, _)| (i, steps[i].name.clone(), &steps[i].action)),
        );
        on.sort_by_key(|(i, _, a)| match a {
            Action::Mount { dst, .. } | Action::Unmount { dst, .. } => {
                (0, dst.components().count(), *i)
            }
            _ => (1, 0, *i),
        });
        for (i, name, action) in on {
            let action = &follow_renames(steps, action);
            info!(step = i, %name, action = %action, "settle");
            action::turn_on(action, self.host.as_ref()).map_err(|source| {
                EngineError::Reconcile {
                    tx: st.tx(),
                    step: i,
                    name,
                    action: action.to_string(),
                    source: Box::new(source),
                }
            })?;
        }
        Ok(())
    }

    /// Keeps what the last step or undo moved aside, for the end record.
    fn note_quarantined(&mut self) {
        let moved = crate::fs::quarantine::take_moved();
        self.quarantined
            .extend(moved.iter().map(ToString::to_string));
    }

    fn keep_if_unfinished(&mut self, st: TxState) {
        if st.end.is_none() {
            self.pending = Some(st);
        }
    }

    fn append(&mut self, r: Record) -> Result<(), EngineError> {
        Ok(self.journal.append(&r)?)
    }

    fn abort(
        &mut self,
        st: &mut TxState,
        step: Option<u32>,
        reason: String,
    ) -> Result<(), EngineError> {
        let a = Abort {
            tx: st.tx(),
            step,
            reason,
        };
        self.append(Record::Abort(a.clone()))?;
        st.abort = Some(a);
        Ok(())
    }

    fn forward(&mut self, st: &mut TxState) -> Result<Report, EngineError> {
        self.forward_noted(st, &|_| BTreeMap::new())
    }

    fn forward_noted(&mut self, st: &mut TxState, notes: NotesFn) -> Result<Report, EngineError> {
        let clock = Clock::now();
        self.timings.clear();
        let tx = st.tx();
        let plan = st.begin.plan.clone();
        let names: Vec<String> = plan.steps.iter().map(|s| s.name.clone()).collect();
        let fault = self.fault.clone();
        let fault = fault.as_ref().filter(|f| f.applies_to(&plan.op));
        let commit = plan.commit as usize;
        let n = plan.steps.len();
        let mut i = st.first_not_done();
        while i < n {
            if i == commit && !st.committed {
                self.append(Record::Commit(Commit { tx }))?;
                st.committed = true;
            }
            // A batch: consecutive mount/unmount/start/stop/health steps, never
            // across the commit point. One intent record for all of them is
            // durable before the first acts and one done record follows the
            // last: every such step (and its undo) is correct whether or not it
            // ran, so "intent without done" for the whole run is recoverable,
            // and a window over N jails costs a constant number of syncs.
            let last = batch_end(&plan, i);
            let batch = last > i;
            let range = StepRange {
                tx,
                first: i as u32,
                last: last as u32,
            };
            fault::point(fault, Instant::BeforeIntent, i, &names);
            if batch {
                self.append(Record::StepIntents(range))?;
                st.intent[i..=last].fill(true);
            } else if !st.intent[i] {
                self.append(Record::StepIntent(StepMark { tx, step: i as u32 }))?;
                st.intent[i] = true;
            }
            let segments = if batch && self.parallel > 1 {
                parallel::segments(&plan.steps, i, last)
            } else {
                // One thread: plan order, exactly.
                vec![parallel::Segment {
                    chains: vec![(i..=last).collect()],
                }]
            };
            let ran = self.run_segments(&plan, &segments, i, fault, clock);
            self.executed += ran.len();
            let started: std::collections::BTreeSet<usize> = ran.iter().map(|r| r.index).collect();
            self.note_quarantined();
            let mut failure = None;
            for r in ran {
                match r.result {
                    Ok(()) => self.timings.push(StepTiming {
                        index: r.index,
                        name: plan.steps[r.index].name.clone(),
                        start_us: r.start_us,
                        end_us: r.end_us,
                    }),
                    // The first failing step in plan order is the batch's
                    // failure; the steps in flight beside it have finished.
                    Err(source) if failure.is_none() => failure = Some((r.index, source)),
                    Err(other) => {
                        warn!(step = r.index, error = %other, "a step beside the failing one failed too")
                    }
                }
            }
            if let Some((k, source)) = failure {
                let step = &plan.steps[k];
                // Not a failure to roll back from: the disk itself failed.
                let source = match sync_failed(tx, "running", k, &step.name, source) {
                    Ok(fatal) => return Err(fatal),
                    Err(other) => other,
                };
                let (name, action) = (step.name.clone(), step.action.to_string());
                if st.committed {
                    return Err(EngineError::AfterCommit {
                        tx,
                        step: k,
                        name,
                        action,
                        source: Box::new(source),
                    });
                }
                info!(error = %source, "step failed, rolling back");
                // What of the batch never started needs no undo; what ran
                // beside the failing step (failed or not), before or after
                // it in plan order, does.
                self.not_started = (i..=last).filter(|j| !started.contains(j)).collect();
                self.abort(st, Some(k as u32), source.to_string())?;
                // After a resume that followed a reboot, what no step
                // touched yet is still down.
                self.settle(st, Direction::Backward)?;
                self.backward(st)?;
                return Err(EngineError::RolledBack {
                    tx,
                    step: k,
                    name,
                    action,
                    source: Box::new(source),
                });
            }
            if batch {
                self.append(Record::StepDones(range))?;
            } else {
                self.append(Record::StepDone(StepMark { tx, step: i as u32 }))?;
            }
            st.done[i..=last].fill(true);
            for k in i..=last {
                fault::point(fault, Instant::AfterDone, k, &names);
            }
            i = last + 1;
        }
        if !st.committed {
            self.append(Record::Commit(Commit { tx }))?;
            st.committed = true;
        }
        let notes = notes(&self.timings);
        self.finish(st, Outcome::Committed, clock, notes)
    }

    /// Runs a batch's segments one after another, each one's chains on up
    /// to `parallel` threads, and stops after the first segment in which a
    /// step failed. The steps that started, in index order.
    fn run_segments(
        &self,
        plan: &Plan,
        segments: &[parallel::Segment],
        first: usize,
        fault: Option<&Fault>,
        clock: Clock,
    ) -> Vec<parallel::Ran<ActionError>> {
        let names: Vec<String> = plan.steps.iter().map(|s| s.name.clone()).collect();
        let host = self.host.as_ref();
        let span = tracing::Span::current();
        let run = |k: usize| -> Result<(), ActionError> {
            let step = &plan.steps[k];
            span.in_scope(|| {
                let _span = info_span!("step", i = k, name = %step.name).entered();
                if k > first {
                    fault::point(fault, Instant::BeforeIntent, k, &names);
                }
                fault::point(fault, Instant::AfterIntent, k, &names);
                info!(action = %step.action, "run");
                let failing = fault::FailingSyncs::arm(fault, fault::Side::Apply, k, &names);
                let applied = action::apply(&step.action, host);
                drop(failing);
                if applied.is_ok() {
                    fault::point(fault, Instant::AfterEffect, k, &names);
                }
                applied
            })
        };
        let mut all = Vec::new();
        for seg in segments {
            let ran = parallel::run_segment(seg, self.parallel, clock, &run);
            let failed = ran.iter().any(|r| r.result.is_err());
            all.extend(ran);
            if failed {
                break;
            }
        }
        all
    }

    fn backward(&mut self, st: &mut TxState) -> Result<Report, EngineError> {
        let clock = Clock::now();
        let tx = st.tx();
        let plan = st.begin.plan.clone();
        let names: Vec<String> = plan.steps.iter().map(|s| s.name.clone()).collect();
        let fault = self.fault.clone();
        let fault = fault.as_ref().filter(|f| f.applies_to(&plan.op));
        // The steps of the failing batch that this run never started need
        // no undo, though they have an intent. Only the run that failed
        // knows which they are (chains run side by side, so they are not
        // just the ones after the failing step): a recovered rollback
        // undoes every step with an intent, each undo being correct
        // whether or not its step ran.
        let not_started = std::mem::take(&mut self.not_started);
        for i in (0..plan.steps.len()).rev() {
            let never_ran = not_started.contains(&i);
            if !st.intent[i] || st.comp_done[i] || never_ran {
                continue;
            }
            let step = &plan.steps[i];
            let _span = info_span!("undo", i, name = %step.name).entered();
            let mark = StepMark { tx, step: i as u32 };
            fault::point(fault, Instant::CompBeforeIntent, i, &names);
            if !st.comp_intent[i] {
                self.append(Record::CompIntent(mark))?;
                st.comp_intent[i] = true;
            }
            fault::point(fault, Instant::CompAfterIntent, i, &names);
            info!(action = %step.action, "undo");
            self.executed += 1;
            // The step whose apply failed may never have acted: a rename
            // refuses before rename(2) when its source is gone or its target
            // is in the way, and then there is nothing of ours to move back.
            let failed_here = st.abort.as_ref().and_then(|a| a.step) == Some(i as u32)
                && !st.done[i]
                && matches!(step.action, Action::Rename { .. });
            let failing = fault::FailingSyncs::arm(fault, fault::Side::Undo, i, &names);
            let undone = action::undo(&step.action, self.host.as_ref());
            drop(failing);
            self.note_quarantined();
            match undone {
                Err(ActionError::Conflict { .. } | ActionError::Vanished { .. }) if failed_here => {
                }
                Err(source) => {
                    return Err(match sync_failed(tx, "undoing", i, &step.name, source) {
                        Ok(fatal) => fatal,
                        Err(source) => EngineError::CompensationFailed {
                            tx,
                            step: i,
                            name: step.name.clone(),
                            action: step.action.to_string(),
                            source: Box::new(source),
                        },
                    });
                }
                Ok(()) => {}
            }
            fault::point(fault, Instant::CompAfterEffect, i, &names);
            self.append(Record::CompDone(mark))?;
            st.comp_done[i] = true;
            fault::point(fault, Instant::CompAfterDone, i, &names);
        }
        self.finish(st, Outcome::RolledBack, clock, BTreeMap::new())
    }

    /// End record, then the history summary, then the journal reset: a crash
    /// between any two is completed by the next `open` (see its doc).
    fn finish(
        &mut self,
        st: &mut TxState,
        outcome: Outcome,
        clock: Clock,
        mut notes: BTreeMap<String, String>,
    ) -> Result<Report, EngineError> {
        // Entries a jail's root put in the way of a step inside its tree,
        // moved aside: said in the report, `--json` and history.
        let quarantined = std::mem::take(&mut self.quarantined);
        if !quarantined.is_empty() {
            notes.insert("quarantined".into(), quarantined.join("; "));
        }
        let end = End {
            tx: st.tx(),
            ended_ms: now_ms(),
            outcome,
            reason: st.abort.as_ref().map(|a| a.reason.clone()),
            notes: notes.clone(),
        };
        self.append(Record::End(end.clone()))?;
        st.end = Some(end);
        self.history.append(&Record::Summary(summary_of(st)))?;
        self.journal.reset()?;
        let plan = &st.begin.plan;
        Ok(Report {
            tx: st.tx(),
            op: plan.op.clone(),
            summary: plan.summary.clone(),
            outcome,
            steps: plan.steps.len(),
            executed: std::mem::take(&mut self.executed),
            reason: st.abort.as_ref().map(|a| a.reason.clone()),
            elapsed_ms: clock.elapsed().as_millis() as u64,
            timings: std::mem::take(&mut self.timings),
            notes,
        })
    }
}

/// [`Engine::check_fault`], apart from the engine so that the pending
/// transaction's plan can be checked where it lies.
fn check_fault(fault: Option<&Fault>, found: &mut bool, plan: &Plan) -> Result<(), EngineError> {
    let Some(f) = fault.filter(|f| f.applies_to(&plan.op)) else {
        return Ok(());
    };
    let names: Vec<String> = plan.steps.iter().map(|s| s.name.clone()).collect();
    if f.names_a_step(&names) {
        *found = true;
        return Ok(());
    }
    if *found {
        return Ok(());
    }
    let mut shown: Vec<&str> = Vec::new();
    for n in &names {
        if !shown.contains(&n.as_str()) {
            shown.push(n);
        }
    }
    let more = shown.len().saturating_sub(12);
    shown.truncate(12);
    let mut steps = shown.join(", ");
    if more > 0 {
        steps.push_str(&format!(" and {more} more"));
    }
    Err(EngineError::FaultNamesNoStep {
        fault: f.to_string(),
        op: plan.op.clone(),
        steps,
    })
}

/// The last step of the batch that starts at step `i` (`i` itself when it
/// is no batch): consecutive batchable steps, never across the commit point.
/// A function of the plan and `i` alone, so a resume, and the re-assertion of
/// a lost intent, find the batch the interrupted run journaled.
fn batch_end(plan: &Plan, i: usize) -> usize {
    let commit = plan.commit as usize;
    let limit = if i < commit { commit } else { plan.steps.len() };
    let mut last = i;
    if plan.steps[i].action.batchable() {
        while last + 1 < limit && plan.steps[last + 1].action.batchable() {
            last += 1;
        }
    }
    last
}

/// Writes again the intent a trimmed tail may have taken away, before
/// anything else is done: the lost last frame may have been the StepIntent
/// (or StepIntents) of the next step, whose effect then ran with nothing
/// durable saying so. An intent only ever claims that a step *may* have
/// acted, which is now true, so the journal becomes one the protocol writes
/// itself (a crash after that intent), and both directions handle it as
/// they do that crash: a resume re-runs the step (idempotent), a rollback
/// undoes it (every undo is correct whether or not its step ran). Written
/// here, on open, and not only by `recover`: the trim is durable from now
/// on, so any command that opens the journal and stops (exit 4) would
/// otherwise leave a later rollback with nothing to say the step may have
/// run. journal-format section 10, "The last frame trimmed".
fn reassert_lost_intent<S: Storage>(
    journal: &mut Log<S>,
    st: &mut TxState,
) -> Result<(), EngineError> {
    let Some(i) = st.intent_maybe_lost() else {
        return Ok(());
    };
    let plan = &st.begin.plan;
    let last = batch_end(plan, i);
    warn!(
        tx = st.tx(),
        first = i,
        last,
        step = %plan.steps[i].name,
        "the journal's last record was lost; the steps after it may have run: recording their intent again"
    );
    let tx = st.tx();
    let record = if last > i {
        Record::StepIntents(StepRange {
            tx,
            first: i as u32,
            last: last as u32,
        })
    } else {
        Record::StepIntent(StepMark { tx, step: i as u32 })
    };
    journal.append(&record)?;
    st.intent[i..=last].fill(true);
    Ok(())
}

/// The fatal error for a step (or undo) whose fsync or syncfs failed, or
/// `source` back when the failure was something else.
fn sync_failed(
    tx: TxId,
    doing: &'static str,
    step: usize,
    name: &str,
    source: ActionError,
) -> Result<EngineError, ActionError> {
    match source.sync_failed().map(Path::to_path_buf) {
        Some(path) => {
            info!(step, %name, path = %path.display(), "sync failed: stopping");
            Ok(EngineError::SyncFailed {
                tx,
                doing,
                step,
                name: name.to_owned(),
                path,
                source: Box::new(source),
            })
        }
        None => Err(source),
    }
}

/// The kernel resource (a mount point, a jail) a volatile action turns on or off.
/// `action` with its mount source found where the plan's template renames
/// have it now. A step names a template by the name it has when the step
/// runs in plan order (the window renames `mroot` to its archive name
/// before the jails switch, so a jail's unmount names the archive); after a
/// reboot, `settle` brings mounts back at instants where the renames are
/// not (or no longer) in effect. A source that exists is taken as it is:
/// an archive name is fresh when planned, so it exists only through the
/// rename.
fn follow_renames(steps: &[crate::plan::Step], action: &Action) -> Action {
    let (Action::Mount { src, .. } | Action::Unmount { src, .. }) = action else {
        return action.clone();
    };
    if std::fs::symlink_metadata(src).is_ok() {
        return action.clone();
    }
    let moved = steps.iter().find_map(|s| {
        let Action::Rename { from, to } = &s.action else {
            return None;
        };
        [(to, from), (from, to)].into_iter().find_map(|(was, now)| {
            let rest = src.strip_prefix(was).ok()?;
            let here = now.join(rest);
            std::fs::symlink_metadata(&here).is_ok().then_some(here)
        })
    });
    let Some(found) = moved else {
        return action.clone();
    };
    let mut out = action.clone();
    if let Action::Mount { src, .. } | Action::Unmount { src, .. } = &mut out {
        *src = found;
    }
    out
}

pub fn volatile_key(a: &Action) -> Option<String> {
    match a {
        Action::Mount { dst, .. } | Action::Unmount { dst, .. } => {
            Some(format!("m:{}", dst.display()))
        }
        Action::StartJail { jail } | Action::StopJail { jail } => Some(format!("j:{}", jail.name)),
        _ => None,
    }
}

/// The history line of an ended transaction.
pub fn summary_of(st: &TxState) -> Summary {
    let plan = &st.begin.plan;
    let end = st.end.as_ref();
    let mut notes = plan.notes.clone();
    if let Some(e) = end {
        notes.extend(e.notes.clone());
    }
    Summary {
        tx: st.tx(),
        op: plan.op.clone(),
        summary: plan.summary.clone(),
        started_ms: st.begin.started_ms,
        ended_ms: end.map(|e| e.ended_ms).unwrap_or(st.begin.started_ms),
        outcome: end.map(|e| e.outcome).unwrap_or(Outcome::RolledBack),
        steps: plan.steps.len() as u32,
        reason: end.and_then(|e| e.reason.clone()),
        notes,
    }
}
