//! A planner's error reaches the exit code by its type, not its text: a
//! host that cannot say what runs is a failure (exit 1: nothing changed,
//! the system is as before), never bad input (exit 2), while a bad name
//! stays exit 2 with its one-line message.
//!
//! The host failure is real: `--backend freebsd` on Linux (not a dry run)
//! runs the FreeBSD commands, and there is no `jls` to list the jails.

#![cfg(target_os = "linux")]

mod support;

use support::{Root, assert_same};

#[test]
fn a_host_failure_while_planning_is_exit_1_not_2() {
    let r = Root::fresh();
    let before = r.everything();
    for args in [
        &["--backend", "freebsd", "start"][..],
        &["--backend", "freebsd", "stop"],
        &["--backend", "freebsd", "status"],
        &["--backend", "freebsd", "prune", "--keep", "1"],
    ] {
        let what = format!("{args:?}");
        let out = r.run(args);
        let line = out.one_line_error(1, &what);
        assert!(
            line.contains("list jails") && line.contains("jls"),
            "{what}: {line}"
        );
        assert_same(&what, &r.everything(), &before);

        let mut json = vec!["--json"];
        json.extend_from_slice(args);
        let out = r.run(&json);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what} --json: {e}: {out}"));
        assert_eq!(doc["exit_code"], 1, "{what} --json: {doc}");
        assert_eq!(out.code(), Some(1), "{what} --json: {out}");
    }
    assert_eq!(r.transactions().len(), 1, "only init's transaction");
}

#[test]
fn bad_names_are_still_exit_2_with_their_message() {
    let r = Root::fresh();
    let before = r.everything();
    for (args, line) in [
        (
            &["--backend", "freebsd", "start", "a b"][..],
            "jailtx: jail name \"a b\" is invalid: use 1 to 63 of A-Z a-z 0-9 _ -",
        ),
        (
            &["jail", "destroy", "mroot2"],
            "jailtx: jail name \"mroot2\" is reserved: j/mroot2 belongs to the template layout",
        ),
        (
            &["rollback", "--to", "yesterday"],
            "jailtx: --to \"yesterday\": expected an archive name, mroot.YYYYMMDD[.N] or YYYYMMDD[.N]",
        ),
        (
            &["--backend", "solaris", "status"],
            "jailtx: --backend \"solaris\": expected linux or freebsd",
        ),
        (
            &["stop", "nosuch"],
            "jailtx: no jail named \"nosuch\"; `jailtx status` lists the jails",
        ),
    ] {
        let what = format!("{args:?}");
        assert_eq!(r.run(args).one_line_error(2, &what), line, "{what}");
        assert_same(&what, &r.everything(), &before);
    }
}
