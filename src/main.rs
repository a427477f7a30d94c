use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    scimgate::install_crypto_provider();
    scimgate::cli::run(scimgate::cli::Cli::parse())
}
