use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use margay_bench::report::{self, RunInfo};
use margay_bench::{Context, registry};

/// Run Margay's benchmarks; every figure is a ratio against a comparator
/// measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "margay-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the benchmarks.
    List,
    /// Run benchmarks (all when none is named).
    Run {
        names: Vec<String>,
        /// Replace each benchmark's section in this Markdown file.
        #[arg(long)]
        write_docs: Option<PathBuf>,
        /// Short runs, to check the harness rather than to measure.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::List => {
            for b in registry() {
                println!("{:<24} {}", b.name, b.about);
            }
        }
        Command::Run {
            names,
            write_docs,
            quick,
        } => {
            let all = registry();
            let selected: Vec<_> = if names.is_empty() {
                all
            } else {
                names
                    .iter()
                    .map(|n| {
                        all.iter().find(|b| b.name == n).copied().with_context(|| {
                            format!("no benchmark named {n:?} (see `margay-bench list`)")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let work = tempfile::tempdir()?;
            let ctx = Context {
                quick,
                work_dir: work.path().to_path_buf(),
            };
            let info = RunInfo::current();
            let mut failed = Vec::new();
            for b in selected {
                eprintln!("running {} ...", b.name);
                match (b.run)(&ctx) {
                    Ok(figures) => {
                        print!("{}", report::terminal(b.name, &figures));
                        if let Some(path) = &write_docs {
                            let doc = std::fs::read_to_string(path)
                                .unwrap_or_else(|_| "# Performance\n".into());
                            let section = report::section(b.name, b.about, &figures, &info);
                            std::fs::write(path, report::splice(&doc, b.name, &section))
                                .with_context(|| format!("writing {}", path.display()))?;
                        }
                    }
                    Err(e) => {
                        eprintln!("{} failed: {e:#}", b.name);
                        failed.push(b.name);
                    }
                }
            }
            if !failed.is_empty() {
                bail!("benchmarks failed: {}", failed.join(", "));
            }
        }
    }
    Ok(())
}
