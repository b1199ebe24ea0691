//! The man page `contrib/man/jailtx.8` (issue 14, item 7): `mandoc -Tlint`
//! finds nothing at warning level or above, and the page covers the command
//! line clap defines, read at test time (so a new subcommand or option
//! without a man entry fails here): each runnable subcommand has a SYNOPSIS
//! line naming its own long options and a `.It Cm` entry, each global option
//! an entry, every `JAILTX_*` variable the sources name an ENVIRONMENT entry
//! (the test-only ones saying so), and EXIT STATUS lists 0 to 7.
//! `scripts/install` installs it gzipped in `PREFIX/share/man/man8`.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use support::cli_tree;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/man/jailtx.8");

fn source() -> String {
    std::fs::read_to_string(PAGE).expect("contrib/man/jailtx.8")
}

fn mandoc(args: &[&str]) -> std::process::Output {
    Command::new("mandoc")
        .args(args)
        .arg(PAGE)
        .output()
        .expect("run mandoc (Debian package mandoc; scripts/test installs it)")
}

/// The page as text, without overstrike and on lines long enough that no
/// SYNOPSIS line wraps.
fn rendered() -> String {
    let out = mandoc(&["-Tascii", "-Owidth=300"]);
    assert!(out.status.success(), "mandoc -Tascii");
    let mut text = String::new();
    for c in String::from_utf8(out.stdout).unwrap().chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

/// The lines of section `name` of the rendered page.
fn section(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != name)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Whether `text` holds `--opt` as a whole option name.
fn has_option(text: &str, opt: &str) -> bool {
    let flag = format!("--{opt}");
    text.match_indices(&flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The check of the page against the command line: one message per gap.
fn gaps(src: &str, text: &str) -> Vec<String> {
    let synopsis = section(text, "SYNOPSIS");
    let mut bad = Vec::new();
    for g in cli_tree::global_options() {
        if !src.lines().any(|l| l.starts_with(&format!(".It Fl -{g}")))
            && !src.contains(&format!(", Fl -{g}\n"))
        {
            bad.push(format!("global option --{g} has no `.It Fl -{g}` entry"));
        }
    }
    for c in cli_tree::commands() {
        let words = c.words();
        let head = format!("jailtx {words}");
        let line = synopsis
            .iter()
            .find(|l| *l == &head || l.starts_with(&format!("{head} ")));
        match line {
            None => bad.push(format!("no SYNOPSIS line for `{head}`")),
            Some(line) => {
                for o in &c.own {
                    if !has_option(line, o) {
                        bad.push(format!("SYNOPSIS of `{head}` lacks --{o}"));
                    }
                }
            }
        }
        let entry = format!(".It Cm {words}");
        if !src
            .lines()
            .any(|l| l == entry || l.starts_with(&format!("{entry} ")))
        {
            bad.push(format!("no `{entry}` entry under Commands"));
        }
    }
    bad
}

#[test]
fn mandoc_lint_is_clean_at_warning_level() {
    let out = mandoc(&["-Tlint", "-Wwarning"]);
    let msgs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && msgs.trim().is_empty(), "{msgs}");
}

#[test]
fn every_subcommand_and_long_option_of_the_help_is_in_the_page() {
    let commands = cli_tree::commands();
    assert!(commands.len() >= 17, "too few commands found: {commands:?}");
    let bad = gaps(&source(), &rendered());
    assert!(bad.is_empty(), "contrib/man/jailtx.8:\n{}", bad.join("\n"));
}

#[test]
fn the_coverage_check_catches_a_missing_command_and_option() {
    // The same check on the page with one command's entry and one option
    // taken out must name both: the check above can fail.
    let src = source();
    let text = rendered();
    let cut_src = src.replace(".It Cm prune Op Fl -keep Ar n\n", ".It Cm pruned\n");
    let cut_text = text.replace("jailtx audit [--quick]", "jailtx audit");
    let bad = gaps(&cut_src, &cut_text);
    assert_eq!(
        bad,
        [
            "SYNOPSIS of `jailtx audit` lacks --quick",
            "no `.It Cm prune` entry under Commands"
        ],
        "{bad:?}"
    );
}

#[test]
fn environment_names_every_variable_and_marks_the_test_only_ones() {
    // Every JAILTX_* name in src/, but the unit tests' own scratch variable.
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("JAILTX_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
    names.remove("JAILTX_FS_TEST_DIR");
    for must in ["JAILTX_ROOT", "JAILTX_LOG", "JAILTX_FAULT"] {
        assert!(names.contains(must), "{must} not found in src/: {names:?}");
    }
    let src = source();
    let env: String = src
        .split(".Sh ENVIRONMENT\n")
        .nth(1)
        .and_then(|s| s.split("\n.Sh ").next())
        .expect("an ENVIRONMENT section")
        .to_owned();
    for name in &names {
        let entry = format!(".It Ev {name}\n");
        let Some(at) = env.find(&entry) else {
            panic!("ENVIRONMENT has no `.It Ev {name}` entry");
        };
        let body = &env[at + entry.len()..];
        let body = body.split("\n.It ").next().unwrap();
        let test_only = ["JAILTX_FAULT", "JAILTX_HISTORY_ROTATE_BYTES"].contains(&name.as_str());
        assert_eq!(
            body.starts_with("For tests only"),
            test_only,
            "{name}: test-only variables, and only they, start `For tests only`: {body}"
        );
    }
    for v in ["JAIL_NAME", "JAIL_IP", "JAIL_JID", "JAIL_HOSTNAME"] {
        assert!(env.contains(v), "the health check's {v}");
    }
}

#[test]
fn exit_status_lists_every_code_and_see_also_the_freebsd_pages() {
    let text = rendered();
    let exit = section(&text, "EXIT STATUS");
    let codes: Vec<&str> = exit
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 1 && w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "6", "7"], "{exit:?}");
    let see = section(&text, "SEE ALSO").join(" ");
    for page in [
        "jail(8)",
        "jail.conf(5)",
        "jexec(8)",
        "jls(8)",
        "nullfs(5)",
        "mount_nullfs(8)",
        "etcupdate(8)",
        "periodic(8)",
    ] {
        assert!(see.contains(page), "SEE ALSO lacks {page}: {see}");
    }
    for s in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(text.lines().any(|l| l == s), "no {s} section");
    }
}

#[test]
fn install_puts_the_page_in_share_man_man8() {
    let tmp = tempfile::tempdir().unwrap();
    support::install_into(tmp.path());
    let gz = tmp.path().join("usr/local/share/man/man8/jailtx.8.gz");
    let mode = std::os::unix::fs::PermissionsExt::mode(&gz.metadata().unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o444);
    let mut page = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_string(&mut page)
        .unwrap();
    assert_eq!(page, source());
}
