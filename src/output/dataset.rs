//! A Parquet dataset directory: `part-NNNNN.parquet` files and a JSON manifest, written so that
//! a killed run leaves no partial file and a rerun resumes where it stopped.
//!
//! Every part is written under a temporary name and renamed; the manifest is rewritten
//! atomically after each part. Reopening a directory whose manifest describes the same run
//! (same identity: spec hash, seed, subjects, chunk size, shard) skips the parts already there;
//! any other manifest is an error unless the caller asks to overwrite. Parquet files carry no
//! wall-clock time, so a resumed dataset is byte-identical to an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{writer_properties, AtomicFile, Codec, OutputError};

/// What makes two runs the same run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub spec_hash: String,
    pub seed: u64,
    pub subjects: u64,
    pub chunk_size: u64,
    /// `k/N` (1-based) or `1/1`.
    pub shard: String,
}

/// One written part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub part: u64,
    pub file: String,
    pub first_subject: u64,
    pub subjects: u64,
    pub rows: u64,
    pub bytes: u64,
    /// BLAKE3 of the file's bytes (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// SHA-256 of the file's bytes (hex), as manifests written before BLAKE3 recorded it:
    /// still checked when such a run is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The manifest of a dataset directory (one per shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub engine: String,
    pub identity: RunIdentity,
    pub status: String,
    pub arms: Vec<String>,
    pub columns: Vec<String>,
    pub provenance: BTreeMap<String, String>,
    pub parts: Vec<PartEntry>,
}

/// Writes the parts of one run (or one shard of it).
pub struct DatasetWriter {
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
    metadata: Vec<(String, String)>,
    schema: SchemaRef,
    codec: Codec,
}

/// The manifest file name of a shard (`_manifest.json` when unsharded).
pub fn manifest_name(shard: &str) -> String {
    if shard == "1/1" {
        "_manifest.json".to_string()
    } else {
        format!("_manifest-shard-{}.json", shard.replace('/', "-of-"))
    }
}

pub fn part_name(part: u64) -> String {
    format!("part-{part:05}.parquet")
}

/// A recorded part if it is on disk with the recorded size and hash: BLAKE3, or SHA-256 in
/// manifests written before BLAKE3 (such a part comes back with its BLAKE3 recorded too). A part
/// with neither is not trusted.
fn verified(dir: &Path, mut p: PartEntry) -> Option<PartEntry> {
    let path = dir.join(&p.file);
    if !std::fs::metadata(&path).is_ok_and(|md| md.len() == p.bytes) {
        return None;
    }
    let mut f = std::fs::File::open(&path).ok()?;
    let mut b3 = blake3::Hasher::new();
    match p.sha256.clone() {
        Some(want) if p.blake3.is_none() => {
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                use std::io::Read;
                let n = f.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                b3.update(&buf[..n]);
            }
            (format!("{:x}", sha.finalize()) == want).then_some(())?;
            p.blake3 = Some(b3.finalize().to_hex().to_string());
            Some(p)
        }
        _ => {
            let want = p.blake3.as_deref()?;
            std::io::copy(&mut f, &mut b3).ok()?;
            (b3.finalize().to_hex().as_str() == want).then_some(p)
        }
    }
}

/// A writer that hashes what passes through it (so a part is hashed as it is written, not
/// read back).
struct Hashing<W> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl DatasetWriter {
    /// Opens (creating if needed) a dataset directory for a run. Returns the writer and the
    /// parts already complete from an earlier attempt of the same run.
    pub fn open(
        dir: &Path,
        identity: RunIdentity,
        arms: Vec<String>,
        schema: SchemaRef,
        provenance: BTreeMap<String, String>,
        codec: Codec,
        overwrite: bool,
    ) -> Result<(DatasetWriter, Vec<PartEntry>), OutputError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| OutputError::Io {
                path: path.clone(),
                cause,
            }
        };
        if dir.exists() && !dir.is_dir() {
            return Err(OutputError::Invalid(format!(
                "{} is a file, not a directory: choose an output directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let manifest_path = dir.join(manifest_name(&identity.shard));
        // Temporary files of a killed run are garbage.
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut done = Vec::new();
        if manifest_path.exists() {
            let text = std::fs::read_to_string(&manifest_path).map_err(io(&manifest_path))?;
            let parsed: Result<Manifest, _> = serde_json::from_str(&text);
            let unreadable = parsed.as_ref().err().map(|e| e.to_string());
            let old = parsed.ok();
            match old {
                Some(m) if m.identity == identity && m.columns == columns && !overwrite => {
                    // A part counts as done only if its bytes hash to what was recorded.
                    use rayon::prelude::*;
                    let kept: Vec<Option<PartEntry>> = m
                        .parts
                        .into_par_iter()
                        .map(|p| verified(dir, p))
                        .collect();
                    done.extend(kept.into_iter().flatten());
                }
                _ if overwrite => {
                    let old_parts = old.map(|m| m.parts).unwrap_or_default();
                    for p in old_parts {
                        let _ = std::fs::remove_file(dir.join(&p.file));
                    }
                }
                None => {
                    return Err(OutputError::Invalid(format!(
                        "{}: the run's manifest cannot be read ({}), so its parts cannot be \
                         trusted; pass --overwrite to write the run anew, or choose another \
                         output directory",
                        manifest_path.display(),
                        unreadable.unwrap_or_default()
                    )))
                }
                _ => {
                    return Err(OutputError::Invalid(format!(
                        "{} holds the output of a different run (another spec, seed, subject count, chunk size or shard); \
                         choose another output directory or pass --overwrite",
                        dir.display()
                    )))
                }
            }
        } else if !overwrite && identity.shard == "1/1" {
            // Parts without a manifest of ours: refuse to mix runs (shards share a directory).
            let foreign = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("part-"));
            if foreign {
                return Err(OutputError::Invalid(format!(
                    "{} already holds parts of another run; pass --overwrite",
                    dir.display()
                )));
            }
        }
        // The shard is in the manifest, not in the parts: a part is the same file whichever
        // shard wrote it.
        let metadata: Vec<(String, String)> = provenance
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let manifest = Manifest {
            engine: format!("vpop {}", env!("CARGO_PKG_VERSION")),
            identity,
            status: "running".into(),
            arms,
            columns,
            provenance,
            parts: done.clone(),
        };
        let mut w = DatasetWriter {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest,
            metadata,
            schema,
            codec,
        };
        w.save_manifest()?;
        Ok((w, done))
    }

    fn save_manifest(&mut self) -> Result<(), OutputError> {
        self.manifest.parts.sort_by_key(|p| p.part);
        let text = serde_json::to_string_pretty(&self.manifest)
            .map_err(|e| OutputError::Invalid(e.to_string()))?;
        let mut f = AtomicFile::create(&self.manifest_path)?;
        use std::io::Write;
        f.file()
            .write_all(text.as_bytes())
            .map_err(|cause| OutputError::Io {
                path: self.manifest_path.clone(),
                cause,
            })?;
        f.commit()?;
        Ok(())
    }

    /// Writes one part: each batch becomes its own row group (one per arm).
    pub fn write_part(
        &mut self,
        part: u64,
        first_subject: u64,
        subjects: u64,
        batches: &[RecordBatch],
    ) -> Result<PartEntry, OutputError> {
        let entry = self
            .part_writer()
            .write(part, first_subject, subjects, batches)?;
        self.record_part(entry.clone())?;
        Ok(entry)
    }

    /// A handle that writes part files from any thread; [`DatasetWriter::record_part`] then
    /// adds each to the manifest.
    pub fn part_writer(&self) -> PartWriter {
        PartWriter {
            dir: self.dir.clone(),
            metadata: self.metadata.clone(),
            schema: self.schema.clone(),
            codec: self.codec,
        }
    }

    /// Adds a written part to the manifest (saved atomically).
    pub fn record_part(&mut self, entry: PartEntry) -> Result<(), OutputError> {
        self.manifest.parts.push(entry);
        self.save_manifest()
    }

    /// Marks the run complete.
    pub fn finish(mut self) -> Result<Manifest, OutputError> {
        self.manifest.status = "complete".into();
        self.save_manifest()?;
        Ok(self.manifest)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes part files of one dataset (cheap to clone; used from several threads).
#[derive(Clone)]
pub struct PartWriter {
    dir: PathBuf,
    metadata: Vec<(String, String)>,
    schema: SchemaRef,
    codec: Codec,
}

impl PartWriter {
    /// Writes one part file atomically: each batch becomes its own row group (one per arm).
    pub fn write(
        &self,
        part: u64,
        first_subject: u64,
        subjects: u64,
        batches: &[RecordBatch],
    ) -> Result<PartEntry, OutputError> {
        let name = part_name(part);
        let path = self.dir.join(&name);
        let mut tmp = AtomicFile::create(&path)?;
        let props = writer_properties(&self.schema, self.metadata.clone(), usize::MAX, self.codec);
        // Hashed below the buffer, in updates of up to 1 MiB (BLAKE3 hashes several of its
        // 1 KiB chunks at once only in large updates).
        let out = std::io::BufWriter::with_capacity(
            1 << 20,
            Hashing {
                inner: tmp.take_file(),
                hash: blake3::Hasher::new(),
            },
        );
        let mut w = ArrowWriter::try_new(out, self.schema.clone(), Some(props))?;
        let mut rows = 0u64;
        for b in batches {
            if b.schema() != self.schema {
                return Err(OutputError::Invalid(
                    "a batch does not match the dataset schema".into(),
                ));
            }
            w.write(b)?;
            w.flush()?;
            rows += b.num_rows() as u64;
        }
        let io = |cause| OutputError::Io {
            path: path.clone(),
            cause,
        };
        let out = w
            .into_inner()?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        let blake3 = out.hash.finalize().to_hex().to_string();
        // Not synced to disk: a part is trusted on resumption only if its bytes still hash to
        // what the manifest recorded (see `DatasetWriter::open`), so a part lost or torn by a
        // crash is written again; forcing every part to disk cost a fifth of the pipeline.
        let file = out.inner;
        let bytes = file.metadata().map_err(io)?.len();
        drop(file);
        tmp.commit_path()?;
        Ok(PartEntry {
            part,
            file: name,
            first_subject,
            subjects,
            rows,
            bytes,
            blake3: Some(blake3),
            sha256: None,
        })
    }
}

/// Streams one column of one row group (an arm) from each part file in turn, in batches.
pub fn for_each_column_batch(
    files: &[PathBuf],
    row_group: usize,
    column: &str,
    f: &mut dyn FnMut(&dyn arrow_array::Array) -> Result<(), String>,
) -> Result<(), String> {
    for_each_batch(files, row_group, &[column], &mut |b| {
        f(b.column(0).as_ref())
    })
}

/// Streams the named columns of one row group (an arm) from each part file in turn, in
/// batches that hold just those columns (find them by name).
pub fn for_each_batch(
    files: &[PathBuf],
    row_group: usize,
    columns: &[&str],
    f: &mut dyn FnMut(&arrow_array::RecordBatch) -> Result<(), String>,
) -> Result<(), String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    for file in files {
        let fh = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(fh)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let idx = columns
            .iter()
            .map(|c| builder.schema().index_of(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if row_group >= builder.metadata().num_row_groups() {
            continue;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(vec![row_group])
            .with_batch_size(65_536)
            .build()
            .map_err(|e| e.to_string())?;
        for b in reader {
            f(&b.map_err(|e| e.to_string())?)?;
        }
    }
    Ok(())
}

/// A shard `k/N` of a run: 1-based k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { k: 1, n: 1 };

    /// Parses `k/N` with 1 ≤ k ≤ N.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard '{s}': expected k/N, e.g. 3/16"))?;
        let (k, n): (u64, u64) = (
            k.trim()
                .parse()
                .map_err(|_| format!("shard '{s}': k is not a whole number"))?,
            n.trim()
                .parse()
                .map_err(|_| format!("shard '{s}': N is not a whole number"))?,
        );
        if n == 0 || k == 0 || k > n {
            return Err(format!("shard '{s}': need 1 ≤ k ≤ N"));
        }
        Ok(Shard { k, n })
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.k, self.n)
    }

    /// The chunks `[a, b)` of this shard when a run has `n_chunks` chunks: contiguous,
    /// disjoint, covering all chunks over k = 1..N, balanced to within one chunk.
    pub fn chunk_range(&self, n_chunks: u64) -> (u64, u64) {
        let a = ((self.k - 1) as u128 * n_chunks as u128 / self.n as u128) as u64;
        let b = (self.k as u128 * n_chunks as u128 / self.n as u128) as u64;
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_chunks() {
        for n_chunks in [0u64, 1, 2, 7, 100, 1001] {
            for n in [1u64, 2, 3, 8, 16, 1000] {
                let mut next = 0;
                for k in 1..=n {
                    let (a, b) = Shard { k, n }.chunk_range(n_chunks);
                    assert_eq!(a, next, "N={n} k={k}");
                    assert!(b >= a && b - a <= n_chunks / n + 1);
                    next = b;
                }
                assert_eq!(next, n_chunks);
            }
        }
        assert!(
            Shard::parse("0/4").is_err()
                && Shard::parse("5/4").is_err()
                && Shard::parse("x").is_err()
        );
        assert_eq!(Shard::parse("3/16").unwrap(), Shard { k: 3, n: 16 });
    }
}
