//! The command line: global options of SPEC section 2 and one subcommand each.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "jailtx",
    version,
    about = "Crash-safe transactions for jails on a shared read-only template",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Put BASE, the state dir and the config file under DIR (tests, trials)
    #[arg(long, global = true, env = "JAILTX_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Config file (default: DIR/jailtx.toml with --root, else /usr/local/etc/jailtx.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout and nothing else there
    #[arg(long, global = true)]
    pub json: bool,
    /// Which host backend carries out mounts and jails
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,
    /// More log output on stderr (-v, -vv)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the step plan and change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Finish an interrupted transaction (resume) before running this one
    #[arg(long, global = true)]
    pub auto_recover: bool,
}

#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// A directory holding a world
    #[arg(long, value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
    /// An archive: .tar, .tar.gz, .txz/.tar.xz (FreeBSD's base.txz)
    #[arg(long, value_name = "FILE")]
    pub from_tar: Option<PathBuf>,
    /// A command that installs a world into {dest}
    #[arg(long, value_name = "CMD")]
    pub from_cmd: Option<String>,
    /// A template bundle (`template pack`), verified against FILE.minisig and [trust] keys
    #[arg(long, value_name = "FILE")]
    pub from_bundle: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the layout and the state dir (idempotent)
    Init,
    /// Build the first template
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Create or destroy a jail
    #[command(subcommand)]
    Jail(JailCmd),
    /// Start jails (all when none named)
    Start { names: Vec<String> },
    /// Stop jails (all when none named)
    Stop { names: Vec<String> },
    /// Restart jails (all when none named)
    Restart { names: Vec<String> },
    /// Jails, like jls
    Status,
    /// Build a new template and switch every jail to it
    Upgrade {
        #[command(flatten)]
        source: Source,
        /// Jails switched first, which must stay healthy before the rest switch
        #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
        canary: Vec<String>,
        /// Seconds the canaries run on the new template before their health
        /// is checked again and the rest switch (default 30)
        #[arg(long, value_name = "SECS", requires = "canary")]
        canary_wait: Option<u64>,
        /// Check the --from-tar archive against this FreeBSD release MANIFEST (SHA-256) before extracting it
        #[arg(long, value_name = "MANIFEST")]
        dist_manifest: Option<PathBuf>,
    },
    /// Switch back to an archived template
    Rollback {
        #[arg(long, value_name = "ARCHIVE")]
        to: Option<String>,
    },
    /// Finish an interrupted transaction
    Recover {
        /// Roll it back instead of resuming it
        #[arg(long)]
        rollback: bool,
    },
    /// Verify templates against their manifests
    Audit {
        templates: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        quick: bool,
    },
    /// Three-way merge of each jail's /etc to the current template
    EtcMerge { names: Vec<String> },
    /// Template manifests
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// The transactions in the journal
    History,
    /// Prometheus text format for node_exporter's textfile collector
    Metrics {
        /// Write to FILE atomically (mode 0644) instead of stdout, e.g.
        /// /var/tmp/node_exporter/jailtx.prom
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete archived templates beyond the newest N
    Prune {
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
    },
    /// Print a completion script for SHELL on stdout
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// The init of a Linux jail (internal: jailtx starts it)
    #[command(name = "__jail-init", hide = true)]
    JailInit {
        #[arg(long)]
        name: String,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        start: String,
        /// Seconds the jail's processes get between SIGTERM and SIGKILL
        /// (the config's `stop_timeout_secs`)
        #[arg(long, value_name = "SECS")]
        stop_timeout: u64,
        /// Where the jail's console log (`NAME.log`) goes; none: discarded
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// The size at which the console log rotates (`[jail] log_max_bytes`)
        #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
        log_max_bytes: u64,
    },
    /// Run a plan file (test and debugging aid; not for production use)
    #[command(hide = true)]
    RunPlan { file: PathBuf },
}

/// The shells `completions` writes for: the three whose scripts are checked
/// in the tests (tests/completions.rs) and installed by scripts/install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// World -> mroot + skel
    Build {
        #[command(flatten)]
        source: Source,
        /// Check the --from-tar archive against this FreeBSD release MANIFEST (SHA-256) before extracting it
        #[arg(long, value_name = "MANIFEST")]
        dist_manifest: Option<PathBuf>,
    },
    /// Write a template (default: mroot) as one bundle file: tree, manifest, header
    Pack {
        template: Option<String>,
        /// The bundle to write (never overwritten); sign it with `minisign -Sm FILE`
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// A template's id, source, signer, size and the archives
    Show { template: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum JailCmd {
    Create {
        name: String,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        start: bool,
    },
    Destroy {
        name: String,
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCmd {
    Export {
        template: Option<String>,
        #[arg(long, default_value = "mtree")]
        format: String,
    },
}
