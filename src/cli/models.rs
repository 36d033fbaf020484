//! `vpop models [NAME]`.

use crate::model::{library, Model};

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Print this model's source instead of the list.
    pub name: Option<String>,
}

pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        let m = library::get(name).ok_or_else(|| {
            anyhow::anyhow!("no built-in model '{name}'; `vpop models` lists them")
        })?;
        print!("{}", m.source);
        return Ok(());
    }
    for m in library::MODELS {
        let params = match Model::parse(m.name, m.source) {
            Ok(model) => model
                .params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("(does not parse: {e})"),
        };
        println!("{:<20} {}", m.name, m.description());
        println!("{:<20} parameters: {params}", "");
    }
    Ok(())
}
