//! The files the FreeBSD backend generates for each jail: `NAME.conf`
//! (jail.conf(5), read by `jail -f`) and `fstab.NAME` (fstab(5), the
//! Handbook's two nullfs lines), and the plan steps that write and remove them.
//!
//! The conf has no `mount.fstab`: the nullfs mounts are jailtx steps
//! (journaled, checked before they run), and jail(8) mounts every
//! `mount.fstab` line without looking, so it would stack a second mount on
//! jailtx's. Without jailtx, `mount -a -F` (which skips what is mounted)
//! followed by `service jail start NAME` or `jail -f CONF -c NAME` runs the jail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{FreeBsd, Layout};
use crate::plan::Action;

use super::JailSpec;

/// `JAIL_CONF_DIR/NAME.conf`.
pub fn conf_path(cfg: &FreeBsd, name: &str) -> PathBuf {
    cfg.jail_conf_dir.join(format!("{name}.conf"))
}

/// `FSTAB_DIR/fstab.NAME`.
pub fn fstab_path(cfg: &FreeBsd, name: &str) -> PathBuf {
    cfg.fstab_dir.join(format!("fstab.{name}"))
}

/// A jail.conf(5) string: double-quoted, with `\`, `"` and `$` (which would
/// start a variable) escaped, and control characters as C escapes. jail(8)'s
/// lexer turns `\ooo` into one byte, so a control character beyond ASCII
/// (U+0080 to U+009F) is written as the octal escapes of each of its UTF-8
/// bytes, never of its code point.
pub fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' | '"' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An fstab(5) field: whitespace, `#` and `\` as octal escapes (`\040`),
/// which getfsent(3) and jail(8) decode.
pub fn fstab_field(p: &Path) -> String {
    let mut out = String::new();
    for b in p.as_os_str().as_encoded_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'#' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(char::from(*b)),
        }
    }
    out
}

/// An `/etc/jail.NAME.conf` that exists (the directory above
/// `jail_conf_dir`): rc.d/jail's `parse_options` reads it before
/// `/etc/jail.conf.d/NAME.conf`, so `service jail start NAME` would run
/// that file's jail instead of jailtx's.
pub fn shadowing_conf(cfg: &FreeBsd, name: &str) -> Option<PathBuf> {
    let p = cfg
        .jail_conf_dir
        .parent()?
        .join(format!("jail.{name}.conf"));
    exists(&p).then_some(p)
}

/// `ip4.addr` or `ip6.addr`, by the address's family.
fn ip_param(ip: &str) -> &'static str {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => "ip6.addr",
        _ => "ip4.addr",
    }
}

/// The jail.conf(5) text of `NAME.conf` for `spec`; `conf` and `fstab` are
/// the paths the two generated files go to (named in its comments).
pub fn jail_conf(spec: &JailSpec, cfg: &FreeBsd) -> String {
    let name = &spec.name;
    let conf = conf_path(cfg, name);
    let fstab = fstab_path(cfg, name);
    let mut t = format!(
        "# {conf}: jail {name}, written by jailtx (`jailtx jail destroy {name}` removes it).\n\
         # No mount.fstab: jailtx mounts {fstab} itself, and jail(8) would mount it\n\
         # a second time. Without jailtx: mount -a -F {fstab} && jail -f {conf} -c {name}\n",
        conf = conf.display(),
        fstab = fstab.display(),
    );
    t.push_str(&format!("{name} {{\n"));
    let mut param = |k: &str, v: Option<String>| match v {
        Some(v) => t.push_str(&format!("\t{k} = {v};\n")),
        None => t.push_str(&format!("\t{k};\n")),
    };
    param("path", Some(quote(&spec.path.display().to_string())));
    param("host.hostname", Some(quote(&spec.hostname)));
    param(ip_param(&spec.ip), Some(quote(&spec.ip)));
    if !cfg.interface.is_empty() {
        param("interface", Some(quote(&cfg.interface)));
    }
    param("mount.devfs", None);
    param("exec.clean", None);
    if !spec.exec_start.trim().is_empty() {
        param("exec.start", Some(quote(&spec.exec_start)));
    }
    if !spec.exec_stop.trim().is_empty() {
        param("exec.stop", Some(quote(&spec.exec_stop)));
    }
    // Clamped as the Linux backend clamps it: a plan from the journal may
    // carry any number, and 0 keeps its jail(8) meaning (no SIGTERM).
    let grace = crate::config::stop_grace(spec.stop_timeout_secs);
    param("stop.timeout", Some(grace.as_secs().to_string()));
    t.push_str("}\n");
    t
}

/// The fstab(5) text of `fstab.NAME`: the template read-only on the jail's
/// root, then the jail's own part read-write on its `s` (mounted in this
/// order, unmounted in the reverse); `0 0` so neither dump(8) nor fsck(8)
/// touches them.
pub fn fstab(layout: &Layout, cfg: &FreeBsd, name: &str) -> String {
    let root = layout.j.join(name);
    let lines = [
        (layout.mroot.clone(), root.clone(), "ro"),
        (layout.js.join(name), root.join("s"), "rw"),
    ];
    let mut t = format!(
        "# {}: jail {name}'s nullfs mounts, written by jailtx; `mount -a -F` this file\n\
         # mounts what is not mounted yet.\n\
         # Device\tMountpoint\tFStype\tOptions\tDump\tPass#\n",
        fstab_path(cfg, name).display()
    );
    for (src, dst, mode) in lines {
        t.push_str(&format!(
            "{}\t{}\tnullfs\t{mode}\t0\t0\n",
            fstab_field(&src),
            fstab_field(&dst)
        ));
    }
    t
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The steps `jail create` adds on FreeBSD: the missing directories (top
/// down), then `NAME.conf` and `fstab.NAME`. Refuses when either file exists:
/// a rollback removes what the plan wrote, and that must never be an
/// administrator's file.
pub fn create_steps(
    layout: &Layout,
    cfg: &FreeBsd,
    spec: &JailSpec,
) -> Result<Vec<(String, Action)>, String> {
    let name = &spec.name;
    if let Some(old) = shadowing_conf(cfg, name) {
        tracing::warn!(
            "{} exists: `service jail start {name}` (rc.d/jail) reads it instead of {}; jailtx itself runs jail -f with its own file. Remove or rename it",
            old.display(),
            conf_path(cfg, name).display()
        );
    }
    let files = [
        (
            format!("conf-{name}"),
            conf_path(cfg, name),
            jail_conf(spec, cfg),
        ),
        (
            format!("fstab-{name}"),
            fstab_path(cfg, name),
            fstab(layout, cfg, name),
        ),
    ];
    let mut steps = Vec::new();
    let mut made = std::collections::BTreeSet::new();
    for (_, path, _) in &files {
        if exists(path) {
            return Err(format!(
                "{} already exists; move it aside (jailtx writes its own), then create the jail",
                path.display()
            ));
        }
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|d| !exists(d))
            .map(Path::to_owned)
            .collect();
        missing.reverse();
        for dir in missing {
            if made.insert(dir.clone()) {
                let last = dir.file_name().unwrap_or_default().to_string_lossy();
                steps.push((
                    format!("make-dir-{last}"),
                    Action::MakeDir {
                        path: dir,
                        mode: 0o755,
                    },
                ));
            }
        }
    }
    for (step, path, contents) in files {
        steps.push((
            step,
            Action::WriteFile {
                path,
                contents,
                mode: 0o644,
            },
        ));
    }
    Ok(steps)
}

/// The generated files of jail `name` that exist, with the name of the
/// `jail destroy` step that sets each aside (`set-aside-conf-NAME`, …).
pub fn existing_files(cfg: &FreeBsd, name: &str) -> Vec<(String, PathBuf)> {
    [
        (format!("set-aside-conf-{name}"), conf_path(cfg, name)),
        (format!("set-aside-fstab-{name}"), fstab_path(cfg, name)),
    ]
    .into_iter()
    .filter(|(_, p)| exists(p))
    .collect()
}

/// The parameters of jail `name` in a jail.conf(5) text that jailtx wrote
/// (one `key = "value";` or `key;` per line; not a general parser). A
/// parameter without a value maps to `""`.
pub fn parse_conf(text: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| *l == format!("{name} {{"))?;
    let mut out = BTreeMap::new();
    for l in lines {
        if l == "}" {
            return Some(out);
        }
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let l = l.strip_suffix(';')?;
        match l.split_once(" = ") {
            Some((k, v)) => out.insert(k.to_owned(), unquote(v)),
            None => out.insert(l.to_owned(), String::new()),
        };
    }
    None
}

/// The value of a string [`quote`] wrote, decoded as jail(8)'s lexer does
/// (`\ooo` is one byte; a character's bytes are joined back).
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let digits = bytes[i..]
            .iter()
            .take(3)
            .take_while(|d| (b'0'..=b'7').contains(d))
            .count();
        if digits > 0 {
            let oct = bytes[i..i + digits]
                .iter()
                .fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push((oct & 0o377) as u8);
            i += digits;
            continue;
        }
        match bytes.get(i) {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(other) => out.push(*other),
            None => {}
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_for_jail_conf() {
        assert_eq!(quote("/bin/sh /etc/rc"), r#""/bin/sh /etc/rc""#);
        assert_eq!(quote(r#"echo "$HOME" \"#), r#""echo \"\$HOME\" \\""#);
        let text = format!(
            "x {{\n\texec.start = {};\n\tmount.devfs;\n}}\n",
            quote("a \"$b\"")
        );
        let p = parse_conf(&text, "x").unwrap();
        assert_eq!(p["exec.start"], "a \"$b\"");
        assert_eq!(p["mount.devfs"], "");
        assert!(parse_conf(&text, "y").is_none());
        // C1 controls: the octal escapes of their UTF-8 bytes, read back whole.
        let v = "/a\tb\u{85}c\u{7f}é";
        assert_eq!(quote(v), "\"/a\\tb\\302\\205c\\177é\"");
        let text = format!("x {{\n\tpath = {};\n}}\n", quote(v));
        assert_eq!(parse_conf(&text, "x").unwrap()["path"], v);
    }

    #[test]
    fn stop_timeout_is_written_clamped() {
        let mut spec = JailSpec {
            name: "ns".into(),
            path: "/usr/home/j/ns".into(),
            hostname: "ns.example.org".into(),
            ip: "192.168.3.17".into(),
            exec_start: String::new(),
            exec_stop: String::new(),
            stop_timeout_secs: u64::MAX,
        };
        let cfg = FreeBsd::default();
        let timeout = |spec: &JailSpec| {
            parse_conf(&jail_conf(spec, &cfg), "ns").unwrap()["stop.timeout"].clone()
        };
        assert_eq!(timeout(&spec), "3600");
        spec.stop_timeout_secs = 0;
        assert_eq!(timeout(&spec), "0");
    }

    #[test]
    fn fstab_fields_escape_blanks() {
        assert_eq!(fstab_field(Path::new("/usr/home/j/ns")), "/usr/home/j/ns");
        assert_eq!(fstab_field(Path::new("/a b\tc#")), r"/a\040b\011c\043");
        let back = super::super::freebsd::unvis(&fstab_field(Path::new("/a b\\c")));
        assert_eq!(back, "/a b\\c");
    }
}
