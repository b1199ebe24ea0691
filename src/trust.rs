//! Whose input may change the template: the `[trust]` keys and the check of a detached minisign signature (`FILE.minisig`) against them.
//!
//! Signatures are minisign's (Ed25519), verified with the `minisign-verify`
//! crate. Only pre-hashed signatures (BLAKE2b-512 of the file, what
//! `minisign -S` makes by default since 0.8) are taken: they verify while
//! the file streams through, in bounded memory, whatever its size. A legacy
//! signature (`minisign -S -l`) would need the whole file in memory first.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::Trust;

/// The signature file of `file`: `FILE.minisig`, beside it.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".minisig");
    PathBuf::from(name)
}

/// A `.pub` file or a `.minisig` file is a few hundred bytes.
const MAX_SMALL_FILE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "[trust] keys entry {entry:?}: {why}; give the base64 line of a minisign public key (`RW…`) or the path of its .pub file"
    )]
    BadKey { entry: String, why: String },
    #[error("{path} is not signed: no {sig}; sign it with `minisign -S -m {path}`{hint}", sig = signature_path(path).display())]
    Unsigned { path: PathBuf, hint: &'static str },
    #[error("signature {path}: {why}")]
    BadSignature { path: PathBuf, why: String },
    #[error(
        "{path}: signed by key {key_id}, which is not in [trust] keys; add its public key there if you trust it"
    )]
    Untrusted { path: PathBuf, key_id: String },
    #[error(
        "{path}: the signature does not match its contents (changed or damaged after signing); fetch it again"
    )]
    Mismatch { path: PathBuf },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who signed an input, once its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// The key id as minisign prints it (16 hex digits).
    pub key_id: String,
    /// The signature's trusted comment (covered by the signature).
    pub trusted_comment: String,
}

/// One trusted public key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key_id: String,
    /// The base64 line, as a plan carries it (recovery verifies again
    /// against the keys trusted when the transaction was planned).
    pub base64: String,
    key: minisign_verify::PublicKey,
}

impl TrustedKey {
    /// A key from its base64 line (`RW…`, 56 characters).
    pub fn from_base64(line: &str) -> Result<TrustedKey, String> {
        let line = line.trim();
        let raw = base64_decode(line).ok_or("not base64")?;
        if raw.len() != 42 || raw[0] != b'E' || raw[1] != b'd' {
            return Err("not a minisign Ed25519 public key".into());
        }
        let key = minisign_verify::PublicKey::from_base64(line).map_err(|e| e.to_string())?;
        Ok(TrustedKey {
            key_id: key_id(&raw[2..10]),
            base64: line.to_owned(),
            key,
        })
    }
}

/// minisign prints a key id as the little-endian number its 8 bytes hold,
/// in upper-case hex.
fn key_id(bytes: &[u8]) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    // As minisign prints it (`%" PRIX64 "`: no zero padding), so the id
    // jailtx shows is the one in the key's own `.pub` comment line.
    format!("{:X}", u64::from_le_bytes(n))
}

/// The keys of `[trust] keys`: a base64 line as is, anything else read as
/// the path of a `.pub` file (its second line is the key).
pub fn keys(trust: &Trust) -> Result<Vec<TrustedKey>, TrustError> {
    let mut out = Vec::new();
    for entry in &trust.keys {
        let bad = |why: String| TrustError::BadKey {
            entry: entry.clone(),
            why,
        };
        // A key line is 56 base64 characters, which may hold `/`: it is
        // taken as a key when it decodes as one, else as a path.
        if let Ok(k) = TrustedKey::from_base64(entry) {
            out.push(k);
            continue;
        }
        let text = read_small(Path::new(entry)).map_err(|e| bad(e.to_string()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| bad("no key line in the file".into()))?
            .to_owned();
        out.push(TrustedKey::from_base64(&line).map_err(bad)?);
    }
    Ok(out)
}

/// Reads a small regular file, never through a symlink at its last
/// component and never blocking on a fifo.
fn read_small(path: &Path) -> std::io::Result<String> {
    let file = open_regular(path)?;
    let mut text = String::new();
    file.take(MAX_SMALL_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// Opens `path` for reading: a regular file, not through a symlink
/// (O_NOFOLLOW), never blocking (O_NONBLOCK).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => std::io::Error::other("is a symlink; give the file itself"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    Ok(file)
}

/// A signature file, parsed, with the trusted key that made it.
pub struct Checked<'k> {
    sig: minisign_verify::Signature,
    key: &'k TrustedKey,
    sig_path: PathBuf,
}

impl Checked<'_> {
    pub fn signer(&self) -> SignerInfo {
        SignerInfo {
            key_id: self.key.key_id.clone(),
            trusted_comment: self.sig.trusted_comment().to_owned(),
        }
    }
}

/// Reads `FILE.minisig` and finds the trusted key that made it, without
/// reading `file` yet. `Ok(None)` when there is no signature file.
pub fn signature_of<'k>(
    file: &Path,
    keys: &'k [TrustedKey],
) -> Result<Option<Checked<'k>>, TrustError> {
    let sig_path = signature_path(file);
    let text = match read_small(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TrustError::BadSignature {
                path: sig_path,
                why: e.to_string(),
            });
        }
    };
    let bad = |why: &str| TrustError::BadSignature {
        path: sig_path.clone(),
        why: why.to_owned(),
    };
    let sig = minisign_verify::Signature::decode(&text)
        .map_err(|_| bad("not a minisign signature file"))?;
    // The key id is the signature line's bytes 2..10 (after "ED" or "Ed").
    let line = text.lines().nth(1).unwrap_or_default().trim();
    let raw = base64_decode(line).ok_or_else(|| bad("not a minisign signature file"))?;
    if raw.len() != 74 {
        return Err(bad("not a minisign signature file"));
    }
    if raw[..2] != *b"ED" {
        return Err(bad(
            "a legacy (not pre-hashed) signature; sign again without `-l`",
        ));
    }
    let id = key_id(&raw[2..10]);
    let key = keys
        .iter()
        .find(|k| k.key_id == id)
        .ok_or_else(|| TrustError::Untrusted {
            path: file.to_owned(),
            key_id: id,
        })?;
    Ok(Some(Checked { sig, key, sig_path }))
}

/// A reader that feeds every byte it passes to a minisign stream verifier.
pub struct Verifying<'a, R> {
    inner: R,
    verifier: minisign_verify::StreamVerifier<'a>,
}

impl<R: Read> Read for Verifying<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.verifier.update(&buf[..n]);
        Ok(n)
    }
}

impl<'a, R: Read> Verifying<'a, R> {
    pub fn new(inner: R, checked: &'a Checked<'_>) -> Result<Self, TrustError> {
        let verifier =
            checked
                .key
                .key
                .verify_stream(&checked.sig)
                .map_err(|e| TrustError::BadSignature {
                    path: checked.sig_path.clone(),
                    why: e.to_string(),
                })?;
        Ok(Verifying { inner, verifier })
    }

    /// After the whole file went through: whether the signature holds.
    pub fn finish(mut self, file: &Path) -> Result<R, TrustError> {
        self.verifier.finalize().map_err(|_| TrustError::Mismatch {
            path: file.to_owned(),
        })?;
        Ok(self.inner)
    }
}

/// Verifies `path` against `path.minisig` and the `[trust]` keys, reading
/// the file once from start to end (for a detached signature such as a
/// release `MANIFEST`'s). An unsigned file is refused whatever
/// `require_signature` says: the caller asked for a verification.
pub fn verify_detached(path: &Path, trust: &Trust) -> Result<SignerInfo, TrustError> {
    let keys = keys(trust)?;
    let checked = signature_of(path, &keys)?.ok_or_else(|| TrustError::Unsigned {
        path: path.to_owned(),
        hint: "",
    })?;
    let read_err = |source| TrustError::Read {
        path: path.to_owned(),
        source,
    };
    let file = open_regular(path).map_err(read_err)?;
    let mut v = Verifying::new(std::io::BufReader::with_capacity(1 << 20, file), &checked)?;
    std::io::copy(&mut v, &mut std::io::sink()).map_err(read_err)?;
    v.finish(path)?;
    Ok(checked.signer())
}

/// Standard base64 (with padding), as minisign writes keys and signatures.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_id_is_printed_as_minisign_prints_it() {
        // Little-endian key number 0x0A00000000000001: no leading zero.
        let raw = [1, 0, 0, 0, 0, 0, 0, 0x0a];
        assert_eq!(key_id(&raw), "A00000000000001");
    }

    use super::*;

    #[test]
    fn base64_round_trips_minisigns_key_line() {
        // minisign-verify's own test key.
        let k = TrustedKey::from_base64("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3")
            .unwrap();
        assert_eq!(k.key_id, "E7620F1842B4E81F");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert!(base64_decode("T===").is_none());
        assert!(TrustedKey::from_base64("RWQ").is_err());
    }
}
