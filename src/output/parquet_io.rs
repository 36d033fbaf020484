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
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{0}")]
    Invalid(String),
}

/// The properties of every Parquet file vpop writes: Parquet 2.0, zstd level 3, chunk
/// statistics, `created_by` naming the engine, and the given key-value metadata.
pub fn writer_properties(
    metadata: Vec<(String, String)>,
    max_row_group_rows: usize,
) -> WriterProperties {
    let kv = metadata
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect::<Vec<_>>();
    WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_created_by(format!("vpop {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("zstd level 3 is valid"),
        ))
        .set_max_row_group_row_count(Some(max_row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(if kv.is_empty() { None } else { Some(kv) })
        .build()
}

/// A file written under a temporary name beside its destination and renamed into place on
/// [`AtomicFile::commit`]. Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile, OutputError> {
        let dest = dest.as_ref().to_path_buf();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).map_err(|cause| OutputError::Io {
            path: tmp.clone(),
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
