//! Arrow schema, Parquet writing, provenance metadata, manifests and shards.
//!
//! Every Parquet file vpop writes gets its properties from [`writer_properties`] and reaches its
//! final name only through an atomic rename ([`AtomicFile`]), so a reader never sees a half file.

pub mod dataset;
pub mod parquet_io;

pub use dataset::{DatasetWriter, Manifest, PartEntry, RunIdentity, Shard};
pub mod plot;

pub use parquet_io::{writer_properties, AtomicFile, Codec, OutputError, DEFAULT_ZSTD_LEVEL};
