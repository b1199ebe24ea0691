//! `template pack` and `template show`: thin wrappers over `ops::bundle`.

use crate::cli::stdout::outln;
use serde_json::json;

use crate::error::Error;
use crate::ops;

use super::Ctx;

/// `template pack [TEMPLATE] --output FILE`: under the lock (a template is
/// never packed while a transaction moves it), read only.
pub fn pack(ctx: &Ctx, template: Option<&str>, output: &std::path::Path) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let name = template.unwrap_or("mroot");
    if ctx.global.dry_run {
        outln!("would pack template {name} into {}", output.display());
        return Ok(());
    }
    let _state = super::open_state(ctx)?;
    let packed = ops::bundle::pack(&ctx.layout, name, output)?;
    if ctx.global.json {
        outln!("{}", json!({ "packed": packed }));
    } else {
        outln!(
            "packed template {name} ({}) into {}: {} bytes; sign it with `minisign -Sm {}`",
            &packed.header.template_id[..12.min(packed.header.template_id.len())],
            packed.output.display(),
            packed.bytes,
            packed.output.display()
        );
    }
    Ok(())
}

/// `template show [TEMPLATE]`: id, source, signer, size, and the archives.
pub fn show(ctx: &Ctx, template: Option<&str>) -> Result<(), Error> {
    crate::statedir::require(&ctx.layout)?;
    let host = ctx.host();
    let archives = ops::upgrade::archives(&ctx.site(host.as_ref()))?;
    let shown = ops::bundle::show(&ctx.layout, template.unwrap_or("mroot"), archives)?;
    if ctx.global.json {
        outln!("{}", json!(shown));
        return Ok(());
    }
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    outln!(
        "template:        {} ({})",
        shown.template,
        shown.path.display()
    );
    outln!("id:              {}", shown.template_id);
    outln!(
        "size:            {} entries, {}",
        shown.files,
        crate::manifest::human_bytes(shown.bytes)
    );
    outln!("source:          {}", or_dash(&shown.source));
    outln!("signer key id:   {}", or_dash(&shown.signer_key_id));
    outln!(
        "trusted comment: {}",
        shown
            .trusted_comment
            .as_deref()
            .map_or_else(|| "-".into(), |c| c.escape_debug().to_string())
    );
    if let Some(b) = &shown.bundle {
        outln!("packed:          {}", b.created);
        if let Some(v) = &b.freebsd_version {
            outln!("freebsd-version: {v}");
        }
        if let Some(v) = &b.uname_r {
            outln!("packed on:       uname -r {v}");
        }
    }
    outln!(
        "archives:        {}",
        if shown.archives.is_empty() {
            "none".to_owned()
        } else {
            shown.archives.join(", ")
        }
    );
    Ok(())
}
