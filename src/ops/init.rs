//! `init`: the layout of SPEC section 1 and the state dir's folders.

use crate::config::Layout;
use crate::plan::{Action, Plan};

/// Directories `init` makes, with their modes: BASE's `j` and `js` are
/// world-readable (jail roots live there); the state dir's are root's only.
pub fn wanted_dirs(layout: &Layout) -> Vec<(std::path::PathBuf, u32)> {
    vec![
        (layout.base.clone(), 0o755),
        (layout.j.clone(), 0o755),
        (layout.js.clone(), 0o755),
        (layout.manifests.clone(), 0o700),
        (layout.jails.clone(), 0o700),
    ]
}

/// The plan making whatever of the layout is missing; empty when all is there.
pub fn plan(layout: &Layout) -> Plan {
    let mut plan = Plan::new(
        "init",
        format!("create the layout under {}", layout.base.display()),
    );
    for (path, mode) in wanted_dirs(layout) {
        if std::fs::symlink_metadata(&path).is_err() {
            let name = format!(
                "mkdir-{}",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "base".into())
            );
            plan.push(name, Action::MakeDir { path, mode });
        }
    }
    plan
}
