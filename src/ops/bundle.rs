//! Bundles on the planning side: `template pack`, `--from-bundle` staged and checked before its transaction, each template's origin (`manifests/NAME.origin`), `template show`, and the `[trust] require_signature` rule.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Layout};
use crate::manifest;
use crate::plan::{Action, Plan, Source};
use crate::trust::{self, TrustedKey};
use crate::world::bundle::{self, Header, Inspected};

use super::OpsError;

/// Where a template came from, kept beside its manifest as
/// `manifests/NAME.origin` (JSON) and renamed with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source: String,
    pub template_id: String,
    /// The bundle's header, for a template installed from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_comment: Option<String>,
}

/// The origin file of the template directory named `name`.
pub fn origin_file(layout: &Layout, name: &str) -> PathBuf {
    layout.manifests.join(format!("{name}.origin"))
}

/// The origin of template `name`, when it has one (a template built from
/// a directory, an archive or a command before bundles existed has none).
pub fn origin(layout: &Layout, name: &str) -> Option<Origin> {
    let bytes = crate::fs::statefile::read(
        &origin_file(layout, name),
        crate::fs::statefile::Kind::Record,
    )
    .ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Under `[trust] require_signature`, only a bundle is signed input:
/// `--from-dir`, `--from-tar` and `--from-cmd` are refused (exit 2).
pub fn require_signed(
    cfg: &Config,
    source: &Source,
    dist_manifest: Option<&Path>,
) -> Result<(), OpsError> {
    if !cfg.trust.require_signature {
        return Ok(());
    }
    let what = match (source, dist_manifest) {
        (Source::Bundle(_), _) => return Ok(()),
        // A release archive vouched for by its MANIFEST, itself signed by a
        // trusted key (`MANIFEST.minisig`); the archive's SHA-256 against
        // that MANIFEST is checked next (`--dist-manifest`).
        (Source::Tar(_), Some(m)) => {
            return trust::verify_detached(m, &cfg.trust).map(drop).map_err(|e| {
                OpsError::from(format!(
                    "--dist-manifest {}: {e}; with [trust] require_signature the MANIFEST must be signed by a trusted key (minisign -Sm MANIFEST)",
                    m.display()
                ))
            });
        }
        (Source::Dir(_), _) => "--from-dir",
        (Source::Tar(_), None) => "--from-tar without --dist-manifest",
        (Source::Cmd(_), _) => "--from-cmd",
    };
    Err(format!(
        "{what} is unsigned input and [trust] require_signature is on; install a signed bundle with --from-bundle FILE (FILE.minisig beside it), or a release archive with --from-tar FILE --dist-manifest MANIFEST (MANIFEST.minisig beside it)"
    )
    .into())
}

fn trusted_keys(cfg: &Config) -> Result<Vec<TrustedKey>, OpsError> {
    trust::keys(&cfg.trust).map_err(|e| OpsError::from(e.to_string()))
}

fn refused(file: &Path, e: crate::world::WorldError) -> OpsError {
    use crate::world::WorldError;
    match e {
        // Each names the file already.
        WorldError::Bundle { .. } | WorldError::Trust(_) | WorldError::Extract { .. } => {
            format!("--from-bundle: {e}").into()
        }
        e => format!("--from-bundle {}: {e}", file.display()).into(),
    }
}

/// A bundle checked for a plan: its source (as the plan carries it) and
/// the origin the new template gets.
pub struct Checked {
    pub source: Source,
    pub origin: Origin,
}

/// Verifies and checks the bundle `file` (first pass: signature, header,
/// manifest, every entry), refusing a carry-over path of this host's it
/// holds. Lands nothing.
pub fn check(cfg: &Config, file: &Path) -> Result<(Checked, Inspected), OpsError> {
    let keys = trusted_keys(cfg)?;
    let found = bundle::inspect(file, &keys, cfg.trust.require_signature, &cfg.carry_over)
        .map_err(|e| refused(file, e))?;
    for rel in &cfg.carry_over {
        use std::os::unix::ffi::OsStrExt;
        if found.manifest.find(rel.as_os_str().as_bytes()).is_some() {
            return Err(format!(
                "--from-bundle {}: it holds {}, a carry-over path here (it moves from template to template); pack it where {} is a carry-over path too",
                file.display(),
                rel.display(),
                rel.display()
            )
            .into());
        }
    }
    let h = &found.header;
    let source = Source::Bundle(crate::plan::BundleSource {
        file: file.to_owned(),
        id: h.template_id.clone(),
        keys: keys.iter().map(|k| k.base64.clone()).collect(),
        require_signature: cfg.trust.require_signature,
        staged_manifest: None,
    });
    let origin = Origin {
        source: format!("bundle {} ({})", file.display(), h.source),
        template_id: h.template_id.clone(),
        bundle: Some(h.clone()),
        signer_key_id: found.signer.as_ref().map(|s| s.key_id.clone()),
        trusted_comment: found.signer.as_ref().map(|s| s.trusted_comment.clone()),
    };
    Ok((Checked { source, origin }, found))
}

/// Second pass, before the transaction (under the lock, never in a dry
/// run): unpacks the bundle to `mroot2`, rebuilds its manifest from what
/// landed and requires the bundle's id, so that a bundle whose tree
/// disagrees with its manifest is exit 2 with nothing changed (the side
/// tree is removed again). The staged manifest goes to
/// `manifests/mroot2.manifest`, which the plan's manifest step then finds
/// written. The plan's `populate` finds `mroot2` and keeps it.
pub fn stage(layout: &Layout, cfg: &Config, checked: &Checked) -> Result<(), OpsError> {
    // The manifest is written here only when the plan names it (see
    // `with_staged_manifest`): a first build shapes the tree further (the
    // skel), and its manifest step hashes it after that.
    let Source::Bundle(crate::plan::BundleSource {
        file,
        id,
        require_signature,
        staged_manifest,
        ..
    }) = &checked.source
    else {
        return Ok(());
    };
    let keys = trusted_keys(cfg)?;
    bundle::stage(
        file,
        &keys,
        *require_signature,
        id,
        &layout.mroot2,
        staged_manifest.as_deref(),
    )
    .map_err(|e| refused(file, e))
}

/// `source` as a plan that stages it carries it: naming the manifest the
/// planner writes, so that undoing `populate` removes it with the tree.
pub fn with_staged_manifest(layout: &Layout, source: Source) -> Source {
    match source {
        Source::Bundle(mut b) => {
            b.staged_manifest = Some(manifest::path_for(&layout.manifests, "mroot2"));
            Source::Bundle(b)
        }
        other => other,
    }
}

/// Takes a staged bundle away again (the planner refused after staging).
pub fn unstage(layout: &Layout) {
    let _ = crate::fs::remove_tree(&layout.mroot2);
    let _ = crate::fs::remove_file_durable(&manifest::path_for(&layout.manifests, "mroot2"));
}

/// The steps that give the staged template its origin file
/// (`mroot2.origin`, renamed with the template by the plan's later steps).
pub fn push_origin(layout: &Layout, plan: &mut Plan, origin: &Origin) -> Result<(), OpsError> {
    let contents = serde_json::to_string_pretty(origin)
        .map_err(|e| OpsError::from(format!("internal: origin: {e}")))?;
    plan.push(
        "origin",
        Action::WriteFile {
            path: origin_file(layout, "mroot2"),
            contents,
            mode: 0o600,
        },
    );
    for (k, v) in [
        ("signer_key_id", origin.signer_key_id.clone()),
        ("trusted_comment", origin.trusted_comment.clone()),
        ("bundle_template_id", Some(origin.template_id.clone())),
    ] {
        if let Some(v) = v {
            plan.notes.insert(k.into(), v);
        }
    }
    Ok(())
}

/// What `template pack` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Packed {
    pub output: PathBuf,
    pub bytes: u64,
    pub header: Header,
}

/// `template pack [TEMPLATE] --output FILE`: the template `name` (`mroot`
/// by default, or an archive) with its manifest, as one bundle file.
pub fn pack(layout: &Layout, name: &str, output: &Path) -> Result<Packed, OpsError> {
    let dir = template_dir(layout, name)?;
    let m = manifest::read(&manifest::path_for(&layout.manifests, name))
        .map_err(|e| OpsError::from(e.to_string()))?;
    if std::fs::symlink_metadata(output).is_ok() {
        return Err(format!(
            "--output {}: exists; give a new file name (a bundle is never overwritten)",
            output.display()
        )
        .into());
    }
    let source =
        origin(layout, name).map_or_else(|| format!("jailtx template {name}"), |o| o.source);
    let header = Header {
        format: bundle::VERSION,
        template_id: m.id(),
        source,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        freebsd_version: bundle::freebsd_version(&dir),
        uname_r: nix::sys::utsname::uname()
            .ok()
            .map(|u| u.release().to_string_lossy().into_owned()),
        compression: "zstd".into(),
    };
    let bytes = bundle::pack(&dir, &m, &header, output)
        .map_err(|e| OpsError::from(format!("template pack: {e}")))?;
    Ok(Packed {
        output: output.to_owned(),
        bytes,
        header,
    })
}

/// The directory of template `name`: `mroot` or an archive `mroot.DATE[.N]`.
fn template_dir(layout: &Layout, name: &str) -> Result<PathBuf, OpsError> {
    if name != "mroot" && crate::plan::ArchiveName::exact(name).is_none() {
        return Err(format!(
            "{name:?} is not a template: give mroot or an archive (mroot.YYYYMMDD[.N])"
        )
        .into());
    }
    let dir = layout.j.join(name);
    if !dir.is_dir() {
        return Err(format!("no template {name} at {}", dir.display()).into());
    }
    Ok(dir)
}

/// What `template show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub template: String,
    pub path: PathBuf,
    pub template_id: String,
    pub files: usize,
    pub bytes: u64,
    pub source: Option<String>,
    pub signer_key_id: Option<String>,
    pub trusted_comment: Option<String>,
    pub bundle: Option<Header>,
    pub archives: Vec<String>,
}

/// `template show [TEMPLATE]`.
pub fn show(layout: &Layout, name: &str, archives: Vec<String>) -> Result<Shown, OpsError> {
    let dir = template_dir(layout, name)?;
    let m = manifest::read(&manifest::path_for(&layout.manifests, name))
        .map_err(|e| OpsError::from(e.to_string()))?;
    let o = origin(layout, name);
    Ok(Shown {
        template: name.to_owned(),
        path: dir,
        template_id: m.id(),
        files: m.entries.len(),
        bytes: m.file_bytes(),
        source: o.as_ref().map(|o| o.source.clone()),
        signer_key_id: o.as_ref().and_then(|o| o.signer_key_id.clone()),
        trusted_comment: o.as_ref().and_then(|o| o.trusted_comment.clone()),
        bundle: o.and_then(|o| o.bundle),
        archives,
    })
}
