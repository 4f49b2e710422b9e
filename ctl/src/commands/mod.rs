//! One module per command group, each with a variant in
//! [`crate::cli::Command`].

pub mod bgp;
pub mod diags;
pub mod ipam;
pub mod policy;
pub mod resources;
pub mod version;

use crate::cli::{Cli, Command, DocsPage};
use crate::client;

/// Runs the parsed command; returns the exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global;
    match cli.command {
        Command::Version(a) => version::run(&g, &a).await,
        Command::Diags(a) => diags::run(&g, &a).await,
        Command::Docs(a) => {
            let page = match a.page {
                DocsPage::Cli => crate::docs::cli_reference(),
                DocsPage::Resources => crate::docs::resources_reference(),
            };
            print!("{page}");
            Ok(crate::exit::OK)
        }
        Command::Get(a) => resources::get(&g, &a).await,
        Command::Apply(a) => resources::write(&g, &a, resources::Mode::Apply).await,
        Command::Create(a) => {
            let mode = resources::Mode::Create {
                skip_exists: a.skip_exists,
            };
            resources::write(&g, &a.write, mode).await
        }
        Command::Replace(a) => resources::write(&g, &a, resources::Mode::Replace).await,
        Command::Delete(a) => resources::delete(&g, &a).await,
        Command::Label(a) => resources::label(&g, &a).await,
        Command::Ipam(c) => ipam::run(&client::connect(&g).await?, c).await,
        Command::Policy(c) => policy::run(&g, c).await,
        Command::Node(crate::cli::NodeCommand::Status(a)) => bgp::node_status(&g, &a).await,
        Command::Bgp(c) => bgp::run(&g, c).await,
    }
}
