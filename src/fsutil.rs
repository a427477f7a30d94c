//! Writing files so that a crash leaves either the old content or the new, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Who may read a written file.
#[derive(Clone, Copy)]
pub enum Access {
    /// Keys, passwords, state holding password hashes.
    OwnerOnly,
    /// Certificates and other public material.
    Public,
}

/// The temporary file [`write_atomically`] uses beside `path`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes a temporary file beside `path`, fsyncs it, renames it over `path`, and fsyncs the
/// directory so the rename itself survives a crash.
pub fn write_atomically(path: &Path, contents: &[u8], access: Access) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match access {
            Access::OwnerOnly => 0o600,
            Access::Public => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = access;
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A SHA-256 of what a piece of running state was built from, so a reload can tell whether
/// anything changed. Its Debug form shows no bytes: the input may hold secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest([u8; 32]);

impl ContentDigest {
    /// Digests `parts` in order; each is length-prefixed, so moving bytes from one part to the
    /// next changes the digest. `None` stands for a file that could not be read.
    pub fn of(parts: &[Option<&[u8]>]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in parts {
            match part {
                Some(bytes) => {
                    ctx.update(&[1]);
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(bytes);
                }
                None => ctx.update(&[0]),
            }
        }
        let mut out = [0u8; 32];
        let digest = ctx.finish();
        let bytes = digest.as_ref();
        let n = bytes.len().min(out.len());
        out[..n].copy_from_slice(&bytes[..n]);
        ContentDigest(out)
    }
}

impl std::fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one", Access::OwnerOnly).unwrap();
        write_atomically(&path, b"two", Access::OwnerOnly).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!temporary_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
