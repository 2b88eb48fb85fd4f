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
    /// Print the version.
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
}
