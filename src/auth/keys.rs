//! The signing keyring: Ed25519 keys as PKCS#8 PEM files in `<data_dir>/keys/`.
//!
//! Every key file there is trusted for verification (by `kid`, derived from the public key);
//! the newest file (names sort by creation time) signs new tokens. Rotation adds a file; old
//! public keys stay trusted until their file is removed, so nobody is logged out by a rotation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sha2::{Digest, Sha256};

/// A keyring problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// I/O on the key directory or a key file.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not an Ed25519 PKCS#8 PEM private key.
    #[error("{path}: not an Ed25519 PKCS#8 PEM private key ({message})")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// No key file at all.
    #[error("no signing key in {0}; run `edgechat init` or `edgechat keys rotate`")]
    Empty(PathBuf),
}

/// One signing key and what verification needs of it.
pub struct SigningEntry {
    /// Key id carried in the JWT header.
    pub kid: String,
    /// jsonwebtoken's encoding key (the PKCS#8 DER).
    pub encoding: jsonwebtoken::EncodingKey,
    /// jsonwebtoken's decoding key (the raw public key).
    pub decoding: jsonwebtoken::DecodingKey,
}

/// All trusted keys, and which one signs.
pub struct Keyring {
    keys: HashMap<String, SigningEntry>,
    active: String,
}

/// The `kid` of a public key: the first 16 characters of base64url(SHA-256(public key)).
pub fn kid_of(public: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(public))[..16].to_string()
}

fn entry_from(key: &SigningKey, path: &Path) -> Result<SigningEntry, KeyError> {
    let public = key.verifying_key().to_bytes();
    let der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::BadKey { path: path.to_path_buf(), message: e.to_string() })?;
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
            .map_err(|e| KeyError::BadKey { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(SigningEntry {
        kid: kid_of(&public),
        encoding: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        decoding,
    })
}

impl Keyring {
    /// Loads every `*.pem` in `dir`; the lexically last file name is the active signer.
    pub fn load(dir: &Path) -> Result<Keyring, KeyError> {
        let io = |source| KeyError::Io { path: dir.to_path_buf(), source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        files.sort();
        let mut keys = HashMap::new();
        let mut active = None;
        for path in files {
            let pem = std::fs::read_to_string(&path)
                .map_err(|source| KeyError::Io { path: path.clone(), source })?;
            let key = SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| KeyError::BadKey { path: path.clone(), message: e.to_string() })?;
            let entry = entry_from(&key, &path)?;
            active = Some(entry.kid.clone());
            keys.insert(entry.kid.clone(), entry);
        }
        let active = active.ok_or_else(|| KeyError::Empty(dir.to_path_buf()))?;
        Ok(Keyring { keys, active })
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningEntry {
        &self.keys[&self.active]
    }

    /// A trusted key by `kid`.
    pub fn get(&self, kid: &str) -> Option<&SigningEntry> {
        self.keys.get(kid)
    }
}

/// Writes a new Ed25519 key into `dir` (mode 0600) named so it sorts after every existing one,
/// and returns its `kid`. Never overwrites a file.
pub fn generate_key(dir: &Path, now_ms: i64) -> Result<String, KeyError> {
    let io = |path: PathBuf| move |source| KeyError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let kid = kid_of(&key.verifying_key().to_bytes());
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::BadKey { path: dir.to_path_buf(), message: e.to_string() })?;
    let path = dir.join(format!("{now_ms:016}-{kid}.pem"));
    crate::init::write_private(&path, pem.as_bytes()).map_err(io(path.clone()))?;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_keys_trusted_and_signs_with_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Keyring::load(dir.path()), Err(KeyError::Empty(_))));
        let k1 = generate_key(dir.path(), 1000).unwrap();
        let ring = Keyring::load(dir.path()).unwrap();
        assert_eq!(ring.active().kid, k1);
        let k2 = generate_key(dir.path(), 2000).unwrap();
        let ring = Keyring::load(dir.path()).unwrap();
        assert_eq!(ring.active().kid, k2);
        assert!(ring.get(&k1).is_some());
        assert_ne!(k1, k2);
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.pem"), "garbage").unwrap();
        let e = Keyring::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("x.pem"), "{e}");
    }
}
