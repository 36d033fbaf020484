//! Command implementations behind the `vpop` binary. Each command is a clap `Args` struct and a
//! `run` function; errors are reported with their context at this edge.

pub mod bench;
pub mod devices;
pub mod models;
pub mod populations;
pub mod report;
pub mod run;
pub mod sample;
pub mod sensitivity;
pub mod simulate;

use std::path::Path;

use anyhow::Context;

use crate::model::{library, Model};

/// A model given as a library name or as a path to a model file.
pub fn load_model(name_or_path: &str) -> anyhow::Result<Model> {
    if let Some(m) = library::get(name_or_path) {
        return Model::parse(m.name, m.source).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let path = Path::new(name_or_path);
    if path.exists() {
        let text = match crate::diag::read_text(path) {
            Err(crate::diag::ReadError::Text(d)) => anyhow::bail!("{d}"),
            r => r.with_context(|| format!("reading {}", path.display()))?,
        };
        let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
        return Model::parse(&path.display().to_string(), &text).map_err(|e| {
            let e = anyhow::anyhow!("{e}");
            match ext.eq_ignore_ascii_case("csv") {
                true => run::other_kind(path, run::FileKind::Simulate, e),
                false => e,
            }
        });
    }
    let known: Vec<&str> = library::names().collect();
    anyhow::bail!(
        "'{name_or_path}' is neither a built-in model nor a model file; built-in models: {}{}",
        known.join(", "),
        crate::diag::did_you_mean(name_or_path, known.iter().copied())
    )
}

/// A population given as a file or as a built-in name: a path that exists is read, otherwise
/// the name of a built-in population is taken.
pub fn load_population(name_or_path: &Path) -> anyhow::Result<crate::population::Population> {
    use crate::population::{library as populations, Population};
    if name_or_path.exists() {
        return Population::load(name_or_path)
            .map_err(|e| run::other_kind(name_or_path, run::FileKind::Population, e));
    }
    if let Some(p) = name_or_path.to_str().and_then(populations::get) {
        return Ok(Population::parse(&p.file_name(), p.source)?);
    }
    let known: Vec<&str> = populations::names().collect();
    let hint = name_or_path.to_str().map_or(String::new(), |n| {
        crate::diag::did_you_mean(n, known.iter().copied())
    });
    anyhow::bail!(
        "'{}' is neither a population file nor a built-in population; built-in populations: {}{hint}",
        name_or_path.display(),
        known.join(", ")
    )
}

/// A count of at least 1, for clap (`--subjects`, `--chunk-size`).
pub(crate) fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}
