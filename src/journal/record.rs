//! The journal's record kinds: what each one means and its stable type tag.
//!
//! Tags are never reused and never renumbered (a reader meeting an unknown tag
//! refuses the file rather than guessing). Payloads are postcard; new fields go
//! into new record kinds, new `Action` variants go at the end of the enum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// A transaction's number: 1, 2, 3… in the order they began on this host.
pub type TxId = u64;

/// The start of a transaction, carrying the whole plan so recovery needs
/// nothing but the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Begin {
    pub tx: TxId,
    /// Milliseconds since the Unix epoch.
    pub started_ms: i64,
    pub plan: Plan,
}

/// Names one step of one transaction (intent, done, compensation intent/done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMark {
    pub tx: TxId,
    pub step: u32,
}

/// A contiguous run of steps `first..=last` in one record: the executor
/// batches consecutive mount/unmount/start/stop/health steps so that a
/// downtime window costs a constant number of syncs, not two per jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRange {
    pub tx: TxId,
    pub first: u32,
    pub last: u32,
}

/// The decision to roll back: from here on the transaction only goes backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    pub tx: TxId,
    /// The step that failed, if a step failure caused the rollback.
    pub step: Option<u32>,
    pub reason: String,
}

/// The transaction passed its commit point: from here on it only goes forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub tx: TxId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step ran; the system is in the new state.
    Committed,
    /// Every started step was compensated; the system is as before.
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled-back",
        }
    }
}

/// The transaction is finished, one way or the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub tx: TxId,
    pub ended_ms: i64,
    pub outcome: Outcome,
    /// Why it rolled back, when it did.
    pub reason: Option<String>,
    /// Facts the operation reports afterwards (e.g. the downtime window).
    pub notes: BTreeMap<String, String>,
}

/// One finished transaction as `history` shows it; lives in the history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub tx: TxId,
    pub op: String,
    pub summary: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub outcome: Outcome,
    pub steps: u32,
    pub reason: Option<String>,
    /// The plan's notes followed by the end record's.
    pub notes: BTreeMap<String, String>,
}

/// Every record kind, journal and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Record {
    Begin(Begin),
    StepIntent(StepMark),
    StepDone(StepMark),
    Abort(Abort),
    CompIntent(StepMark),
    CompDone(StepMark),
    Commit(Commit),
    End(End),
    Summary(Summary),
    /// Intents of a batch of steps, durable before the first of them acts.
    StepIntents(StepRange),
    /// Completion of a batch of steps, appended after the last of them acted.
    StepDones(StepRange),
}

/// Record type tags (byte 4 of a frame).
pub mod tag {
    pub const BEGIN: u8 = 1;
    pub const STEP_INTENT: u8 = 2;
    pub const STEP_DONE: u8 = 3;
    pub const ABORT: u8 = 4;
    pub const COMP_INTENT: u8 = 5;
    pub const COMP_DONE: u8 = 6;
    pub const COMMIT: u8 = 7;
    pub const END: u8 = 8;
    pub const SUMMARY: u8 = 9;
    pub const STEP_INTENTS: u8 = 10;
    pub const STEP_DONES: u8 = 11;
}

impl Record {
    pub fn tag(&self) -> u8 {
        match self {
            Record::Begin(_) => tag::BEGIN,
            Record::StepIntent(_) => tag::STEP_INTENT,
            Record::StepDone(_) => tag::STEP_DONE,
            Record::Abort(_) => tag::ABORT,
            Record::CompIntent(_) => tag::COMP_INTENT,
            Record::CompDone(_) => tag::COMP_DONE,
            Record::Commit(_) => tag::COMMIT,
            Record::End(_) => tag::END,
            Record::Summary(_) => tag::SUMMARY,
            Record::StepIntents(_) => tag::STEP_INTENTS,
            Record::StepDones(_) => tag::STEP_DONES,
        }
    }

    /// The transaction this record belongs to.
    pub fn tx(&self) -> TxId {
        match self {
            Record::Begin(r) => r.tx,
            Record::StepIntent(m)
            | Record::StepDone(m)
            | Record::CompIntent(m)
            | Record::CompDone(m) => m.tx,
            Record::Abort(r) => r.tx,
            Record::Commit(r) => r.tx,
            Record::End(r) => r.tx,
            Record::Summary(r) => r.tx,
            Record::StepIntents(r) | Record::StepDones(r) => r.tx,
        }
    }

    /// The postcard payload (the record's struct, without the enum variant:
    /// the frame's tag says which struct it is).
    pub fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            Record::Begin(r) => postcard::to_stdvec(r),
            Record::StepIntent(m)
            | Record::StepDone(m)
            | Record::CompIntent(m)
            | Record::CompDone(m) => postcard::to_stdvec(m),
            Record::Abort(r) => postcard::to_stdvec(r),
            Record::Commit(r) => postcard::to_stdvec(r),
            Record::End(r) => postcard::to_stdvec(r),
            Record::Summary(r) => postcard::to_stdvec(r),
            Record::StepIntents(r) | Record::StepDones(r) => postcard::to_stdvec(r),
        }
    }

    /// Decodes a payload of type `tag`. `None` for an unknown tag. Trailing
    /// bytes after the struct are an error: a frame holds exactly one record.
    pub fn decode_payload(tag: u8, payload: &[u8]) -> Option<Result<Record, postcard::Error>> {
        fn exact<'a, T: Deserialize<'a>>(p: &'a [u8]) -> Result<T, postcard::Error> {
            let (v, rest) = postcard::take_from_bytes(p)?;
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(postcard::Error::DeserializeBadEncoding)
            }
        }
        Some(match tag {
            tag::BEGIN => exact(payload).map(Record::Begin),
            tag::STEP_INTENT => exact(payload).map(Record::StepIntent),
            tag::STEP_DONE => exact(payload).map(Record::StepDone),
            tag::ABORT => exact(payload).map(Record::Abort),
            tag::COMP_INTENT => exact(payload).map(Record::CompIntent),
            tag::COMP_DONE => exact(payload).map(Record::CompDone),
            tag::COMMIT => exact(payload).map(Record::Commit),
            tag::END => exact(payload).map(Record::End),
            tag::SUMMARY => exact(payload).map(Record::Summary),
            tag::STEP_INTENTS => exact(payload).map(Record::StepIntents),
            tag::STEP_DONES => exact(payload).map(Record::StepDones),
            _ => return None,
        })
    }
}
