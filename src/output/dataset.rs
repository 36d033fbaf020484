//! A Parquet dataset directory: `part-NNNNN.parquet` files and a JSON manifest, written so that
//! a killed run leaves no partial file and a rerun resumes where it stopped.
//!
//! Every part is written under a temporary name tagged with its shard and renamed; the
//! manifest is rewritten atomically after each part. Shards of one run share a directory, and
//! nothing else does: opening it, every manifest there must describe the same run (identity:
//! spec and input files' hash, seed, subjects, chunk size; the same columns, backend and
//! precision), and the parts already recorded by any of them are skipped; any other manifest,
//! or a part no manifest of the run accounts for, is an error unless the caller asks to
//! overwrite. Only file names of vpop's own pattern, inside the directory, are ever read from a
//! manifest or removed (and, with another run's files, its report folders). Parquet files
//! carry no wall-clock time, so a resumed dataset is byte-identical to an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{writer_properties, AtomicFile, Codec, OutputError};

/// The folders `vpop report` draws a run's charts in by default (the second for a run not
/// finished): an overwrite that removes another run removes its charts too.
pub const REPORT_DIRS: [&str; 2] = ["_report", "_report-partial"];

/// What makes two runs the same run (with the shard, which of its parts a manifest holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// One hash of every input together (spec, model, population, datasets, records).
    pub spec_hash: String,
    pub seed: u64,
    pub subjects: u64,
    pub chunk_size: u64,
    /// `k/N` (1-based) or `1/1`.
    pub shard: String,
    /// Each input's own hash, so that a run refused for other inputs is told which differ
    /// (`spec_hash` decides; manifests written before these were recorded have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputHash>,
}

/// One file a run reads, by what it is to the run, with its BLAKE3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputHash {
    /// What the file is to the run: `trial spec`, `model`, `population`, `dataset`,
    /// `records of arm NAME`.
    pub input: String,
    /// Its path as the run read it (a built-in model's or population's name).
    pub file: String,
    /// BLAKE3 of its text (hex).
    pub blake3: String,
}

impl InputHash {
    pub fn of_text(input: impl Into<String>, file: impl Into<String>, text: &str) -> Self {
        InputHash {
            input: input.into(),
            file: file.into(),
            blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
        }
    }
}

/// Which inputs of `ours` differ from `theirs`, said for a message: `another model (m.vpm)`,
/// and inputs only one of the runs reads. `None` where either records no inputs (a manifest
/// from before they were recorded).
fn differing_inputs(ours: &[InputHash], theirs: &[InputHash]) -> Option<Vec<String>> {
    if ours.is_empty() || theirs.is_empty() {
        return None;
    }
    let mut said = Vec::new();
    for t in theirs {
        match ours.iter().find(|o| o.input == t.input) {
            Some(o) if o.blake3 != t.blake3 => said.push(if o.file == t.file {
                format!("another {} ({})", t.input, t.file)
            } else {
                format!("another {} ({}; this run: {})", t.input, t.file, o.file)
            }),
            Some(_) => {}
            None => said.push(format!("a {} ({}) this run does not read", t.input, t.file)),
        }
    }
    for o in ours {
        if !theirs.iter().any(|t| t.input == o.input) {
            said.push(format!("no {} (this run reads {})", o.input, o.file));
        }
    }
    Some(said)
}

/// For manifests without [`RunIdentity::inputs`]: which of the spec, model and population
/// their provenance (which holds their text) shows to differ.
fn differing_sources(ours: &Manifest, theirs: &Manifest) -> Vec<String> {
    [
        ("vpop.trial_spec", "trial spec"),
        ("vpop.model_source", "model"),
        ("vpop.population_source", "population"),
    ]
    .into_iter()
    .filter(|(key, _)| ours.provenance.get(*key) != theirs.provenance.get(*key))
    .map(|(_, what)| format!("another {what}"))
    .collect()
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
    /// Tags this shard's temporary part files ([`shard_tag`]).
    tag: String,
    /// Held while the writer lives: no other process writes this shard here meanwhile.
    _lock: Option<ShardLock>,
}

/// An exclusive lock on `.NAME.lock` beside a shard's manifest `NAME`, held while the shard
/// writes: a second process writing the same shard of the same directory (two runs started
/// together, or a run started again while it still runs) is refused before it touches a file.
/// Shards of one run lock their own files, so they still run side by side. The lock is the
/// operating system's (`flock` on Unix, `LockFileEx` on Windows; on NFS it is taken on the
/// server where its lock service runs): it goes with the process, however that ends, and a
/// file system that takes no locks leaves the run unlocked, as before locks were taken. The
/// file is removed when the writer is dropped.
struct ShardLock {
    path: PathBuf,
    _file: Option<std::fs::File>,
}

impl ShardLock {
    /// Locks this shard's file, creating it (`mine`), or another shard's or run's, if it has
    /// one (`None` if not). Refused while another process holds it: `why` says what the
    /// refusal stops. Where the file can be neither made nor opened (a directory this process
    /// cannot write, which the steps after say in their own words) or the file system takes
    /// no locks, the shard goes on without one.
    fn acquire(
        dir: &Path,
        manifest: &str,
        mine: bool,
        why: &str,
    ) -> Result<Option<ShardLock>, OutputError> {
        let path = dir.join(format!(".{manifest}.lock"));
        let unlocked = |path: PathBuf| Ok(mine.then_some(ShardLock { path, _file: None }));
        loop {
            let opened = match mine {
                true => std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path),
                false => Err(std::io::ErrorKind::Unsupported.into()),
            };
            // A file left by a killed run of another user, or another run's: read-only will
            // do, as a lock needs no more.
            let file = match opened.or_else(|_| std::fs::File::open(&path)) {
                Ok(f) => f,
                Err(_) => return unlocked(path),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(OutputError::Invalid(format!(
                        "{}: another vpop process is writing {manifest} and its parts there \
                         now (it holds {}){why}; wait for it to end, or choose another output \
                         directory",
                        dir.display(),
                        path.display()
                    )))
                }
                // A file system without locks.
                Err(std::fs::TryLockError::Error(_)) => return unlocked(path),
            }
            // The holder before may have removed the file as it ended, after this process
            // opened it: the lock counts only on the file still at the path.
            if same_file(&file, &path) {
                return Ok(Some(ShardLock {
                    path,
                    _file: Some(file),
                }));
            }
        }
    }
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        // Removed while still held, then released as the file closes.
        if self._file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the open `file` is the file now at `path`.
#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Whether the open `file` is the file now at `path` (Windows does not remove a file that is
/// open without sharing its deletion, so it is).
#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, _path: &Path) -> bool {
    true
}

/// The manifest file name of a shard (`_manifest.json` when unsharded).
pub fn manifest_name(shard: &str) -> String {
    if shard == "1/1" {
        "_manifest.json".to_string()
    } else {
        format!("_manifest-shard-{}.json", shard_tag(shard))
    }
}

/// A shard's label in file names: `k-of-N` (`1-of-1` unsharded).
fn shard_tag(shard: &str) -> String {
    shard.replace('/', "-of-")
}

/// The shard whose manifest a file name is, if it is one of vpop's manifest names exactly as
/// [`manifest_name`] writes them.
pub fn manifest_shard(name: &str) -> Option<Shard> {
    if name == "_manifest.json" {
        return Some(Shard::WHOLE);
    }
    let tag = name
        .strip_prefix("_manifest-shard-")?
        .strip_suffix(".json")?;
    let (k, n) = tag.split_once("-of-")?;
    let s = Shard::parse(&format!("{k}/{n}")).ok()?;
    (s != Shard::WHOLE && manifest_name(&s.label()) == name).then_some(s)
}

pub fn part_name(part: u64) -> String {
    format!("part-{part:05}.parquet")
}

/// The number of a part file name, if it is one exactly as [`part_name`] writes them.
pub fn part_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (part_name(n) == name).then_some(n)
}

/// Reads a manifest and checks what it says about its files: every part a file of the
/// directory named as [`part_name`] names it, one of its run's chunks in its shard. A manifest
/// that names anything else (another directory's file, a path) is not vpop's, or was edited,
/// and none of its files are read or removed.
pub fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{}: cannot be read ({e})", path.display()))?;
    m.check()
        .map_err(|e| format!("{}: is not vpop's or was edited: {e}", path.display()))?;
    Ok(m)
}

/// An error of [`std::fs::remove_file`] other than the file being gone already.
fn not_found(e: std::io::Error) -> std::io::Result<()> {
    match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

/// A refused directory: the first reason, and how many more there are.
fn refusal(why: &str, reasons: usize) -> OutputError {
    OutputError::Invalid(match reasons {
        0 | 1 => why.to_string(),
        n => format!(
            "{why} (and {} more manifest{} of the directory disagree)",
            n - 1,
            if n == 2 { "" } else { "s" }
        ),
    })
}

/// The output path is a directory, or nothing yet: not a file, nor a link to nothing.
fn check_output_path(dir: &Path) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.file_type().is_symlink() && !dir.exists() => {
            Err(OutputError::Invalid(format!(
                "{} is a symbolic link to {}, which does not exist: create that directory, or \
                 choose another output directory",
                dir.display(),
                std::fs::read_link(dir)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "a path that cannot be read".into())
            )))
        }
        _ if dir.exists() && !dir.is_dir() => Err(OutputError::Invalid(format!(
            "{} is a file, not a directory: choose an output directory",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Removes the temporary files a killed writer of this shard left: its manifest's
/// (`.<manifest>.PID.tmp`), its parts' (`.part-NNNNN.parquet.<k-of-N>.PID.tmp`), and, as
/// versions that did not tag parts named them, `.part-NNNNN.parquet.PID.tmp` of its own chunks.
/// Nothing else: other shards may be writing beside this one (on other machines, whose
/// process ids say nothing here), and other files are not vpop's.
fn remove_own_temporaries(
    dir: &Path,
    shard: &str,
    chunks: std::ops::Range<u64>,
) -> Result<(), OutputError> {
    let manifest = manifest_name(shard);
    let tag = shard_tag(shard);
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ours = |name: &str| -> bool {
        let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            return false;
        };
        if let Some(pid) = inner
            .strip_prefix(manifest.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            return number(pid);
        }
        let Some(dot) = inner.find(".parquet.") else {
            return false;
        };
        let (part, rest) = (
            &inner[..dot + ".parquet".len()],
            &inner[dot + ".parquet.".len()..],
        );
        let Some(c) = part_number(part) else {
            return false;
        };
        match rest.split_once('.') {
            Some((t, pid)) => t == tag && number(pid),
            None => number(rest) && chunks.contains(&c),
        }
    };
    let entries = std::fs::read_dir(dir).map_err(|cause| OutputError::Io {
        path: dir.to_path_buf(),
        cause,
    })?;
    for entry in entries.flatten() {
        if ours(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// vpop's files in a dataset directory: manifests (read and checked) and part files.
struct Found {
    manifests: Vec<(PathBuf, Shard, Result<Manifest, String>)>,
    parts: Vec<(u64, PathBuf)>,
}

impl Found {
    fn scan(dir: &Path) -> Result<Found, OutputError> {
        let entries = std::fs::read_dir(dir).map_err(|cause| OutputError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        let mut found = Found {
            manifests: Vec::new(),
            parts: Vec::new(),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(c) = part_number(&name) {
                found.parts.push((c, entry.path()));
            } else if let Some(s) = manifest_shard(&name) {
                let path = entry.path();
                let m = match std::fs::read_to_string(&path) {
                    // Removed meanwhile (by a shard that overwrites another run's).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => Err(format!("cannot be read ({e})")),
                    Ok(text) => match serde_json::from_str::<Manifest>(&text) {
                        Err(e) => Err(format!("cannot be read ({e})")),
                        Ok(m) => match m.check() {
                            Err(e) => Err(format!("is not vpop's or was edited ({e})")),
                            Ok(()) if m.identity.shard != s.label() => Err(format!(
                                "is not vpop's or was edited (it records shard {})",
                                m.identity.shard
                            )),
                            Ok(()) => Ok(m),
                        },
                    },
                };
                found.manifests.push((path, s, m));
            }
        }
        found.manifests.sort_by(|a, b| a.0.cmp(&b.0));
        found.parts.sort();
        Ok(found)
    }
}

impl Manifest {
    /// Checks the parts a manifest records against its run: each named as [`part_name`] names
    /// it (a plain file name in the directory), one of the chunks of its shard, holding that
    /// chunk's subjects.
    fn check(&self) -> Result<(), String> {
        let id = &self.identity;
        let shard = Shard::parse(&id.shard)?;
        if id.chunk_size == 0 {
            return Err("it records a chunk size of 0".into());
        }
        let n_chunks = id.subjects.div_ceil(id.chunk_size);
        let (c0, c1) = shard.chunk_range(n_chunks);
        for p in &self.parts {
            if part_number(&p.file) != Some(p.part) {
                return Err(format!(
                    "it names the file '{}' for part {}, which is written '{}'",
                    p.file,
                    p.part,
                    part_name(p.part)
                ));
            }
            let first = p.part.saturating_mul(id.chunk_size);
            if !(c0..c1).contains(&p.part)
                || p.first_subject != first
                || p.subjects != (id.subjects - first).min(id.chunk_size)
            {
                return Err(format!(
                    "its part {} is not one of the chunks of shard {}",
                    p.part, id.shard
                ));
            }
        }
        Ok(())
    }

    /// Why the parts `other` (read from `path`) records cannot stand beside this run's
    /// (`None`: the same run, another shard of it or this shard's earlier attempt).
    fn conflict(&self, dir: &Path, path: &Path, other: &Manifest) -> Option<String> {
        let (a, b) = (&self.identity, &other.identity);
        let mut theirs = Vec::new();
        let mut ours = Vec::new();
        if a.spec_hash != b.spec_hash {
            match differing_inputs(&a.inputs, &b.inputs) {
                Some(said) if !said.is_empty() => theirs.extend(said),
                Some(_) => theirs.push(
                    "another hash of its inputs (`spec_hash`), though each input it records \
                     hashes as this run's does (a manifest edited by hand?)"
                        .to_string(),
                ),
                None => {
                    // An older manifest: its provenance still tells the spec, model and
                    // population apart; what else differs is a dataset or records file.
                    let said = differing_sources(self, other);
                    let more = a.inputs.iter().any(|i| {
                        !["trial spec", "model", "population"].contains(&i.input.as_str())
                    });
                    theirs.push(match (said.is_empty(), more) {
                        (true, _) => "other input files (a dataset or records file)".to_string(),
                        (false, false) => said.join(", "),
                        (false, true) => format!(
                            "{} (its dataset or records files are not recorded apart: they may \
                             differ too)",
                            said.join(", ")
                        ),
                    });
                }
            }
        }
        if a.seed != b.seed {
            theirs.push(format!("seed {}", b.seed));
            ours.push(format!("seed {}", a.seed));
        }
        if a.subjects != b.subjects {
            theirs.push(format!("{} subjects", b.subjects));
            ours.push(format!("{} subjects", a.subjects));
        }
        if a.chunk_size != b.chunk_size {
            theirs.push(format!("chunk size {}", b.chunk_size));
            ours.push(format!("chunk size {}", a.chunk_size));
        }
        if theirs.is_empty() && self.columns != other.columns {
            let list = |v: &[&String]| {
                let mut s: Vec<String> = v.iter().take(4).map(|c| format!("'{c}'")).collect();
                if v.len() > 4 {
                    s.push(format!("{} more", v.len() - 4));
                }
                s.join(", ")
            };
            let extra: Vec<&String> = (other.columns.iter())
                .filter(|c| !self.columns.contains(c))
                .collect();
            let missing: Vec<&String> = (self.columns.iter())
                .filter(|c| !other.columns.contains(c))
                .collect();
            match (extra.is_empty(), missing.is_empty()) {
                (true, true) => theirs.push("the same columns in another order".to_string()),
                (false, _) => {
                    theirs.push(format!("columns {}", list(&extra)));
                    ours.push(match missing.is_empty() {
                        true => format!("no columns {}", list(&extra)),
                        false => format!("columns {}", list(&missing)),
                    });
                }
                (true, false) => {
                    theirs.push(format!("no columns {}", list(&missing)));
                    ours.push(format!("columns {}", list(&missing)));
                }
            }
        }
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if !theirs.is_empty() {
            let ours = match ours.is_empty() {
                true => String::new(),
                false => format!(" (this run: {})", ours.join(", ")),
            };
            return Some(format!(
                "{} holds the output of a different run: {file} records {}{ours}; choose \
                 another output directory, or pass --overwrite to remove that run's manifests \
                 and parts",
                dir.display(),
                theirs.join(", "),
            ));
        }
        let revision = |m: &Manifest| m.provenance.get("vpop.results_revision").cloned();
        if revision(other) != revision(self) {
            let engine = other.engine.as_str();
            let said = match revision(other) {
                Some(r) => format!("results revision {r}"),
                None => "no results revision (an earlier version)".to_string(),
            };
            return Some(format!(
                "{}: the parts {file} records were computed by {engine} with {said}, and this \
                 build's rules give other values for the same inputs (results revision {}): \
                 their rows would differ in one dataset; resume it with the build that began \
                 it, or pass --overwrite to compute it anew",
                dir.display(),
                revision(self).unwrap_or_default(),
            ));
        }
        let stops = |m: &Manifest| m.provenance.get("vpop.jump_stops").cloned();
        if stops(other) != stops(self) {
            let said = |m: &Manifest| match stops(m) {
                Some(_) => {
                    "without stopping points at the model's jumps in time \
                            (VPOP_JUMP_STOPS=0)"
                }
                None => "with stopping points at the model's jumps in time",
            };
            return Some(format!(
                "{}: the parts {file} records were computed {}, and this run would compute \
                 its parts {}: their rows would differ in one dataset; resume it as it \
                 began{}, or pass --overwrite to compute it anew",
                dir.display(),
                said(other),
                said(self),
                match stops(other) {
                    Some(_) => " (with VPOP_JUMP_STOPS=0)",
                    None => " (without VPOP_JUMP_STOPS)",
                },
            ));
        }
        let producer = |m: &Manifest| {
            let get = |k: &str| m.provenance.get(k).map_or("?", String::as_str).to_string();
            (get("vpop.backend"), get("vpop.precision"))
        };
        let ((b0, p0), (b1, p1)) = (producer(other), producer(self));
        if (&b0, &p0) != (&b1, &p1) {
            return Some(format!(
                "{}: the parts {file} records were computed by the {b0} backend in {p0}, and \
                 this run by the {b1} backend in {p1}: their rows would differ in one dataset; \
                 run it with --backend {b0} to resume it as it began, or pass --overwrite to \
                 compute it anew",
                dir.display()
            ));
        }
        None
    }
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
    /// parts already complete from an earlier attempt of the same run, its own or another
    /// shard's (whose manifest records them with their hash).
    ///
    /// Every manifest in the directory must describe this same run (spec and input files, seed,
    /// subject count, chunk size, columns) computed by the same backend in the same precision,
    /// and every part file must belong to one of them; anything else is refused. With
    /// `overwrite`, what is refused is removed first: every manifest and part file of vpop's
    /// except another shard's of this same run (which may be running beside this one).
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
        check_output_path(dir)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let shard = Shard::parse(&identity.shard).map_err(OutputError::Invalid)?;
        if identity.chunk_size == 0 {
            return Err(OutputError::Invalid(
                "the chunk size must be at least 1".into(),
            ));
        }
        let n_chunks = identity.subjects.div_ceil(identity.chunk_size);
        let (c0, c1) = shard.chunk_range(n_chunks);
        let tag = shard_tag(&identity.shard);
        let lock = ShardLock::acquire(dir, &manifest_name(&identity.shard), true, "")?;
        remove_own_temporaries(dir, &identity.shard, c0..c1)?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        // The shard is in the manifest, not in the parts: a part is the same file whichever
        // shard wrote it.
        let metadata: Vec<(String, String)> = provenance
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut manifest = Manifest {
            engine: format!("vpop {}", env!("CARGO_PKG_VERSION")),
            identity,
            status: "running".into(),
            arms,
            columns,
            provenance,
            parts: Vec::new(),
        };
        let manifest_path = dir.join(manifest_name(&manifest.identity.shard));
        let found = Found::scan(dir)?;
        // Manifests of this same run (this shard's own included), and the others.
        let mut same: Vec<(PathBuf, Shard, Manifest)> = Vec::new();
        let mut refused: Vec<(PathBuf, String)> = Vec::new();
        for (path, s, m) in found.manifests {
            match m {
                Ok(m) => match manifest.conflict(dir, &path, &m) {
                    None => same.push((path, s, m)),
                    Some(why) => refused.push((path, why)),
                },
                Err(why) => {
                    let whose = if path == manifest_path {
                        "the run's"
                    } else {
                        "a"
                    };
                    let why = format!(
                        "{}: {whose} manifest {why}, so the parts it records cannot be trusted; \
                         pass --overwrite to write the run anew (it removes that manifest and \
                         the part files), or choose another output directory",
                        path.display()
                    );
                    refused.push((path, why))
                }
            }
        }
        // A part belongs to the run if it lies in the chunks of one of its manifests: recorded,
        // or on its way to being recorded (a shard renames a part, then records it).
        let belongs = |c: u64| {
            same.iter().any(|(_, s, _)| {
                let (a, b) = s.chunk_range(n_chunks);
                a <= c && c < b
            })
        };
        let stray: Vec<&PathBuf> = found
            .parts
            .iter()
            .filter(|(c, _)| !belongs(*c))
            .map(|(_, p)| p)
            .collect();
        let mut done = Vec::new();
        if overwrite {
            // Another run's shards still being written are not removed under them: each
            // manifest's lock is taken (and its file removed with it) first.
            let mut held = Vec::new();
            for (path, _) in refused.iter().filter(|(p, _)| *p != manifest_path) {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                held.extend(ShardLock::acquire(
                    dir,
                    &name,
                    false,
                    ", and --overwrite does not remove a run while it is written",
                )?);
            }
            for (path, _) in &refused {
                std::fs::remove_file(path)
                    .or_else(not_found)
                    .map_err(io(path))?;
            }
            // The charts `vpop report` drew of another run in its default folders go with it.
            if !refused.is_empty() || !stray.is_empty() {
                for name in REPORT_DIRS {
                    let path = dir.join(name);
                    std::fs::remove_dir_all(&path)
                        .or_else(not_found)
                        .map_err(io(&path))?;
                }
            }
            // Parts in another shard's chunks of this same run are that shard's (the same
            // bytes this one would write); every other part goes.
            let others: Vec<(u64, u64)> = same
                .iter()
                .filter(|(p, _, _)| *p != manifest_path)
                .map(|(_, s, _)| s.chunk_range(n_chunks))
                .collect();
            for (c, path) in &found.parts {
                if !others.iter().any(|&(a, b)| a <= *c && *c < b) {
                    std::fs::remove_file(path)
                        .or_else(not_found)
                        .map_err(io(path))?;
                }
            }
        } else {
            if let Some((_, why)) = refused.first() {
                return Err(refusal(why, refused.len()));
            }
            if !stray.is_empty() {
                return Err(OutputError::Invalid(format!(
                    "{} holds part files that no manifest of this run accounts for ({}{}): they \
                     are another run's, whose manifest is gone; pass --overwrite to remove them, \
                     or choose another output directory",
                    dir.display(),
                    stray[0].file_name().unwrap_or_default().to_string_lossy(),
                    match stray.len() {
                        1 => String::new(),
                        n => format!(" and {} more", n - 1),
                    }
                )));
            }
            // A part counts as done only if its bytes hash to what a manifest of this run
            // recorded (this shard's own first, then the others').
            same.sort_by_key(|(p, _, _)| *p != manifest_path);
            let mut recorded: BTreeMap<u64, (PartEntry, usize)> = BTreeMap::new();
            for (i, (_, _, m)) in same.iter().enumerate() {
                for p in &m.parts {
                    if (c0..c1).contains(&p.part) && !recorded.contains_key(&p.part) {
                        recorded.insert(p.part, (p.clone(), i));
                    }
                }
            }
            use rayon::prelude::*;
            let kept: Vec<(PartEntry, usize)> = recorded
                .into_values()
                .collect::<Vec<_>>()
                .into_par_iter()
                .filter_map(|(p, i)| verified(dir, p).map(|p| (p, i)))
                .collect();
            // The manifest names every device that computed its parts.
            let mut devices: Vec<&str> = Vec::new();
            for i in kept.iter().map(|(_, i)| *i) {
                if let Some(d) = same[i].2.provenance.get("vpop.device") {
                    if !devices.contains(&d.as_str()) {
                        devices.push(d);
                    }
                }
            }
            if let Some(d) = manifest.provenance.get("vpop.device").cloned() {
                if !devices.is_empty() && devices.iter().any(|o| **o != d) {
                    if !devices.contains(&d.as_str()) {
                        devices.push(&d);
                    }
                    let all = devices.join("; ");
                    manifest.provenance.insert("vpop.device".into(), all);
                }
            }
            done.extend(kept.into_iter().map(|(p, _)| p));
        }
        manifest.parts = done.clone();
        let mut w = DatasetWriter {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest,
            metadata,
            schema,
            codec,
            tag,
            _lock: lock,
        };
        let existed = w.manifest_path.exists();
        w.save_manifest()?;
        // Shards started together may each have looked before the other wrote its manifest:
        // look again now that this one's is there, so that of two different runs at least one
        // stops before writing a part. One that stops takes back the manifest it has just
        // made, which records nothing, so that it does not stand in the other run's way.
        for (path, _, m) in Found::scan(dir)?.manifests {
            if let Ok(m) = m {
                if let Some(why) = w.manifest.conflict(dir, &path, &m) {
                    if !existed {
                        let _ = std::fs::remove_file(&w.manifest_path);
                    }
                    return Err(refusal(&why, 1));
                }
            }
        }
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
            tag: self.tag.clone(),
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
    tag: String,
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
        let mut tmp = AtomicFile::create_tagged(&path, &self.tag)?;
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
        let number = |x: &str, what: &str| -> Result<u64, String> {
            use std::num::IntErrorKind::PosOverflow;
            x.trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| match e.kind() {
                    PosOverflow => {
                        format!("shard '{s}': {what} is too large (at most {})", u64::MAX)
                    }
                    _ => format!("shard '{s}': {what} is not a whole number"),
                })
        };
        let (k, n) = (number(k, "k")?, number(n, "N")?);
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
        let e = Shard::parse("1/99999999999999999999").unwrap_err();
        assert!(e.contains("N is too large"), "{e}");
        assert!(Shard::parse("1/x")
            .unwrap_err()
            .contains("not a whole number"));
    }

    #[test]
    fn only_vpop_names_are_parts_and_manifests() {
        assert_eq!(part_number("part-00042.parquet"), Some(42));
        assert_eq!(part_number("part-123456.parquet"), Some(123_456));
        for name in [
            "part-42.parquet",
            "part-0004a.parquet",
            "../part-00001.parquet",
            "part-00001.parquet.tmp",
            "part--0001.parquet",
        ] {
            assert_eq!(part_number(name), None, "{name}");
        }
        assert_eq!(manifest_shard("_manifest.json"), Some(Shard::WHOLE));
        assert_eq!(
            manifest_shard("_manifest-shard-2-of-3.json"),
            Some(Shard { k: 2, n: 3 })
        );
        for name in [
            "_manifest-shard-1-of-1.json",
            "_manifest-shard-4-of-3.json",
            "_manifest-shard-02-of-3.json",
            "_manifest.json.bak",
            "_manifest-x.json",
        ] {
            assert_eq!(manifest_shard(name), None, "{name}");
        }
    }
}
