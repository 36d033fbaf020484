//! `vpop populations [NAME]`.

use crate::population::library;

#[derive(clap::Args, Debug)]
pub struct PopulationsArgs {
    /// Print this population's file instead of the list.
    pub name: Option<String>,
}

pub fn run(args: &PopulationsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        let p = library::get(name).ok_or_else(|| {
            let hint = crate::diag::did_you_mean(name, library::names());
            anyhow::anyhow!("no built-in population '{name}'; `vpop populations` lists them{hint}")
        })?;
        print!("{}", p.source);
        return Ok(());
    }
    for p in library::POPULATIONS {
        println!("{:<20} {}", p.name, p.description());
    }
    Ok(())
}
