//! `jailtx completions SHELL` (issue 14, item 6): clap's generator writes a
//! script for bash, zsh and fish that names every visible subcommand and
//! option (read from clap's `Command` at test time, so a new one is covered
//! without editing this file) and none of the internal ones, that each
//! shell's own parser accepts, and that completes for real in bash and fish;
//! `scripts/install` puts them where each shell looks under PREFIX.

mod support;

use std::path::Path;
use std::process::Command;

use support::{cli_tree, run_bin};

const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

fn script(shell: &str) -> String {
    let out = run_bin(&["completions", shell], &[]);
    assert_eq!(out.code(), Some(0), "completions {shell}: {out}");
    assert!(out.stderr.is_empty(), "completions {shell}: {out}");
    out.stdout
}

/// Runs `tool ARGS… FILE` (a shell's syntax check), failing the test with
/// the package to install when the tool is missing: scripts/test installs it.
fn check_syntax(tool: &str, args: &[&str], file: &Path, package: &str) {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("run {tool} (Debian package {package}; scripts/test installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} rejects the completion script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_script_names_every_subcommand_and_option_and_no_hidden_one() {
    let words = cli_tree::all_words();
    assert!(
        words.len() > 15,
        "the walk found too few subcommands: {words:?}"
    );
    let mut options = cli_tree::global_options();
    for c in cli_tree::commands() {
        options.extend(c.own);
    }
    for shell in SHELLS {
        let text = script(shell);
        assert!(text.len() > 1000, "{shell}: a script that short is not one");
        for w in &words {
            assert!(text.contains(w.as_str()), "{shell}: no subcommand {w:?}");
        }
        for o in &options {
            // bash lists `--all`, zsh `'--all[…]'`, fish `-l all`.
            let found = text.contains(&format!("--{o}")) || text.contains(&format!("-l {o}"));
            assert!(found, "{shell}: no option --{o}");
        }
        for hidden in ["__jail-init", "run-plan", "stop-timeout", "log-max-bytes"] {
            assert!(
                !text.contains(hidden),
                "{shell}: offers internal {hidden:?}"
            );
        }
    }
}

#[test]
fn each_shell_parses_its_script() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |shell: &str| {
        let p = tmp.path().join(format!("jailtx.{shell}"));
        std::fs::write(&p, script(shell)).unwrap();
        p
    };
    check_syntax("bash", &["-n"], &file("bash"), "bash");
    check_syntax("zsh", &["-n"], &file("zsh"), "zsh");
    check_syntax("fish", &["--no-execute"], &file("fish"), "fish");
}

#[test]
fn bash_and_fish_complete_a_subcommand_and_an_option() {
    let tmp = tempfile::tempdir().unwrap();
    let bash = tmp.path().join("jailtx.bash");
    std::fs::write(&bash, script("bash")).unwrap();
    // What bash's programmable completion does on `jailtx up<TAB>` and
    // `jailtx audit --q<TAB>`: call the function with COMP_WORDS set.
    let probe = r#"
        source "$1"
        COMP_WORDS=(jailtx up); COMP_CWORD=1; _jailtx jailtx up jailtx
        echo "1:${COMPREPLY[*]}"
        COMP_WORDS=(jailtx audit --q); COMP_CWORD=2; _jailtx jailtx --q audit
        echo "2:${COMPREPLY[*]}"
    "#;
    let out = Command::new("bash")
        .args(["-c", probe, "probe"])
        .arg(&bash)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bash: {text}");
    assert!(text.contains("1:upgrade\n"), "bash: {text}");
    assert!(text.contains("2:--quick --quiet\n"), "bash: {text}");

    let fish = tmp.path().join("jailtx.fish");
    std::fs::write(&fish, script("fish")).unwrap();
    let out = Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'jailtx up'; complete -C 'jailtx jail create x --ho'",
            fish.display()
        ))
        .output()
        .unwrap_or_else(|e| panic!("run fish (Debian package fish): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fish: {text}");
    assert!(text.starts_with("upgrade\t"), "fish: {text}");
    assert!(text.contains("\n--hostname"), "fish: {text}");
}

#[test]
fn an_unknown_shell_is_refused_with_exit_2() {
    let out = run_bin(&["completions", "tcsh"], &[]);
    let line = out.one_line_error(2, "completions tcsh");
    assert!(line.contains("bash, zsh, fish"), "{line}");
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn completions_need_no_config_or_state_dir() {
    // A root that does not exist and a config that cannot be read: the
    // script depends on the command line alone.
    let out = run_bin(
        &[
            "--root",
            "/nonexistent/jailtx",
            "--config",
            "/nonexistent/jailtx.toml",
            "completions",
            "zsh",
        ],
        &[],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.starts_with("#compdef jailtx"), "{out}");
    let json = run_bin(&["completions", "bash", "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    assert_eq!(doc["shell"], "bash");
    assert_eq!(doc["script"].as_str(), Some(script("bash").as_str()));
}

#[test]
fn install_puts_each_script_where_its_shell_looks() {
    let tmp = tempfile::tempdir().unwrap();
    support::install_into(tmp.path());
    for (shell, rel) in [
        ("bash", "share/bash-completion/completions/jailtx"),
        ("zsh", "share/zsh/site-functions/_jailtx"),
        ("fish", "share/fish/vendor_completions.d/jailtx.fish"),
    ] {
        let p = tmp.path().join("usr/local").join(rel);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(text, script(shell), "{rel}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions());
        assert_eq!(mode & 0o7777, 0o444, "mode of {rel}");
    }
}
