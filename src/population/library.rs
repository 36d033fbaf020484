//! The populations shipped with vpop (`populations/*.toml`), embedded in the binary so that a
//! trial spec can name one from anywhere: `[population] library = "adult_healthy"`. `vpop
//! populations` lists them; `vpop sample NAME` samples one.

/// A built-in population file.
#[derive(Debug, Clone, Copy)]
pub struct LibraryPopulation {
    pub name: &'static str,
    pub source: &'static str,
}

impl LibraryPopulation {
    /// The file's `description`.
    pub fn description(&self) -> String {
        super::Population::parse(&self.file_name(), self.source)
            .map(|p| p.description)
            .unwrap_or_default()
    }

    /// The name errors and provenance give the embedded file.
    pub fn file_name(&self) -> String {
        format!("populations/{}.toml (built in)", self.name)
    }
}

macro_rules! library {
    ($($name:literal),* $(,)?) => {
        /// Every built-in population, in listing order.
        pub const POPULATIONS: &[LibraryPopulation] = &[
            $(LibraryPopulation {
                name: $name,
                source: include_str!(concat!("../../populations/", $name, ".toml")),
            },)*
        ];
    };
}

library!(
    "adult_healthy",
    "renal_impairment",
    "hepatic_impairment",
    "obese_adults",
    "cyp_phenotypes",
    "paediatric"
);

/// A built-in population by name.
pub fn get(name: &str) -> Option<&'static LibraryPopulation> {
    POPULATIONS.iter().find(|p| p.name == name)
}

/// The names of the built-in populations.
pub fn names() -> impl Iterator<Item = &'static str> {
    POPULATIONS.iter().map(|p| p.name)
}

/// The built-in population a path names by its file stem (`populations/adult_healthy.toml` →
/// `adult_healthy`), for the hint of an error about a missing file.
pub fn named_by_path(path: &str) -> Option<&'static LibraryPopulation> {
    let stem = std::path::Path::new(path).file_stem()?.to_str()?;
    get(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_population_is_built_in_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("populations");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into())
            })
            .collect();
        shipped.sort();
        let mut built_in: Vec<String> = names().map(String::from).collect();
        built_in.sort();
        assert_eq!(shipped, built_in);
        for p in POPULATIONS {
            let file = std::fs::read_to_string(dir.join(format!("{}.toml", p.name))).unwrap();
            assert_eq!(p.source, file);
            let parsed = super::super::Population::parse(&p.file_name(), p.source).unwrap();
            assert!(!parsed.parameter_names().is_empty() || !parsed.covariate_names().is_empty());
            assert!(!p.description().is_empty(), "{}", p.name);
        }
    }
}
