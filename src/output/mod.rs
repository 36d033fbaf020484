//! Arrow schema, Parquet writing, provenance metadata, manifests and shards.
//!
//! Every Parquet file vpop writes gets its properties from [`writer_properties`] and reaches its
//! final name only through an atomic rename ([`AtomicFile`]), so a reader never sees a half file.

pub mod dataset;
pub mod parquet_io;

pub use dataset::{DatasetWriter, InputHash, Manifest, PartEntry, RunIdentity, Shard};
pub mod plot;

pub use parquet_io::{writer_properties, AtomicFile, Codec, OutputError, DEFAULT_ZSTD_LEVEL};

/// A value for a printed table: `decimals` places, or in scientific notation from 1e9 up (so
/// that 1e300 does not print as 301 digits); NaN and infinities as Rust writes them.
pub fn table_value(x: f64, decimals: usize) -> String {
    // Scientific where fixed decimals would hide the value's digits: large values, and
    // small ones (a concentration of 3.8e-7 is not 0.000000).
    if x.is_finite() && (x.abs() >= 1e9 || (x != 0.0 && x.abs() < 1e-3)) {
        format!("{x:.decimals$e}")
    } else {
        format!("{x:.decimals$}")
    }
}

#[cfg(test)]
mod table_value_tests {
    #[test]
    fn large_and_small_values_are_scientific() {
        use super::table_value;
        assert_eq!(table_value(12.345678, 4), "12.3457");
        assert_eq!(table_value(-999_999_999.0, 1), "-999999999.0");
        assert_eq!(table_value(1e300, 4), "1.0000e300");
        assert_eq!(table_value(f64::NAN, 4), "NaN");
        assert_eq!(table_value(f64::NEG_INFINITY, 4), "-inf");
        assert_eq!(table_value(3.820609e-7, 6), "3.820609e-7");
        assert_eq!(table_value(-0.000381123, 4), "-3.8112e-4");
        assert_eq!(table_value(0.0, 4), "0.0000");
        assert_eq!(table_value(0.001, 4), "0.0010");
    }
}
