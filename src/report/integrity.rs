//! Integrity of a report directory: proof that the evidence was not altered.
//!
//! After every report file is written, `MANIFEST.sha256` is written last: one line per
//! file of the directory, `<sha256 hex>  <relative path>`, sorted (the format of
//! `sha256sum`, so `sha256sum -c MANIFEST.sha256` checks it too). With a signing key
//! (`firedrill run --sign-key FILE`), `MANIFEST.sig` holds the ed25519 signature of the
//! manifest's bytes, in hex. `firedrill verify DIR [--pubkey FILE]` recomputes every
//! hash and names each file that was altered, is missing or was added, and checks the
//! signature. The key formats are in [`keys`].

pub mod keys;

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::ReportError;
use super::atomic::write_atomic;

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// The signature's file name.
pub const SIGNATURE: &str = "MANIFEST.sig";

/// Why a directory could not be checked at all (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{dir}: no {MANIFEST}, expected a report directory written by firedrill run")]
    NoManifest { dir: String },
    #[error("{MANIFEST}:{line}: found `{text}`, expected `<64 hex digits>  <file name>`")]
    BadLine { line: usize, text: String },
}

fn io(path: &Path, source: std::io::Error) -> VerifyError {
    VerifyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Every regular file under `dir`, as sorted relative paths with `/`, the manifest and
/// its signature excepted.
fn files(dir: &Path) -> Result<Vec<String>, VerifyError> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(|e| io(&abs, e))? {
            let e = e.map_err(|e| io(&abs, e))?;
            let r = rel.join(e.file_name());
            let t = e.file_type().map_err(|err| io(&e.path(), err))?;
            if t.is_dir() {
                todo.push(r);
            } else {
                let name = r.to_string_lossy().into_owned();
                if name != MANIFEST && name != SIGNATURE {
                    out.push(name);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The SHA-256 of a regular file's bytes. A symlink is hashed as its target's path
/// and any other non-regular file as its kind, never read: a FIFO or a link to
/// `/dev/zero` planted in a directory must not hang `verify`, and is reported as
/// altered or extra like any other change.
fn sha256_file(path: &Path) -> Result<String, VerifyError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io(path, e))?;
    let bytes = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| io(path, e))?;
        format!("symlink -> {}", target.display()).into_bytes()
    } else if meta.is_file() {
        std::fs::read(path).map_err(|e| io(path, e))?
    } else {
        b"not a regular file".to_vec()
    };
    Ok(hex(&Sha256::digest(&bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name as `sha256sum` writes it: a backslash or a line break in it is escaped and
/// the line then starts with `\`.
fn line(hash: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let esc = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hash}  {esc}\n")
    } else {
        format!("{hash}  {name}\n")
    }
}

fn parse_line(n: usize, l: &str) -> Result<(String, String), VerifyError> {
    let bad = || VerifyError::BadLine {
        line: n,
        text: l.chars().take(120).collect(),
    };
    let (escaped, rest) = match l.strip_prefix('\\') {
        Some(r) => (true, r),
        None => (false, l),
    };
    let (hash, name) = rest.split_once("  ").ok_or_else(bad)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
        return Err(bad());
    }
    let name = if escaped {
        let mut out = String::new();
        let mut it = name.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('\\') => out.push('\\'),
                    _ => return Err(bad()),
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        name.to_string()
    };
    Ok((hash.to_ascii_lowercase(), name))
}

/// Writes `MANIFEST.sha256` for every file of `dir` (atomically, after them all), and
/// removes a stale signature: a signature is only ever of the current manifest.
pub fn seal(dir: &Path) -> Result<PathBuf, ReportError> {
    let to_report = |e: VerifyError| ReportError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut text = String::new();
    for name in files(dir).map_err(to_report)? {
        text.push_str(&line(
            &sha256_file(&dir.join(&name)).map_err(to_report)?,
            &name,
        ));
    }
    let path = dir.join(MANIFEST);
    let sig = dir.join(SIGNATURE);
    if sig.exists() {
        std::fs::remove_file(&sig).map_err(|source| ReportError::Io {
            path: sig.display().to_string(),
            source,
        })?;
    }
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Signs `dir`'s manifest with `key`: `MANIFEST.sig`, the signature in hex.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<PathBuf, ReportError> {
    let manifest = dir.join(MANIFEST);
    let bytes = std::fs::read(&manifest).map_err(|source| ReportError::Io {
        path: manifest.display().to_string(),
        source,
    })?;
    let sig = key.sign(&bytes);
    let path = dir.join(SIGNATURE);
    write_atomic(&path, format!("{}\n", hex(&sig.to_bytes())).as_bytes())?;
    Ok(path)
}

/// What the signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No signature, and no public key given: nothing to check.
    Unsigned,
    /// A signature, but no public key to check it with.
    NotChecked,
    /// Signed by the given key's private half, over this very manifest.
    Valid,
    /// The signature does not verify under the given key (altered manifest, another
    /// key, or a damaged signature file), with why.
    Invalid(String),
    /// A public key was given but the directory has no signature.
    Missing,
}

/// The outcome of `firedrill verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Files listed and present whose hash differs: `(name, expected, found)`.
    pub altered: Vec<(String, String, String)>,
    /// Files listed but gone.
    pub missing: Vec<String>,
    /// Files present but not listed.
    pub extra: Vec<String>,
    /// Files listed whose hash matches.
    pub intact: usize,
    pub signature: SignatureCheck,
}

impl Verification {
    /// Whether the directory is exactly as sealed (and, with a key, signed by it).
    pub fn ok(&self) -> bool {
        self.altered.is_empty()
            && self.missing.is_empty()
            && self.extra.is_empty()
            && matches!(
                self.signature,
                SignatureCheck::Valid | SignatureCheck::Unsigned | SignatureCheck::NotChecked
            )
    }
}

/// Checks `dir` against its manifest, and its signature against `pubkey` if given.
pub fn verify(dir: &Path, pubkey: Option<&VerifyingKey>) -> Result<Verification, VerifyError> {
    let manifest = dir.join(MANIFEST);
    let bytes = match std::fs::read(&manifest) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::NoManifest {
                dir: dir.display().to_string(),
            });
        }
        Err(e) => return Err(io(&manifest, e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut listed = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if !l.is_empty() {
            listed.push(parse_line(i + 1, l)?);
        }
    }
    let present = files(dir)?;
    let mut v = Verification {
        altered: Vec::new(),
        missing: Vec::new(),
        extra: Vec::new(),
        intact: 0,
        signature: SignatureCheck::Unsigned,
    };
    for (hash, name) in &listed {
        if !present.contains(name) {
            v.missing.push(name.clone());
            continue;
        }
        let found = sha256_file(&dir.join(name))?;
        if &found == hash {
            v.intact += 1;
        } else {
            v.altered.push((name.clone(), hash.clone(), found));
        }
    }
    v.extra = present
        .into_iter()
        .filter(|p| !listed.iter().any(|(_, n)| n == p))
        .collect();
    let sig_path = dir.join(SIGNATURE);
    let sig_text = match std::fs::read_to_string(&sig_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&sig_path, e)),
    };
    v.signature = match (sig_text, pubkey) {
        (None, None) => SignatureCheck::Unsigned,
        (None, Some(_)) => SignatureCheck::Missing,
        (Some(_), None) => SignatureCheck::NotChecked,
        (Some(t), Some(key)) => match keys::decode_hex::<64>(t.trim()) {
            None => SignatureCheck::Invalid(format!(
                "{SIGNATURE} is not 128 hex digits (an ed25519 signature)"
            )),
            Some(b) => match key.verify(&bytes, &Signature::from_bytes(&b)) {
                Ok(()) => SignatureCheck::Valid,
                Err(_) => SignatureCheck::Invalid(format!(
                    "{SIGNATURE} does not verify {MANIFEST} under the given public key (the manifest was changed, or signed with another key)"
                )),
            },
        },
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, t) in files {
            let p = d.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        d
    }

    #[test]
    fn a_sealed_directory_verifies_and_names_what_changed() {
        let d = dir_with(&[
            ("journal.json", "{}"),
            ("report.md", "# r\n"),
            ("sub/x", "1"),
        ]);
        seal(d.path()).unwrap();
        let v = verify(d.path(), None).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.intact, 3);
        std::fs::write(d.path().join("report.md"), "# R\n").unwrap();
        std::fs::remove_file(d.path().join("sub/x")).unwrap();
        std::fs::write(d.path().join("notes.txt"), "added").unwrap();
        let v = verify(d.path(), None).unwrap();
        assert!(!v.ok());
        assert_eq!(
            v.altered.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
            ["report.md"]
        );
        assert_eq!(v.missing, ["sub/x"]);
        assert_eq!(v.extra, ["notes.txt"]);
        assert_eq!(v.intact, 1);
    }

    #[test]
    fn the_manifest_is_sha256sum_format() {
        let d = dir_with(&[("a", "abc")]);
        seal(d.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join(MANIFEST)).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a\n"
        );
    }

    #[test]
    fn a_planted_fifo_or_link_is_named_not_read() {
        let d = dir_with(&[("journal.json", "{}")]);
        seal(d.path()).unwrap();
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero")).unwrap();
        let v = verify(d.path(), None).unwrap();
        assert_eq!(v.extra, ["pipe", "zero"]);
        // A report file replaced by a link to elsewhere is altered.
        std::fs::remove_file(d.path().join("journal.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("journal.json")).unwrap();
        let v = verify(d.path(), None).unwrap();
        assert_eq!(v.altered.len(), 1);
    }

    #[test]
    fn odd_names_round_trip() {
        let d = dir_with(&[("a\\b", "x"), ("c\nd", "y")]);
        seal(d.path()).unwrap();
        assert!(verify(d.path(), None).unwrap().ok());
    }

    #[test]
    fn signatures_verify_only_under_their_key_and_manifest() {
        let d = dir_with(&[("journal.json", "{}")]);
        seal(d.path()).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        // Unsigned, key given: the signature is missing.
        assert_eq!(
            verify(d.path(), Some(&key.verifying_key()))
                .unwrap()
                .signature,
            SignatureCheck::Missing
        );
        sign(d.path(), &key).unwrap();
        let good = verify(d.path(), Some(&key.verifying_key())).unwrap();
        assert_eq!(good.signature, SignatureCheck::Valid);
        assert!(good.ok());
        let wrong = verify(d.path(), Some(&other.verifying_key())).unwrap();
        assert!(matches!(wrong.signature, SignatureCheck::Invalid(_)));
        assert!(!wrong.ok());
        assert_eq!(
            verify(d.path(), None).unwrap().signature,
            SignatureCheck::NotChecked
        );
        // A manifest edited to match an altered file no longer matches its signature.
        std::fs::write(d.path().join("journal.json"), "{\"x\":1}").unwrap();
        seal_keeping_signature(d.path());
        let v = verify(d.path(), Some(&key.verifying_key())).unwrap();
        assert!(v.altered.is_empty());
        assert!(matches!(v.signature, SignatureCheck::Invalid(_)), "{v:?}");
    }

    /// What a forger would do: rewrite the manifest, keep the old signature.
    fn seal_keeping_signature(dir: &Path) {
        let sig = std::fs::read(dir.join(SIGNATURE)).unwrap();
        seal(dir).unwrap();
        std::fs::write(dir.join(SIGNATURE), sig).unwrap();
    }
}
