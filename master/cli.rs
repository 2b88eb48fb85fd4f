//! Command line (DESIGN section 4).

use std::path::PathBuf;

use clap::Parser;

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
}
