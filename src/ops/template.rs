//! `template build`: the Handbook's first template — a world into `mroot`,
//! its read-write directories into `skel`.

use crate::config::Layout;
use crate::manifest;
use crate::plan::Source;
use crate::plan::{Action, Plan};

use super::OpsError;

use super::validate;

fn exists(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Plans the first build: populate `mroot2`, shape it (moving the read-write
/// directories to a new `skel`), and publish it as `mroot`.
/// The manifest of `mroot2` (carry-over paths left out) is written after
/// the shape and renamed along with the tree.
pub fn plan_build(
    layout: &Layout,
    source: Source,
    carry_over: &[std::path::PathBuf],
) -> Result<Plan, OpsError> {
    plan_build_from(layout, source, carry_over, None)
}

/// Plans the first build from the bundle `file`: checked (signature,
/// header, every entry) and, with `stage` (not in a dry run), unpacked to
/// `mroot2` with its tree's id checked, all before the transaction, so a
/// refusal is exit 2 with nothing changed. The shape step then makes the
/// skel from the template's pristine copies (`etc`, `usr/local/etc`,
/// root's dotfiles); the other skel directories start empty.
pub fn plan_build_bundle(
    layout: &Layout,
    cfg: &crate::config::Config,
    file: &std::path::Path,
    stage: bool,
) -> Result<Plan, OpsError> {
    let (checked, _) = super::bundle::check(cfg, file)?;
    let plan = plan_build_from(
        layout,
        checked.source.clone(),
        &cfg.carry_over,
        Some(&checked.origin),
    )?;
    if stage {
        super::bundle::stage(layout, cfg, &checked)?;
    }
    Ok(plan)
}

fn plan_build_from(
    layout: &Layout,
    source: Source,
    carry_over: &[std::path::PathBuf],
    origin: Option<&super::bundle::Origin>,
) -> Result<Plan, OpsError> {
    validate::source(&source)?;
    if !layout.j.is_dir() {
        return Err(format!(
            "{} does not exist; run `jailtx init` first",
            layout.j.display()
        )
        .into());
    }
    if exists(&layout.mroot) {
        return Err(format!(
            "a template already exists at {}; `jailtx upgrade` replaces it",
            layout.mroot.display()
        )
        .into());
    }
    if exists(&layout.skel) {
        return Err(format!(
            "{} already exists without a template; move it aside to build a first template",
            layout.skel.display()
        )
        .into());
    }
    let staged_manifest = manifest::path_for(&layout.manifests, "mroot2");
    let manifest = manifest::path_for(&layout.manifests, "mroot");
    for stale in [
        &layout.mroot2,
        &crate::world::partial_path(&layout.mroot2),
        &staged_manifest,
        &manifest,
        &super::bundle::origin_file(layout, "mroot2"),
        &super::bundle::origin_file(layout, "mroot"),
    ] {
        if exists(stale) {
            return Err(format!(
                "{} is left from an earlier build; remove it, then build again",
                stale.display()
            )
            .into());
        }
    }
    if let Source::Dir(d) = &source
        && let Ok(real) = d.canonicalize()
        && (real.starts_with(&layout.j) || layout.j.starts_with(&real))
    {
        return Err(format!(
            "--from-dir {}: the world cannot overlap {}",
            d.display(),
            layout.j.display()
        )
        .into());
    }
    // Last, as the dearest check (an archive is read whole): a world the
    // layout cannot take is exit 2 with nothing changed, never a
    // transaction (SPEC section 5).
    crate::world::check_source(&source, carry_over)?;
    let mut plan = Plan::new("template-build", format!("first template from {source}"));
    plan.notes.insert("source".into(), source.to_string());
    plan.push(
        "populate",
        Action::Populate {
            source,
            to: layout.mroot2.clone(),
        },
    );
    plan.push(
        "shape",
        Action::Shape {
            template: layout.mroot2.clone(),
            skel: Some(layout.skel.clone()),
            carry_over: Vec::new(),
        },
    );
    plan.push(
        "manifest",
        Action::WriteManifest {
            template: layout.mroot2.clone(),
            to: staged_manifest.clone(),
            exclude: carry_over.to_vec(),
        },
    );
    if let Some(origin) = origin {
        super::bundle::push_origin(layout, &mut plan, origin)?;
    }
    plan.push(
        "publish",
        Action::Rename {
            from: layout.mroot2.clone(),
            to: layout.mroot.clone(),
        },
    );
    plan.push(
        "publish-manifest",
        Action::Rename {
            from: staged_manifest,
            to: manifest,
        },
    );
    if origin.is_some() {
        plan.push(
            "publish-origin",
            Action::Rename {
                from: super::bundle::origin_file(layout, "mroot2"),
                to: super::bundle::origin_file(layout, "mroot"),
            },
        );
    }
    Ok(plan)
}
