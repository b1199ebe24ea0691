//! `jailtx completions SHELL`: clap_complete's script for the visible command line.

use std::io::Write;

use clap::CommandFactory;

use super::args::{Cli, Shell};
use crate::error::Error;

/// `jailtx completions SHELL`: clap's own completion script for this
/// command line, built in memory (clap_complete panics on a failed write)
/// and then written, so a closed stdout is an error, not a panic.
pub(super) fn print(shell: Shell, json: bool) -> Result<(), Error> {
    // clap_complete offers hidden subcommands too (`__jail-init`, `run-plan`
    // are internal), and clap cannot remove a subcommand: so the root is put
    // together again from `Cli`'s own arguments and its visible subcommands,
    // restating nothing of the command line.
    let full = Cli::command();
    let mut visible = clap::Command::new("jailtx")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), &mut visible, "jailtx", &mut script);
    let mut out = std::io::stdout().lock();
    let written = if json {
        let doc = serde_json::json!({
            "shell": shell.generator().to_string(),
            "script": String::from_utf8_lossy(&script),
        });
        writeln!(out, "{doc}")
    } else {
        out.write_all(&script)
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Error::Io(format!("write the completion script to stdout: {e}")))
}
