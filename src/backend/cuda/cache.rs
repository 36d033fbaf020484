//! Kernels kept between runs: the PTX that NVRTC made of a kernel source, on disk under the
//! user's cache directory, so that a second run of the same trial (same model, method, metric
//! kinds, precision, tuning and device architecture) skips NVRTC. The driver keeps its own
//! cache of what it makes of the PTX (`~/.nv/ComputeCache`), so such a run compiles nothing.
//!
//! An entry is named by the SHA-256 of everything that decides the PTX: this crate's version,
//! NVRTC's version, the architecture, the options and the source. It is written to a file of
//! this process and renamed into place, so that concurrent runs never read a partial entry, and
//! it starts with a line naming its key and the SHA-256 of the PTX after it, so that an entry
//! that is not what its name says (cut short, or another kernel's) is compiled again. The cache is an optimisation only: where it cannot be read or written, the
//! kernel is compiled as without it. `VPOP_KERNEL_CACHE=off` turns it off; beyond
//! [`MAX_BYTES`] the entries used least recently are removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::CudaTuning;

/// The environment variable that turns the cache off (`off`).
pub const ENV: &str = "VPOP_KERNEL_CACHE";

/// The most bytes of PTX the cache keeps (a kernel's PTX is 0.1–1 MB).
pub const MAX_BYTES: u64 = 256 << 20;

/// The SHA-256 of the parts, one after the other, in hexadecimal.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first line of an entry: its key and the SHA-256 of the PTX after the line.
fn header(key: &str, ptx: &str) -> String {
    format!(
        "// vpop kernel cache {key} {}\n",
        sha256_hex(&[ptx.as_bytes()])
    )
}

/// A directory of this user's cache (`$XDG_CACHE_HOME/vpop/SUB`, or `~/.cache/vpop/SUB`, or a
/// private directory `vpop-SUB-UID` in the temporary directory), created private to the user.
pub(super) fn user_dir(sub: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let bases = absolute(std::env::var_os("XDG_CACHE_HOME"))
        .into_iter()
        .chain(absolute(std::env::var_os("HOME")).map(|h| h.join(".cache")));
    for base in bases {
        let d = base.join("vpop").join(sub);
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .is_ok()
        {
            return Ok(d);
        }
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let d = std::env::temp_dir().join(format!("vpop-{sub}-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Someone else's directory, or one others can write to, is not used.
            let md = std::fs::symlink_metadata(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            if md.is_dir() && md.uid() == uid && md.mode() & 0o077 == 0 {
                Ok(d)
            } else {
                Err(format!(
                    "{} is not a private directory of this user",
                    d.display()
                ))
            }
        }
        Err(e) => Err(format!("creating {}: {e}", d.display())),
    }
}

/// The directory of kept PTX, or `None` where the cache is off or no directory can be made.
pub fn dir() -> Option<PathBuf> {
    if std::env::var(ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("off")) {
        return None;
    }
    user_dir("cuda-ptx").ok()
}

/// NVRTC's version, as `major.minor`.
fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion writes two integers through valid pointers; NVRTC is loaded (the
    // caller checked `nvrtc_available`).
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    match r {
        cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS => format!("{major}.{minor}"),
        _ => "unknown".into(),
    }
}

/// How a kernel's PTX was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled by NVRTC now (and kept where the cache could be written).
    Compiled,
    /// Read from the cache.
    Cached,
}

/// The PTX of `src` for `arch` with `tuning`, from the cache in `dir` where it holds it, else
/// compiled by NVRTC and kept there. `dir` `None`: compiled, nothing kept.
pub fn compile_ptx_in(
    dir: Option<&Path>,
    src: &str,
    arch: &'static str,
    tuning: &CudaTuning,
) -> Result<(String, Origin), String> {
    let Some(dir) = dir else {
        return Ok((
            super::compile_ptx_tuned(src, arch, tuning)?,
            Origin::Compiled,
        ));
    };
    if !super::nvrtc_available() {
        return Err("NVRTC (libnvrtc) is not on the library path".into());
    }
    let version = nvrtc_version();
    let bounds = tuning.launch_bounds();
    let options = tuning.nvrtc_options();
    let parts = [
        "vpop-ptx-1",
        env!("CARGO_PKG_VERSION"),
        version.as_str(),
        arch,
        bounds.as_str(),
    ];
    let mut described: Vec<&[u8]> = Vec::new();
    for part in parts
        .iter()
        .copied()
        .chain(options.iter().map(String::as_str))
    {
        described.push(part.as_bytes());
        described.push(&[0]);
    }
    described.push(src.as_bytes());
    let key = sha256_hex(&described);
    let path = dir.join(format!("{key}.ptx"));
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((head, ptx)) = text.split_once('\n') {
            if format!("{head}\n") == header(&key, ptx) {
                // Used now: the last to be removed.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                return Ok((ptx.to_string(), Origin::Cached));
            }
        }
    }
    let ptx = super::compile_ptx_tuned(src, arch, tuning)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{key}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let entry = format!("{}{ptx}", header(&key, &ptx));
    if std::fs::write(&tmp, entry).is_ok() && std::fs::rename(&tmp, &path).is_ok() {
        prune(dir, MAX_BYTES);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok((ptx, Origin::Compiled))
}

/// The PTX of `src` for `arch` with `tuning`, through the user's cache ([`dir`]).
pub fn compile_ptx(
    src: &str,
    arch: &'static str,
    tuning: &CudaTuning,
) -> Result<(String, Origin), String> {
    compile_ptx_in(dir().as_deref(), src, arch, tuning)
}

/// Removes the entries used least recently until the cache holds at most `max_bytes`.
pub fn prune(dir: &Path, max_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ptx"))
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            Some((md.modified().ok()?, md.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}
