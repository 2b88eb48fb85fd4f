//! Command line (DESIGN section 4), and the `ctl` subcommand (section 12).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// rproxy: a multi-process reverse proxy. Signals to the master: HUP reload, USR1 reopen logs,
/// QUIT graceful stop, TERM/INT fast stop.
#[derive(Debug, Parser)]
#[command(name = "rproxy", version, disable_version_flag = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config",
        default_value = "/etc/rproxy/rproxy.toml"
    )]
    pub config: PathBuf,
    /// Full dry run of the configuration: print "configuration ok" (exit 0) or every error (exit 1).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Never daemonize (systemd and tests use this).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Convert RProxy's own configuration file (libconfuse syntax, 1.x or 2.x) to rproxy's TOML
    /// on stdout; every dropped or changed option is named on stderr.
    #[arg(long = "convert", value_name = "FILE.cfg", conflicts_with_all = ["test", "foreground"])]
    pub convert: Option<PathBuf>,
    /// Print the version.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Talk to the running master over its control socket (`control-socket` of the
    /// configuration file). Exit status: 0 ok, 1 the command failed, 2 usage or no master.
    #[command(after_help = crate::control::protocol::USAGE)]
    Ctl(CtlArgs),
}

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Configuration file whose `control-socket` to use (default: rproxy's own -c).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// The control socket itself, instead of the one the configuration names.
    #[arg(short = 's', long = "socket")]
    pub socket: Option<PathBuf>,
    /// The command and its arguments, e.g. `show info --json`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
