//! The signing keyring: Ed25519 keys as PKCS#8 PEM files in `<data_dir>/keys/`.
//!
//! Every key file there is trusted for verification (by `kid`, derived from the public key);
//! the newest file (names sort by creation time) signs new tokens. Rotation adds a file; old
//! public keys stay trusted until their file is removed, so nobody is logged out by a rotation.
//!
//! `[auth] trusted_keys` adds verify-only keys of an outside issuer (a site's identity service
//! signing edgechat tokens): PEM public keys or JWKS files (RFC 8037 OKP keys). [`Keyring::jwks`]
//! publishes every trusted public key the same way, for other services to verify edgechat's
//! tokens.

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
    /// A `[auth] trusted_keys` file or one of its keys cannot be trusted.
    #[error("auth.trusted_keys: {path}: {message}")]
    Trusted {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
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
    /// Verify-only keys from `[auth] trusted_keys`, by `kid`.
    trusted: HashMap<String, TrustedKey>,
    active: String,
}

/// A verify-only public key.
struct TrustedKey {
    public: [u8; 32],
    decoding: jsonwebtoken::DecodingKey,
}

/// The longest `kid` accepted from a JWKS file.
const MAX_KID_CHARS: usize = 128;

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
        Ok(Keyring { keys, trusted: HashMap::new(), active })
    }

    /// Adds the verify-only keys of `files` (each a PEM public key, `-----BEGIN PUBLIC KEY`,
    /// whose `kid` is [`kid_of`] it, or a JWKS document with the issuer's own `kid`s). Refused,
    /// naming the file and key: anything but an Ed25519 key, a key not meant for signatures,
    /// a missing or duplicate `kid` (across all files and edgechat's own keys).
    pub fn trust(&mut self, files: &[PathBuf]) -> Result<(), KeyError> {
        for path in files {
            let bad = |message: String| KeyError::Trusted { path: path.clone(), message };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let found = if text.trim_start().starts_with('{') {
                parse_jwks(&text).map_err(bad)?
            } else {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&text).map_err(|e| {
                    bad(format!("not an Ed25519 PEM public key or a JWKS document ({e})"))
                })?;
                let public = key.to_bytes();
                vec![(kid_of(&public), public)]
            };
            if found.is_empty() {
                return Err(bad("holds no key".into()));
            }
            for (kid, public) in found {
                if self.keys.contains_key(&kid) || self.trusted.contains_key(&kid) {
                    return Err(bad(format!(
                        "key `{kid}`: a key with this kid is already trusted"
                    )));
                }
                let decoding =
                    jsonwebtoken::DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
                        .map_err(|e| bad(format!("key `{kid}`: {e}")))?;
                self.trusted.insert(kid, TrustedKey { public, decoding });
            }
        }
        Ok(())
    }

    /// The verification key for `kid`: one of edgechat's own or a trusted one.
    pub fn verifying(&self, kid: &str) -> Option<&jsonwebtoken::DecodingKey> {
        match self.keys.get(kid) {
            Some(k) => Some(&k.decoding),
            None => self.trusted.get(kid).map(|t| &t.decoding),
        }
    }

    /// Every public key tokens are verified with, as a JWKS document (RFC 7517; Ed25519 keys as
    /// RFC 8037 OKP keys), sorted by `kid`.
    pub fn jwks(&self) -> serde_json::Value {
        let own = self.keys.values().map(|k| {
            let public = k.decoding.try_get_as_bytes().map(<[u8]>::to_vec).unwrap_or_default();
            (k.kid.clone(), public)
        });
        let trusted = self.trusted.iter().map(|(kid, t)| (kid.clone(), t.public.to_vec()));
        let mut all: Vec<(String, Vec<u8>)> = own.chain(trusted).collect();
        all.sort();
        let keys: Vec<serde_json::Value> = all
            .into_iter()
            .map(|(kid, public)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
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

/// The keys of a JWKS document as (kid, public key), or what is wrong, naming the key.
fn parse_jwks(text: &str) -> Result<Vec<(String, [u8; 32])>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys =
        doc.get("keys").and_then(|k| k.as_array()).ok_or("not a JWKS document: no `keys` array")?;
    let mut out: Vec<(String, [u8; 32])> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let field = |name: &str| key.get(name).and_then(|v| v.as_str());
        let kid = match field("kid") {
            Some(k) if !k.is_empty() && k.chars().count() <= MAX_KID_CHARS => k.to_string(),
            Some(_) => return Err(format!("key {i}: `kid` must be 1-{MAX_KID_CHARS} characters")),
            None => return Err(format!("key {i}: has no `kid` (tokens name their key by it)")),
        };
        let name = format!("key `{kid}`");
        match (field("kty"), field("crv")) {
            (Some("OKP"), Some("Ed25519")) => {}
            (kty, crv) => {
                return Err(format!(
                    "{name}: is not an Ed25519 key (kty {}, crv {}); only OKP/Ed25519 is accepted",
                    kty.unwrap_or("missing"),
                    crv.unwrap_or("missing")
                ));
            }
        }
        if let Some(alg) = field("alg").filter(|a| *a != "EdDSA") {
            return Err(format!("{name}: alg `{alg}` (EdDSA only)"));
        }
        if let Some(usage) = field("use").filter(|u| *u != "sig") {
            return Err(format!("{name}: use `{usage}` (only signature keys verify tokens)"));
        }
        if key.get("d").is_some() {
            return Err(format!("{name}: holds a private key (`d`); publish only public keys"));
        }
        let x = field("x").ok_or(format!("{name}: has no `x`"))?;
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode(x)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(format!("{name}: `x` is not 32 base64url bytes"))?;
        if out.iter().any(|(k, _)| *k == kid) {
            return Err(format!("{name}: the kid appears twice"));
        }
        out.push((kid, public));
    }
    Ok(out)
}

/// Writes a new Ed25519 key into `dir` (mode 0600) named so it sorts after every existing one,
/// and returns its `kid`. Never overwrites a file.
pub fn generate_key(dir: &Path, now_ms: i64) -> Result<String, KeyError> {
    let io = |path: PathBuf| move |source| KeyError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let kid = kid_of(&key.verifying_key().to_bytes());
    // PKCS#8 v1 (RFC 8410: the seed only, no public key) is what `openssl genpkey -algorithm
    // ed25519` writes and what OpenSSL 3 and Python's `cryptography` read;
    // `SigningKey::to_pkcs8_pem` writes v2 with the public key attached, which both refuse.
    // `Keyring::load` reads both.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    let pem = v1
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::BadKey { path: dir.to_path_buf(), message: e.to_string() })?;
    let path = dir.join(format!("{now_ms:016}-{kid}.pem"));
    crate::files::create(&path, pem.as_bytes(), crate::files::Mode::Private)
        .map_err(io(path.clone()))?;
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
    fn keys_are_written_as_pkcs8_v1_and_v2_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), 1).unwrap();
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let pem = std::fs::read_to_string(&file).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        // RFC 8410 v1: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING {
        // OCTET STRING seed } }, 48 bytes, no [1] public key.
        assert_eq!(der.len(), 48, "{der:02x?}");
        assert_eq!(
            &der[..16],
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ]
        );
        // A v2 file (what earlier versions wrote) is still trusted.
        let v2 = SigningKey::from_bytes(&[7; 32]);
        let v2_pem = v2.to_pkcs8_pem(Default::default()).unwrap();
        assert!(v2_pem.len() > pem.len(), "v2 carries the public key");
        std::fs::write(dir.path().join("0000000000000000-old.pem"), v2_pem.as_bytes()).unwrap();
        let ring = Keyring::load(dir.path()).unwrap();
        assert_eq!(ring.active().kid, kid);
        assert!(ring.get(&kid_of(&v2.verifying_key().to_bytes())).is_some());
    }

    /// The file opens in OpenSSL, as operators will try (`openssl pkey -in data/keys/*.pem`).
    /// Skipped where there is no `openssl` binary; the DER test above pins the format anyway.
    #[test]
    fn openssl_reads_the_key_file() {
        let Ok(version) = std::process::Command::new("openssl").arg("version").output() else {
            eprintln!("no openssl here; skipped");
            return;
        };
        assert!(version.status.success());
        let dir = tempfile::tempdir().unwrap();
        let kid = generate_key(dir.path(), 1).unwrap();
        let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // SubjectPublicKeyInfo DER: a 12-byte prefix, then the raw 32-byte public key.
        let public: [u8; 32] = out.stdout[12..].try_into().unwrap();
        assert_eq!(kid_of(&public), kid);
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.pem"), "garbage").unwrap();
        let e = Keyring::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("x.pem"), "{e}");
    }

    #[test]
    fn trusted_pem_public_keys_verify_and_are_published() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let own = generate_key(&keys, 1).unwrap();
        let outside = SigningKey::from_bytes(&[3; 32]);
        let pem = outside.verifying_key().to_public_key_pem(Default::default()).unwrap();
        let file = dir.path().join("idp.pem");
        std::fs::write(&file, pem).unwrap();
        let mut ring = Keyring::load(&keys).unwrap();
        ring.trust(std::slice::from_ref(&file)).unwrap();
        let kid = kid_of(&outside.verifying_key().to_bytes());
        assert!(ring.verifying(&kid).is_some() && ring.verifying(&own).is_some());
        assert!(ring.get(&kid).is_none(), "trusted keys never sign");
        let kids: Vec<String> = ring.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        let mut want = vec![own.clone(), kid.clone()];
        want.sort();
        assert_eq!(kids, want);
        // The same key again is a duplicate kid; a private key file is not a public key.
        let e = ring.trust(std::slice::from_ref(&file)).unwrap_err().to_string();
        assert!(e.contains("idp.pem") && e.contains(&kid), "{e}");
        let private = std::fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
        let e = ring.trust(&[private]).unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 PEM public key"), "{e}");
    }
}
