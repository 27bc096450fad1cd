//! `ztunctl`: parse arguments, run one command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ztunctl::Cli::parse();
    match ztunctl::run(&cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztunctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
