//! `etc-merge`: the unattended three-way merge of each jail's (and skel's) `/etc` to the current template.
//!
//! Base and theirs are pristine copies of worlds' own `etc`, which every
//! template keeps at [`PRISTINE_ETC`] (made by `world::shape`); ours is the
//! target's `etc`, read and changed only through `fs::beneath` because a
//! jail's root can write it. Which world a target was last merged to is
//! recorded in the state dir (see [`record`]). See `docs/etc-merge.md`.

pub mod derived;
pub mod diff3;
pub mod keyed;
mod planner;
pub mod record;
mod report;
pub mod strategy;
pub mod tree;

pub use crate::plan::Blob;
/// The template layout's pristine copies, which `world::shape` makes.
pub use crate::world::{Kept, PRISTINE, PRISTINE_ETC, PRISTINE_KEPT};
pub use planner::{Between, WorldEtc, load_world, plan, plan_between};
pub use report::{Conflict, MergeReport, Refusal, TargetReport};

/// The suffix of a merge proposal with conflict markers, beside the file.
pub const PROPOSAL: &str = ".jailtx-merge";

/// The suffix a replaced or removed file is moved aside under until the commit.
pub use crate::ops::due::ASIDE;
