//! Test-only fault injection: `JAILTX_FAULT=<instant>:<step>` kills the
//! process with SIGKILL at one instant of one step, so crash tests can stop a
//! real run anywhere the engine can be stopped; `fsync-eio:<step>` and
//! `comp-fsync-eio:<step>` make every fsync and syncfs of that step's effect
//! (or of its undo) fail with EIO instead, as on a disk that lost writes.
//!
//! `<instant>` is one of [`Instant::ALL`]'s names; `<step>` is a step index or
//! a step name (the first step with that name). `<op>/<instant>:<step>` fires
//! only in a transaction of that op (e.g. `etc-merge/after-effect:0`: the
//! merge that follows an upgrade in the same process). Never set it in
//! production.

use std::fmt;
use std::str::FromStr;

pub const ENV: &str = "JAILTX_FAULT";

/// The instants around a step (and around its compensation) where a crash can fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instant {
    BeforeIntent,
    AfterIntent,
    AfterEffect,
    AfterDone,
    CompBeforeIntent,
    CompAfterIntent,
    CompAfterEffect,
    CompAfterDone,
}

impl Instant {
    pub const ALL: [Instant; 8] = [
        Instant::BeforeIntent,
        Instant::AfterIntent,
        Instant::AfterEffect,
        Instant::AfterDone,
        Instant::CompBeforeIntent,
        Instant::CompAfterIntent,
        Instant::CompAfterEffect,
        Instant::CompAfterDone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Instant::BeforeIntent => "before-intent",
            Instant::AfterIntent => "after-intent",
            Instant::AfterEffect => "after-effect",
            Instant::AfterDone => "after-done",
            Instant::CompBeforeIntent => "comp-before-intent",
            Instant::CompAfterIntent => "comp-after-intent",
            Instant::CompAfterEffect => "comp-after-effect",
            Instant::CompAfterDone => "comp-after-done",
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Index(usize),
    Name(String),
}

/// Which side of a step an injected sync failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The step's effect (`fsync-eio`).
    Apply,
    /// Its compensation (`comp-fsync-eio`).
    Undo,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Apply => "fsync-eio",
            Side::Undo => "comp-fsync-eio",
        }
    }
}

/// What the fault does when execution reaches its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL at this instant.
    Kill(Instant),
    /// Every fsync and syncfs of this side of the step fails with EIO.
    FailSyncs(Side),
}

/// Where to kill the process, or whose syncs to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only in transactions of this op; any transaction when None.
    pub op: Option<String>,
    pub kind: Kind,
    pub target: Target,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (op, rest) = match s.split_once('/') {
            Some(("", _)) => return Err(format!("{ENV}={s:?}: empty op")),
            Some((op, rest)) => (Some(op.to_owned()), rest),
            None => (None, s),
        };
        let (instant, step) = rest.split_once(':').ok_or_else(|| {
            format!("{ENV}={s:?}: expected <instant>:<step>, e.g. after-effect:3")
        })?;
        let sides = [Side::Apply, Side::Undo];
        let kind = Instant::ALL
            .into_iter()
            .find(|i| i.name() == instant)
            .map(Kind::Kill)
            .or_else(|| {
                sides
                    .into_iter()
                    .find(|s| s.name() == instant)
                    .map(Kind::FailSyncs)
            })
            .ok_or_else(|| {
                let names: Vec<_> = Instant::ALL
                    .iter()
                    .map(|i| i.name())
                    .chain(sides.iter().map(|s| s.name()))
                    .collect();
                format!(
                    "{ENV}: unknown instant {instant:?}; one of {}",
                    names.join(", ")
                )
            })?;
        let target = match step.parse::<usize>() {
            Ok(i) => Target::Index(i),
            Err(_) if !step.is_empty() => Target::Name(step.to_owned()),
            Err(_) => return Err(format!("{ENV}={s:?}: empty step")),
        };
        Ok(Fault { op, kind, target })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(op) = &self.op {
            write!(f, "{op}/")?;
        }
        match self.kind {
            Kind::Kill(i) => f.write_str(i.name())?,
            Kind::FailSyncs(s) => f.write_str(s.name())?,
        }
        match &self.target {
            Target::Index(i) => write!(f, ":{i}"),
            Target::Name(n) => write!(f, ":{n}"),
        }
    }
}

impl Fault {
    /// Whether the fault's step is one of `steps` (the plan's step names): a
    /// fault naming no step would never fire, and a crash test using it would
    /// pass without crashing.
    pub fn names_a_step(&self, steps: &[String]) -> bool {
        match &self.target {
            Target::Index(i) => *i < steps.len(),
            Target::Name(n) => steps.iter().any(|s| s == n),
        }
    }

    /// The fault from the environment, if one is set.
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(ENV) {
            Ok(v) if !v.is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the fault can fire in a transaction of `op`.
    pub fn applies_to(&self, op: &str) -> bool {
        self.op.as_deref().is_none_or(|o| o == op)
    }

    fn matches(&self, kind: Kind, index: usize, name: &str, first_named: usize) -> bool {
        self.kind == kind
            && match &self.target {
                Target::Index(i) => *i == index,
                Target::Name(n) => n == name && index == first_named,
            }
    }

    /// Whether the fault names `kind` at step `index`; `steps` is the plan's
    /// step names, to resolve a name to its first index.
    fn fires(&self, kind: Kind, index: usize, steps: &[String]) -> bool {
        let name = steps.get(index).map(String::as_str).unwrap_or("");
        let first = steps.iter().position(|s| s == name).unwrap_or(index);
        self.matches(kind, index, name, first)
    }
}

/// Kills the process right here if the fault names this instant of this step.
/// `steps` is the plan's step names, to resolve a name to its first index.
pub fn point(fault: Option<&Fault>, instant: Instant, index: usize, steps: &[String]) {
    let Some(f) = fault else { return };
    if f.fires(Kind::Kill(instant), index, steps) {
        tracing::warn!(%instant, index, "{ENV}: killing the process");
        // SIGKILL cannot be caught: nothing after this line runs, as in a crash.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// While alive, every fsync and syncfs fails with EIO (see
/// [`crate::fs::inject_sync_failure`]); disarmed when dropped, so the
/// failure never outlives the one step it was meant for.
#[must_use]
pub struct FailingSyncs(bool);

impl FailingSyncs {
    /// Arms the injected failure if the fault names this side of this step.
    pub fn arm(fault: Option<&Fault>, side: Side, index: usize, steps: &[String]) -> Self {
        let armed = fault.is_some_and(|f| f.fires(Kind::FailSyncs(side), index, steps));
        if armed {
            tracing::info!(side = side.name(), index, "{ENV}: failing every sync");
            crate::fs::inject_sync_failure(true);
        }
        FailingSyncs(armed)
    }
}

impl Drop for FailingSyncs {
    fn drop(&mut self) {
        if self.0 {
            crate::fs::inject_sync_failure(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_name() {
        assert_eq!(
            "after-effect:3".parse::<Fault>(),
            Ok(Fault {
                op: None,
                kind: Kind::Kill(Instant::AfterEffect),
                target: Target::Index(3)
            })
        );
        assert_eq!(
            "comp-before-intent:rename-mroot".parse::<Fault>(),
            Ok(Fault {
                op: None,
                kind: Kind::Kill(Instant::CompBeforeIntent),
                target: Target::Name("rename-mroot".into())
            })
        );
        let f: Fault = "etc-merge/after-effect:0".parse().unwrap();
        assert_eq!(f.op.as_deref(), Some("etc-merge"));
        assert_eq!(f.target, Target::Index(0));
        assert!(f.applies_to("etc-merge") && !f.applies_to("upgrade"));
        assert!("/after-effect:0".parse::<Fault>().is_err());
        assert!("later:3".parse::<Fault>().is_err());
        assert!("after-done".parse::<Fault>().is_err());
        assert!("after-done:".parse::<Fault>().is_err());
        let f: Fault = "comp-fsync-eio:write".parse().unwrap();
        assert_eq!(f.kind, Kind::FailSyncs(Side::Undo));
        assert_eq!(
            "fsync-eio:2".parse::<Fault>().map(|f| f.kind),
            Ok(Kind::FailSyncs(Side::Apply))
        );
        let err = "later:3".parse::<Fault>().unwrap_err();
        assert!(err.contains("comp-fsync-eio"), "{err}");
    }

    #[test]
    fn displays_as_parsed_and_names_only_real_steps() {
        for s in [
            "after-effect:3",
            "etc-merge/comp-fsync-eio:write",
            "before-intent:mount-s-mail",
        ] {
            assert_eq!(s.parse::<Fault>().unwrap().to_string(), s);
        }
        let steps = vec!["stop-mail".to_owned(), "mount-s-mail".to_owned()];
        assert!(
            "after-effect:mount-s-mail"
                .parse::<Fault>()
                .unwrap()
                .names_a_step(&steps)
        );
        assert!(
            "after-effect:1"
                .parse::<Fault>()
                .unwrap()
                .names_a_step(&steps)
        );
        assert!(
            !"after-effect:mount-s"
                .parse::<Fault>()
                .unwrap()
                .names_a_step(&steps)
        );
        assert!(
            !"after-effect:2"
                .parse::<Fault>()
                .unwrap()
                .names_a_step(&steps)
        );
    }

    #[test]
    fn a_name_matches_only_its_first_step() {
        let f: Fault = "after-done:mk".parse().unwrap();
        let done = Kind::Kill(Instant::AfterDone);
        assert!(f.matches(done, 1, "mk", 1));
        assert!(!f.matches(done, 2, "mk", 1));
        assert!(!f.matches(Kind::Kill(Instant::AfterIntent), 1, "mk", 1));
        assert!(!f.matches(Kind::FailSyncs(Side::Apply), 1, "mk", 1));
    }
}
