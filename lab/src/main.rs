use clap::{Parser, Subcommand};

/// Build and drive Margay lab clusters made of network namespaces.
#[derive(Debug, Parser)]
#[command(name = "margay-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernetes API emulator.
    Apiserver(margay_lab::apiserver::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Apiserver(args) => margay_lab::apiserver::run(args),
    }
}
