use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    scimgate::malloc_arenas::limit();
    scimgate::install_crypto_provider();
    scimgate::cli::run(scimgate::cli::Cli::parse())
}
