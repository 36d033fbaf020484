//! The built-in model library: DSL files embedded in the binary. `vpop models` lists them,
//! `vpop models NAME` prints one; trial specs use them with `library = "NAME"`.

/// A built-in model.
#[derive(Debug, Clone, Copy)]
pub struct LibraryModel {
    pub name: &'static str,
    pub source: &'static str,
}

impl LibraryModel {
    /// The first comment line of the file.
    pub fn description(&self) -> &'static str {
        self.source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix('#'))
            .map(str::trim)
            .unwrap_or("")
    }
}

macro_rules! library {
    ($($name:literal),* $(,)?) => {
        /// Every built-in model, in listing order.
        pub const MODELS: &[LibraryModel] = &[
            $(LibraryModel { name: $name, source: include_str!(concat!($name, ".vpm")) },)*
        ];
    };
}

library!(
    "one_cmt_iv",
    "one_cmt_oral",
    "two_cmt_iv",
    "two_cmt_oral",
    "three_cmt_iv",
    "three_cmt_oral",
    "transit_oral",
    "mm_elim_oral",
    "tmdd_full",
    "tmdd_qss",
    "idr1",
    "idr2",
    "idr3",
    "idr4",
    "idr_circadian",
    "effect_emax",
    "ddi_ritonavir_cyp3a",
);

/// A built-in model by name.
pub fn get(name: &str) -> Option<&'static LibraryModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// The names of the built-in models.
pub fn names() -> impl Iterator<Item = &'static str> {
    MODELS.iter().map(|m| m.name)
}
