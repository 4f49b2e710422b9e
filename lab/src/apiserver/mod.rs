//! The Kubernetes API emulator (`margay-lab apiserver`). Placeholder: the API
//! emulator issue implements it.

/// Flags of `margay-lab apiserver`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable), e.g. 127.0.0.1:0.
    #[arg(long, required = true)]
    pub listen: Vec<String>,
}

/// Runs the API server until it is told to stop.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the API emulator is not built yet")
}
