//! `etc-merge`: the unattended three-way merge of each jail's (and skel's) `/etc` to the current template.
//!
//! Base and theirs are pristine copies of worlds' own `etc`, which every
//! template keeps at [`PRISTINE_ETC`] (made by `world::shape`); ours is the
//! target's `etc`, read and changed only through `fs::beneath` because a
//! jail's root can write it. Which world a target was last merged to is
//! recorded in the state dir (see [`record`]). See `docs/etc-merge.md`.

mod blob;
pub mod derived;
pub mod diff3;
mod planner;
pub mod record;
mod report;
pub mod tree;

pub use blob::Blob;
pub use planner::{WorldEtc, load_world, plan};
pub use report::{Conflict, MergeReport, Refusal, TargetReport};

/// Where each template keeps its world's own `etc`, relative to the template.
pub const PRISTINE_ETC: &str = "usr/share/jailtx/pristine/etc";

/// Where each template keeps pristine copies of its world's configuration
/// (`etc` and [`PRISTINE_KEPT`]), relative to the template.
pub const PRISTINE: &str = "usr/share/jailtx/pristine";

/// How much of a skel-bound directory is kept pristine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The whole directory: all of it is configuration.
    Tree,
    /// Only its top-level dotfiles (files and symlinks named `.*`): the rest
    /// of the directory is an account's data, not the world's configuration.
    DotFiles,
}

/// The world's configuration kept pristine in every template: (path in the
/// world, path below [`PRISTINE`], what of it). The second path is where the
/// directory lives in the skel and in `js/NAME`, so the pristine copy of a
/// file sits at the same relative path as the jail's. Only `etc` is merged
/// (see `docs/etc-merge.md`); the others are kept so that any two template
/// versions can be compared, and for a later merge.
pub const PRISTINE_KEPT: [(&str, &str, Kept); 3] = [
    ("etc", "etc", Kept::Tree),
    ("usr/local/etc", "usr-local/etc", Kept::Tree),
    ("root", "root", Kept::DotFiles),
];

/// The suffix of a merge proposal with conflict markers, beside the file.
pub const PROPOSAL: &str = ".jailtx-merge";

/// The suffix a replaced or removed file is moved aside under until the commit.
pub const ASIDE: &str = ".jailtx-old";
