//! The command line as `--help` shows it, read from clap's own `Command` at
//! test time: what the completion scripts and the man page must cover, so a
//! new subcommand or option without an entry there fails their tests.

use clap::CommandFactory;
use jailtx::cli::args::Cli;

/// One visible (sub)command: its words after `jailtx` (empty for the root),
/// and the long options `--help` lists for it.
#[derive(Debug)]
pub struct Entry {
    pub path: Vec<String>,
    /// Its own long options, without the global ones and `--help`/`--version`.
    pub own: Vec<String>,
}

impl Entry {
    /// `template build`, `audit`, or `` for the root.
    pub fn words(&self) -> String {
        self.path.join(" ")
    }
}

/// The long options of `jailtx --help` that every subcommand takes.
pub fn global_options() -> Vec<String> {
    let mut cmd = Cli::command();
    cmd.build();
    longs(&cmd, |a| a.is_global_set())
}

/// Every visible command that runs something (the groups `template`, `jail`,
/// `manifest` themselves only hold subcommands), depth first.
pub fn commands() -> Vec<Entry> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut Vec::new(), &mut out);
    out
}

/// Every visible subcommand name, groups included (`template`, `build`…).
pub fn all_words() -> Vec<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut words = Vec::new();
    fn names(c: &clap::Command, words: &mut Vec<String>) {
        for s in visible(c) {
            words.push(s.get_name().to_owned());
            names(s, words);
        }
    }
    names(&cmd, &mut words);
    words.sort();
    words.dedup();
    words
}

fn visible(c: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    c.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn walk(c: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    for s in visible(c) {
        path.push(s.get_name().to_owned());
        if s.has_subcommands() && visible(s).next().is_some() {
            walk(s, path, out);
        } else {
            out.push(Entry {
                path: path.clone(),
                own: longs(s, |a| !a.is_global_set()),
            });
        }
        path.pop();
    }
}

fn longs(c: &clap::Command, keep: impl Fn(&clap::Arg) -> bool) -> Vec<String> {
    c.get_arguments()
        .filter(|a| !a.is_hide_set() && keep(a))
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "help" | "version"))
        .map(str::to_owned)
        .collect()
}
