//! `--from-cmd`: how the destination reaches the user's command without ever being pasted into a shell line.
//!
//! The command runs as `/bin/sh -c LINE sh DEST`, with `DEST` and `DESTDIR`
//! in its environment: the destination is `$1`, `$DEST` and `$DESTDIR`.
//! In LINE, each `{dest}` becomes a reference to `$DEST`, quoted for where
//! it stands, so a destination holding spaces, quotes, `$(…)` or backticks
//! is one word that nothing re-parses:
//!
//! | `{dest}` stands | becomes |
//! | --- | --- |
//! | unquoted: `DESTDIR={dest}` | `DESTDIR="${DEST}"` |
//! | in double quotes: `"{dest}/x"` | `"${DEST}/x"` |
//! | in single quotes: `'{dest}/x'` | `''"${DEST}"'/x'` (closed, referenced, reopened) |
//!
//! The scan knows `'…'`, `"…"` and backslash escapes; inside `$(…)` or
//! backticks nested in double quotes it takes the double quotes to go on
//! (the reference there is unquoted: split, never run).

/// `cmd` with each `{dest}` replaced by a quoted reference to `$DEST`.
pub fn dest_command(cmd: &str) -> String {
    const PLACEHOLDER: &str = "{dest}";
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(cmd.len() + 16);
    let mut q = Quote::None;
    let mut rest = cmd;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with(PLACEHOLDER) {
            out.push_str(match q {
                Quote::None => "\"${DEST}\"",
                Quote::Double => "${DEST}",
                Quote::Single => "'\"${DEST}\"'",
            });
            rest = &rest[PLACEHOLDER.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        match (q, c) {
            (Quote::None, '\'') => q = Quote::Single,
            (Quote::Single, '\'') => q = Quote::None,
            (Quote::None, '"') => q = Quote::Double,
            (Quote::Double, '"') => q = Quote::None,
            // An escaped character is taken as is (a `\{dest}` stays literal).
            (Quote::None | Quote::Double, '\\') => {
                if let Some(n) = rest.chars().next() {
                    out.push(n);
                    rest = &rest[n.len_utf8()..];
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_quoting_context() {
        assert_eq!(
            dest_command("make installworld DESTDIR={dest}"),
            "make installworld DESTDIR=\"${DEST}\""
        );
        assert_eq!(
            dest_command("cp -a w/. \"{dest}/x\""),
            "cp -a w/. \"${DEST}/x\""
        );
        assert_eq!(
            dest_command("tar -C '{dest}' -x"),
            "tar -C ''\"${DEST}\"'' -x"
        );
        assert_eq!(dest_command("echo \\{dest}"), "echo \\{dest}");
        assert_eq!(
            dest_command("a {dest} b {dest}"),
            "a \"${DEST}\" b \"${DEST}\""
        );
        assert_eq!(dest_command("no placeholder"), "no placeholder");
    }

    /// Run by a real shell with a hostile destination: one word, nothing run.
    #[test]
    fn a_hostile_destination_is_one_word() {
        let d = tempfile::tempdir().unwrap();
        let dest = format!(
            "{}/a b $(touch pwned) `touch pwned2` ' \"",
            d.path().display()
        );
        for cmd in [
            "printf '%s\\n' {dest} > out",
            "printf '%s\\n' \"{dest}\" > out",
            "printf '%s\\n' '{dest}' > out",
        ] {
            let st = std::process::Command::new("/bin/sh")
                .args(["-c", &dest_command(cmd), "sh", &dest])
                .env("DEST", &dest)
                .current_dir(d.path())
                .status()
                .unwrap();
            assert!(st.success(), "{cmd}");
            let out = std::fs::read_to_string(d.path().join("out")).unwrap();
            assert_eq!(out, format!("{dest}\n"), "{cmd}");
            assert!(!d.path().join("pwned").exists(), "{cmd}");
            assert!(!d.path().join("pwned2").exists(), "{cmd}");
        }
    }
}
