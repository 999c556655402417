//! The `firedrill` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() {
    let cli = firedrill::cli::Cli::parse();
    std::process::exit(firedrill::app::main(cli));
}
