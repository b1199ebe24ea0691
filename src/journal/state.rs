//! Folding journal records into the state of each transaction, with the
//! sequencing checks that catch a journal no jailtx could have written.

use std::path::Path;

use super::JournalError;
use super::record::{Abort, Begin, End, Record, Summary};

/// What the journal says about one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TxState {
    pub begin: Begin,
    pub intent: Vec<bool>,
    pub done: Vec<bool>,
    pub comp_intent: Vec<bool>,
    pub comp_done: Vec<bool>,
    pub abort: Option<Abort>,
    pub committed: bool,
    pub end: Option<End>,
    /// The journal's last frame was trimmed when it was read: torn, or
    /// failing its checksum, which a flipped bit in the last *durable* frame
    /// does too. The record after the last one read may then be lost, and
    /// with it the news that a step acted (see [`TxState::intent_maybe_lost`]).
    pub tail_trimmed: bool,
}

/// Where a transaction stands; every command asks before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Started, not past its commit point, no rollback decided: may go either way.
    InFlight,
    /// Past its commit point: can only be finished forwards.
    Committed,
    /// A rollback was decided: can only be finished backwards.
    RollingBack,
    /// Has its end record.
    Ended,
}

impl TxStatus {
    pub fn can_resume(self) -> bool {
        matches!(self, TxStatus::InFlight | TxStatus::Committed)
    }
    pub fn can_roll_back(self) -> bool {
        matches!(self, TxStatus::InFlight | TxStatus::RollingBack)
    }
}

impl TxState {
    pub fn new(begin: Begin) -> Self {
        let n = begin.plan.steps.len();
        TxState {
            begin,
            intent: vec![false; n],
            done: vec![false; n],
            comp_intent: vec![false; n],
            comp_done: vec![false; n],
            abort: None,
            committed: false,
            end: None,
            tail_trimmed: false,
        }
    }

    pub fn tx(&self) -> u64 {
        self.begin.tx
    }

    pub fn status(&self) -> TxStatus {
        if self.end.is_some() {
            TxStatus::Ended
        } else if self.committed {
            TxStatus::Committed
        } else if self.abort.is_some() {
            TxStatus::RollingBack
        } else {
            TxStatus::InFlight
        }
    }

    /// The first step without a done record (where a resume starts).
    pub fn first_not_done(&self) -> usize {
        self.done.iter().position(|d| !d).unwrap_or(self.done.len())
    }

    /// The step whose StepIntent (or the StepIntents of whose batch) may be
    /// the record a trimmed tail took away, so that the step may have acted
    /// with nothing durable saying so: the first step without a done, when
    /// it has no intent either and stands before the commit point, and no
    /// rollback is decided. In every other state the lost record can only
    /// be one that changes nothing on disk (a StepDone, an Abort, a Commit,
    /// a compensation record, an End: journal-format section 10), or the
    /// step it covers is re-run or undone anyway. `None` when the tail was
    /// not trimmed.
    pub fn intent_maybe_lost(&self) -> Option<usize> {
        if !self.tail_trimmed || self.status() != TxStatus::InFlight {
            return None;
        }
        let next = self.first_not_done();
        // At the commit point the next record is the Commit, and no step
        // from there on acts before it: nothing can have run unrecorded.
        let before_commit = next < self.begin.plan.commit as usize;
        (before_commit && !self.intent[next]).then_some(next)
    }
}

/// Folds a journal's records into its transactions, oldest first. Records
/// out of order (a done without its intent, a step past the plan, a record
/// for a transaction that never began or already ended) are refused: a torn
/// write cannot produce them, only a foreign writer or a bug.
pub fn fold(path: &Path, records: &[(u64, Record)]) -> Result<Vec<TxState>, JournalError> {
    let mut txs: Vec<TxState> = Vec::new();
    for (offset, record) in records {
        let bad = |what: &str| JournalError::Sequence {
            path: path.to_owned(),
            what: format!("record at offset {offset}: {what}"),
        };
        // A summary belongs in `history` whatever else is wrong with it, so
        // it is named as such before its transaction number is looked at.
        if let Record::Summary(_) = record {
            return Err(bad("a history summary inside the journal"));
        }
        if let Record::Begin(b) = record {
            if let Some(last) = txs.last() {
                if last.end.is_none() {
                    return Err(bad("a transaction begins before the previous one ended"));
                }
                if b.tx <= last.tx() {
                    return Err(bad("transaction numbers go backwards"));
                }
            }
            txs.push(TxState::new(b.clone()));
            continue;
        }
        let Some(tx) = txs.last_mut() else {
            return Err(bad("a record before any transaction began"));
        };
        if record.tx() != tx.tx() {
            return Err(bad("a record names a transaction other than the open one"));
        }
        if tx.end.is_some() {
            return Err(bad("a record after the transaction ended"));
        }
        let n = tx.intent.len();
        let step = |s: u32| -> Result<usize, JournalError> {
            let i = s as usize;
            if i < n {
                Ok(i)
            } else {
                Err(bad("a step number beyond the plan"))
            }
        };
        match record {
            Record::Begin(_) | Record::Summary(_) => unreachable!("handled above"),
            Record::StepIntent(m) => {
                let i = step(m.step)?;
                if tx.abort.is_some() {
                    return Err(bad("a step intent after the rollback began"));
                }
                tx.intent[i] = true;
            }
            Record::StepDone(m) => {
                let i = step(m.step)?;
                if !tx.intent[i] {
                    return Err(bad("a step done without its intent"));
                }
                tx.done[i] = true;
            }
            Record::StepIntents(r) | Record::StepDones(r) => {
                let (first, last) = (step(r.first)?, step(r.last)?);
                if first > last {
                    return Err(bad("a step range that runs backwards"));
                }
                if let Record::StepIntents(_) = record {
                    if tx.abort.is_some() {
                        return Err(bad("a step intent after the rollback began"));
                    }
                    tx.intent[first..=last].fill(true);
                } else {
                    if !tx.intent[first..=last].iter().all(|i| *i) {
                        return Err(bad("a step done without its intent"));
                    }
                    tx.done[first..=last].fill(true);
                }
            }
            Record::Abort(a) => {
                if tx.committed {
                    return Err(bad("a rollback after the commit"));
                }
                tx.abort = Some(a.clone());
            }
            Record::CompIntent(m) => {
                let i = step(m.step)?;
                if tx.abort.is_none() {
                    return Err(bad("a compensation before the rollback began"));
                }
                tx.comp_intent[i] = true;
            }
            Record::CompDone(m) => {
                let i = step(m.step)?;
                if !tx.comp_intent[i] {
                    return Err(bad("a compensation done without its intent"));
                }
                tx.comp_done[i] = true;
            }
            Record::Commit(_) => {
                if tx.abort.is_some() {
                    return Err(bad("a commit after the rollback began"));
                }
                tx.committed = true;
            }
            Record::End(e) => tx.end = Some(e.clone()),
        }
    }
    Ok(txs)
}

/// The summaries of a history file, oldest first, borrowed from its
/// records. A history holds nothing else: a journal record in it (a foreign
/// writer, or a journal copied over it) is refused like a summary in the
/// journal, not skipped, so the last filed transaction is never read from a
/// record that is not a summary.
pub fn summaries<'a>(
    path: &Path,
    records: &'a [(u64, Record)],
) -> Result<Vec<&'a Summary>, JournalError> {
    records
        .iter()
        .map(|(offset, record)| match record {
            Record::Summary(s) => Ok(s),
            _ => Err(JournalError::Sequence {
                path: path.to_owned(),
                what: format!("record at offset {offset}: a journal record inside the history"),
            }),
        })
        .collect()
}
