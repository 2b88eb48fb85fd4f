//! rproxy's master process: command line, start-up, then supervision of the workers.
//! See docs/ARCHITECTURE.md for the process model.

#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;
mod control;
mod convert;
mod generation;
mod handover;
mod health;
mod listeners;
mod metrics;
mod notify;
mod privileges;
mod reload;
mod reopen;
mod scrape;
mod scrape_request;
mod session_cache;
mod shm;
mod spawn;
mod startup;
mod stop;
mod supervisor;
mod ticket_keys;
mod tls;
mod upgrade;

use std::process::ExitCode;

use clap::Parser;
use rproxy_shared::errlog;
use rproxy_shared::{error, info};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(source) = &cli.convert {
        return convert::run(source);
    }
    if let Some(cli::Sub::Ctl(ctl)) = &cli.command {
        let config = ctl.config.as_ref().unwrap_or(&cli.config);
        return control::client::run(config, ctl.socket.clone(), &ctl.command);
    }
    let config = match rproxy_shared::load::load(&cli.config) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("rproxy: {e}");
            }
            let summary = format!(
                "configuration {} has {} error(s)",
                cli.config.display(),
                errs.0.len()
            );
            eprintln!("rproxy: {summary}");
            if !cli.test {
                // A new binary refusing the configuration in a hot upgrade: the old master
                // logs this and serves on.
                let first = errs.0.first().map(|e| e.to_string()).unwrap_or_default();
                handover::report_failure(&format!("{summary}: {first}"));
            }
            return ExitCode::from(1);
        }
    };
    startup::check_config_mode(&cli.config);
    if cli.test {
        for w in config.warnings() {
            eprintln!("rproxy: {}: {w}", cli.config.display());
        }
        for w in tls::expiry_warnings(&config) {
            eprintln!("rproxy: {}: warning: {w}", cli.config.display());
        }
        println!("rproxy: configuration {} ok", cli.config.display());
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    match start(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            startup::report_failure(&e);
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
    let pid_path = config.pid_file.clone();
    let pid_file = match &pid_path {
        Some(p) => Some(startup::write_pid_file(p)?),
        None => None,
    };
    let result = master.run(config);
    if let (Some(f), Some(p)) = (pid_file, &pid_path) {
        f.remove(p);
    }
    if result.is_ok() {
        info!("exiting");
    }
    result
}
