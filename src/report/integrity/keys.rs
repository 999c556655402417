//! ed25519 key files for signing report manifests.
//!
//! Two formats are read, for the private key (`--sign-key`) and the public key
//! (`verify --pubkey`) alike:
//! - firedrill's own: one line of 64 hex digits, the 32-byte private seed or the
//!   32-byte public key (lines starting with `#` are comments); `firedrill keygen FILE`
//!   writes `FILE` (mode 0600) and `FILE.pub` this way;
//! - OpenSSL's PEM: `openssl genpkey -algorithm ed25519 -out key.pem` (PKCS#8
//!   `PRIVATE KEY`) and `openssl pkey -in key.pem -pubout -out key.pub.pem` (SPKI
//!   `PUBLIC KEY`).
//!
//! Key bytes never appear in an error message.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// A key file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KeyError {
    pub path: String,
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410), before the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an ed25519 SubjectPublicKeyInfo, before the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// `N` bytes from exactly `2N` hex digits.
pub(crate) fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(std::str::from_utf8(&b[2 * i..2 * i + 2]).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Standard base64 (with padding, whitespace ignored).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The 32 key bytes of a key file: hex, or the PEM block `label` whose DER starts
/// with `prefix`.
fn key_bytes(path: &Path, label: &str, prefix: &[u8], what: &str) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
    let expected = format!(
        "expected an ed25519 {what}: 64 hex digits on one line (firedrill keygen) or a PEM `{label}` (openssl)"
    );
    if let Some(start) = text.find(&format!("-----BEGIN {label}-----")) {
        let body = &text[start + label.len() + 16..];
        let end = body
            .find(&format!("-----END {label}-----"))
            .ok_or_else(|| err(path, format!("found an unterminated PEM block, {expected}")))?;
        let der = decode_base64(&body[..end]).ok_or_else(|| {
            err(
                path,
                format!("found invalid base64 in the PEM block, {expected}"),
            )
        })?;
        return match der.strip_prefix(prefix) {
            Some(k) if k.len() == 32 => Ok(k.try_into().expect("32 bytes")),
            _ => Err(err(
                path,
                format!("found a PEM `{label}` that is not ed25519, {expected}"),
            )),
        };
    }
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    decode_hex::<32>(line).ok_or_else(|| {
        err(
            path,
            format!("found no key in a format firedrill reads, {expected}"),
        )
    })
}

/// Reads a private signing key (`--sign-key`).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    key_bytes(path, "PRIVATE KEY", &PKCS8_PREFIX, "private key")
        .map(|seed| SigningKey::from_bytes(&seed))
}

/// Reads a public key (`verify --pubkey`).
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let b = key_bytes(path, "PUBLIC KEY", &SPKI_PREFIX, "public key")?;
    VerifyingKey::from_bytes(&b)
        .map_err(|_| err(path, "found bytes that are not an ed25519 public key point"))
}

/// Writes a new key pair: `path` (the private seed in hex, mode 0600, never
/// overwriting a file) and `path.pub`. Randomness from the kernel (`/dev/urandom`).
pub fn keygen(path: &Path) -> Result<(PathBuf, VerifyingKey), KeyError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| err(Path::new("/dev/urandom"), e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, pub_path.as_path()] {
        if p.exists() {
            return Err(err(p, "already exists; refusing to overwrite a key"));
        }
    }
    let write = |p: &Path, mode: u32, text: String| -> Result<(), KeyError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .map_err(|e| err(p, e.to_string()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err(p, e.to_string()))
    };
    write(
        path,
        0o600,
        format!(
            "# firedrill ed25519 private key (keep secret; sign with `firedrill run --sign-key {}`)\n{}\n",
            path.display(),
            super::hex(&seed)
        ),
    )?;
    write(
        &pub_path,
        0o644,
        format!(
            "# firedrill ed25519 public key (check with `firedrill verify DIR --pubkey {}`)\n{}\n",
            pub_path.display(),
            super::hex(public.as_bytes())
        ),
    )?;
    Ok((pub_path, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_pair_that_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let (pub_path, public) = keygen(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = read_signing_key(&p).unwrap();
        assert_eq!(key.verifying_key(), public);
        assert_eq!(read_verifying_key(&pub_path).unwrap(), public);
        // Never overwrites.
        assert!(keygen(&p).is_err());
    }

    /// The PEM files `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
    /// write (RFC 8410's example key).
    #[test]
    fn openssl_pem_keys_are_read() {
        let d = tempfile::tempdir().unwrap();
        let private = d.path().join("key.pem");
        std::fs::write(
            &private,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let public = d.path().join("key.pub.pem");
        std::fs::write(
            &public,
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let key = read_signing_key(&private).unwrap();
        assert_eq!(key.verifying_key(), read_verifying_key(&public).unwrap());
    }

    #[test]
    fn bad_key_files_are_named_without_their_contents() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "not-a-key-secretvalue\n").unwrap();
        let e = read_signing_key(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        assert!(!e.contains("secretvalue"), "{e}");
        assert!(read_signing_key(&d.path().join("missing")).is_err());
    }
}
