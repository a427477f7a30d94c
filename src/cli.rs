//! Command line: subcommands, flags (each also settable by an environment variable), exit codes.

use crate::config::{self, Overrides};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Quick start (self-signed certificate in front of a platform on port 8080):
  scimgate serve --config config/scimgate.example.toml --upstream http://127.0.0.1:8080
  curl --cacert /tmp/scimgate-selfsigned/cert.pem https://localhost:8443/

Validate a configuration without starting (exit 0 when valid):
  scimgate check --config /etc/scimgate/scimgate.toml

Signals: SIGHUP reloads TLS certificates; SIGTERM/SIGINT drain and exit 0.";

#[derive(Debug, Parser)]
#[command(
    name = "scimgate",
    version,
    about = "TLS-terminating gateway that serves SCIM in front of a ThingWorx-style platform and passes everything else through",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve(ConfigArgs),
    /// Validate the configuration, print every problem, and exit (0 = valid, 1 = invalid).
    Check(ConfigArgs),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Configuration file (TOML); see config/scimgate.example.toml.
    #[arg(short, long, env = "SCIMGATE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Platform URL to forward to (http:// or https://), overriding upstream.url.
    #[arg(long, env = "SCIMGATE_UPSTREAM", value_name = "URL")]
    upstream: Option<String>,
    /// Log format, overriding log.format: json or text.
    #[arg(long, env = "SCIMGATE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log level or filter, overriding log.level (e.g. info, debug, "info,scimgate=debug").
    #[arg(long, env = "SCIMGATE_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            upstream_url: self.upstream.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => match config::load(&args.config, &args.overrides()) {
            Ok(_) => {
                println!("{}: configuration OK", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_config_error(&e);
                ExitCode::from(1)
            }
        },
        Command::Serve(args) => {
            let config = match config::load(&args.config, &args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    report_config_error(&e);
                    return ExitCode::from(1);
                }
            };
            crate::logging::init(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the async runtime");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(crate::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "scimgate stopped");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// One problem per line, each starting with the setting's name, so the list reads like a to-do.
fn report_config_error(e: &config::ConfigError) {
    match e {
        config::ConfigError::Invalid(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found; nothing was started", problems.len());
        }
        other => eprintln!("{other}"),
    }
}
