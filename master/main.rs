//! rproxy's master process: command line, start-up, then supervision of the workers.
//! See docs/ARCHITECTURE.md for the process model.

#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;
mod generation;
mod health;
mod listeners;
mod notify;
mod privileges;
mod reload;
mod reopen;
mod spawn;
mod startup;
mod stop;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;
use rproxy_shared::errlog;
use rproxy_shared::{error, info};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match rproxy_shared::load::load(&cli.config) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("rproxy: {e}");
            }
            eprintln!(
                "rproxy: configuration {} has {} error(s)",
                cli.config.display(),
                errs.0.len()
            );
            return ExitCode::from(1);
        }
    };
    let unsupported = config.unsupported();
    if cli.test {
        for w in config.warnings() {
            eprintln!("rproxy: {}: {w}", cli.config.display());
        }
        for u in &unsupported {
            eprintln!(
                "rproxy: {}: warning: {u}; rproxy will refuse to start with it",
                cli.config.display()
            );
        }
        println!("rproxy: configuration {} ok", cli.config.display());
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    if !unsupported.is_empty() {
        for u in &unsupported {
            eprintln!("rproxy: {}: {u}", cli.config.display());
        }
        return ExitCode::from(1);
    }
    match start(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn start(cli: cli::Cli, config: rproxy_shared::config::Config) -> Result<(), String> {
    errlog::set_level(config.log_level);
    startup::raise_nofile(config.max_nofile);
    startup::memtrim(config.memtrim);
    let identity = privileges::Identity::resolve(&config.user, &config.group)?;
    startup::open_error_log(config.error_log.as_deref(), identity.owner())?;
    // Signals are blocked before anything can fork, so none is lost to a default action.
    let master = supervisor::Master::new(cli.config.clone())?;
    if config.daemonize && !cli.foreground && !notify::under_systemd() {
        startup::daemonize()?;
    }
    let pid_file = config.pid_file.clone();
    if let Some(p) = &pid_file {
        startup::write_pid_file(p)?;
    }
    let result = master.run(config);
    if let Some(p) = &pid_file {
        startup::remove_pid_file(p);
    }
    if result.is_ok() {
        info!("exiting");
    }
    result
}
