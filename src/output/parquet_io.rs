//! Writer properties (one place) and atomic file creation.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("cannot write a file in {dir}: {cause}")]
    CannotWrite { dir: PathBuf, cause: io::Error },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{0}")]
    Invalid(String),
}

/// How the columns of vpop's Parquet files are compressed (`[output] compression`, and
/// `compression_level` for zstd). Floating-point columns are byte-stream-split before any
/// codec, which lets it find their repeated exponent bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// zstd at a level (1 unless `compression_level` says otherwise; negative levels are its
    /// fast modes): the smallest files, about twice the encoding time of LZ4.
    Zstd(i32),
    /// LZ4 (Parquet's `LZ4_RAW`), the default: nearly as fast to write as no compression, files
    /// a few percent larger than zstd's (more where the values carry f32 precision).
    #[default]
    Lz4,
    Snappy,
    /// No compression: the fastest to write, the largest files.
    None,
}

/// zstd's level unless `compression_level` says otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// zstd's levels (`ZSTD_minCLevel()` to `ZSTD_maxCLevel()` of zstd 1.5).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -(1 << 17)..=22;

impl Codec {
    /// Every codec (zstd at its default level), in the order error messages list them.
    pub const ALL: [Codec; 4] = [
        Codec::Zstd(DEFAULT_ZSTD_LEVEL),
        Codec::Lz4,
        Codec::Snappy,
        Codec::None,
    ];

    /// A codec by its name in any case (as `[output] compression` gives it), zstd at its
    /// default level.
    pub fn parse(s: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }

    /// The same codec at `level`: zstd only, at a level zstd accepts.
    pub fn with_level(self, level: i32) -> Result<Codec, String> {
        match self {
            Codec::Zstd(_) if ZSTD_LEVELS.contains(&level) => Ok(Codec::Zstd(level)),
            Codec::Zstd(_) => Err(format!(
                "zstd level {level} is out of range ({}..={})",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )),
            other => Err(format!(
                "a compression level is for zstd, not {}",
                other.name()
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Zstd(_) => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Snappy => "snappy",
            Codec::None => "none",
        }
    }

    fn compression(self) -> Compression {
        match self {
            // A level out of zstd's range (not from `with_level`) is taken as its nearest end.
            Codec::Zstd(level) => Compression::ZSTD(
                ZstdLevel::try_new(level.clamp(*ZSTD_LEVELS.start(), *ZSTD_LEVELS.end()))
                    .expect("a level in zstd's range"),
            ),
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::Snappy => Compression::SNAPPY,
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// String columns whose row groups keep their minimum and maximum: the arm, the status, and a
/// dataset run's subject `ID` (a part holds a contiguous run of the dataset's subjects).
pub const PRUNING_COLUMNS: [&str; 3] = ["arm", "status", "ID"];

/// The properties of every Parquet file vpop writes: Parquet 2.0, `created_by` naming the
/// engine, the given key-value metadata, and per column of `schema`:
/// - floating-point columns (metrics, covariates, parameters, f32 profiles): no dictionary (their
///   values are nearly all distinct, so a dictionary is built and thrown away for every page),
///   byte-stream-split under any codec, no statistics (a row group is an arm of a part: the
///   minimum and maximum of a metric over it prune nothing);
/// - f16 profile items (fixed-length byte arrays): dictionary-encoded (DuckDB 2.0.1 does not
///   read byte-stream-split half floats), no statistics;
/// - integer columns (`subject_id`): delta-encoded, no dictionary, chunk statistics (they
///   locate a subject's part and row group);
/// - dictionary columns: dictionary-encoded as Arrow holds them; chunk statistics on those a
///   reader prunes row groups by ([`PRUNING_COLUMNS`]: `arm` is constant over a row group,
///   `status` is `ok` over most of them, so `status <> 'ok'` skips those), none on the others
///   (categorical covariates: every row group holds every level in random order, so its
///   minimum and maximum prune nothing, and computing them compares every row's string).
pub fn writer_properties(
    schema: &arrow_schema::Schema,
    metadata: Vec<(String, String)>,
    max_row_group_rows: usize,
    codec: Codec,
) -> WriterProperties {
    use parquet::basic::{Encoding, Type};
    let kv = metadata
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect::<Vec<_>>();
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_created_by(format!("vpop {}", env!("CARGO_PKG_VERSION")))
        .set_compression(codec.compression())
        .set_max_row_group_row_count(Some(max_row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) });
    // A schema Parquet cannot hold is refused by the writer itself, with its own message.
    if let Ok(descr) = parquet::arrow::ArrowSchemaConverter::new().convert(schema) {
        for col in descr.columns() {
            let path = col.path().clone();
            match col.physical_type() {
                Type::FLOAT | Type::DOUBLE => {
                    b = b
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
                    if codec != Codec::None {
                        b = b.set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
                    }
                }
                Type::INT64 | Type::INT32 => {
                    b = b
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
                }
                Type::FIXED_LEN_BYTE_ARRAY
                    if col.logical_type_ref() == Some(&parquet::basic::LogicalType::Float16) =>
                {
                    b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
                }
                Type::BYTE_ARRAY if !PRUNING_COLUMNS.contains(&col.name()) => {
                    b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
                }
                _ => {}
            }
        }
    }
    b.build()
}

/// A file written under a temporary name beside its destination and renamed into place on
/// [`AtomicFile::commit`]. Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Writes under `.NAME.PID.tmp` beside `dest`.
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile, OutputError> {
        Self::create_as(dest.as_ref(), &std::process::id().to_string())
    }

    /// Writes under `.NAME.TAG.PID.tmp` beside `dest`: a writer that tags its temporary files
    /// (a shard of a dataset) can tell them from those of other writers in the same directory.
    pub fn create_tagged(dest: impl AsRef<Path>, tag: &str) -> Result<AtomicFile, OutputError> {
        Self::create_as(dest.as_ref(), &format!("{tag}.{}", std::process::id()))
    }

    fn create_as(dest: &Path, suffix: &str) -> Result<AtomicFile, OutputError> {
        let dest = dest.to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.{suffix}.tmp"));
        // A file that cannot be created is the directory's problem (read-only, no space, no
        // permission): name the directory, not the temporary file.
        let file = File::create(&tmp).map_err(|cause| OutputError::CannotWrite {
            dir: match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
            cause,
        })?;
        Ok(AtomicFile {
            tmp,
            dest,
            file: Some(file),
        })
    }

    /// Writes `bytes` to `dest` atomically.
    pub fn write(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<PathBuf, OutputError> {
        use std::io::Write;
        let mut f = AtomicFile::create(dest)?;
        let tmp = f.tmp.clone();
        f.file()
            .write_all(bytes)
            .map_err(|cause| OutputError::Io { path: tmp, cause })?;
        f.commit()
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Takes the file out (e.g. to hand it to a writer that consumes it); commit with
    /// [`AtomicFile::commit_path`] afterwards.
    pub fn take_file(&mut self) -> File {
        self.file.take().expect("file is present until commit")
    }

    /// Flushes to disk and renames into place.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|cause| OutputError::Io {
                path: self.tmp.clone(),
                cause,
            })?;
        }
        self.commit_path()
    }

    /// Renames into place (the file must already be closed and synced).
    pub fn commit_path(mut self) -> Result<PathBuf, OutputError> {
        std::fs::rename(&self.tmp, &self.dest).map_err(|cause| OutputError::Io {
            path: self.dest.clone(),
            cause,
        })?;
        self.tmp = PathBuf::new();
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
