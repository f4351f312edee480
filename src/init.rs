//! Data directory initialisation (`edgechat init`, and `serve` on first start).
//!
//! Writes, each only if missing (existing material is never overwritten):
//! `certs/ca.pem` + `ca.key` (a development CA), `certs/server.pem` + `server.key` (SANs
//! `localhost`, `127.0.0.1`, `::1` and the configured host names), `certs/client.pem` +
//! `client.key` (a client certificate from the same CA), `keys/<time>-<kid>.pem` (the Ed25519
//! signing key, PKCS#8), `edgechat.toml` (the example config) and the database. Private keys
//! are created with mode 0600, the directories 0700.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::files::Mode;
use crate::store::{DB_FILE_NAME, Store};

/// An initialisation failure, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificate generation or parsing.
    #[error("certificate {path}: {message}")]
    Cert {
        /// Path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A certificate without its private key (deleted, or never written): init cannot finish
    /// it, and will not guess.
    #[error(
        "{cert} exists but its private key {key} does not; restore {key}, or remove {cert}{also} \
         so that `edgechat init` makes new ones"
    )]
    KeyMissing {
        /// The certificate.
        cert: PathBuf,
        /// Its missing key.
        key: PathBuf,
        /// Other files to remove with it (certificates the CA signed).
        also: String,
    },
    /// Signing key.
    #[error(transparent)]
    Key(#[from] crate::auth::keys::KeyError),
    /// Database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn create(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), InitError> {
    crate::files::create(path, bytes, mode)
        .map_err(|source| InitError::Io { path: path.to_path_buf(), source })
}

fn mkdir_private(dir: &Path) -> Result<(), InitError> {
    let io = |source| InitError::Io { path: dir.to_path_buf(), source };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io)
}

/// What `init` did, for the CLI to report.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files created.
    pub created: Vec<PathBuf>,
}

/// Initialises `dir`: everything missing is created, nothing existing is touched.
///
/// Crash-safe: every file is written whole or not at all ([`crate::files::create`]), private
/// keys before the certificates made from them, so a power cut leaves a directory that the
/// next call completes: a key without its certificate gets the certificate, temporary files
/// are removed. A certificate whose key is missing cannot be completed; the error names the
/// file to remove.
pub fn init_data_dir(
    dir: &Path,
    hostnames: &[String],
    now_ms: i64,
) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    mkdir_private(dir)?;
    let certs = dir.join("certs");
    mkdir_private(&certs)?;
    let keys = dir.join("keys");
    mkdir_private(&keys)?;
    for d in [dir.to_path_buf(), certs.clone(), certs.join("clients"), keys.clone()] {
        let removed = crate::files::remove_stale_temps(&d)
            .map_err(|source| InitError::Io { path: d.clone(), source })?;
        if removed > 0 {
            tracing::warn!(dir = %d.display(), removed, "removed files an interrupted start left");
        }
    }
    ensure_certs(&certs, hostnames, &mut report)?;
    let has_key = std::fs::read_dir(&keys)
        .map_err(|source| InitError::Io { path: keys.clone(), source })?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "pem"));
    if !has_key {
        let kid = crate::auth::keys::generate_key(&keys, now_ms)?;
        report.created.push(keys.join(format!("{now_ms:016}-{kid}.pem")));
    }
    let config = dir.join(crate::config::CONFIG_FILE_NAME);
    if !config.exists() {
        let text = include_str!("../config/edgechat.example.toml").replace(
            "data_dir = \"./data\"",
            "# data_dir is the directory holding this file.\n# data_dir = \"./data\"",
        );
        create(&config, text.as_bytes(), Mode::Public)?;
        report.created.push(config);
    }
    let db = dir.join(DB_FILE_NAME);
    if !db.exists() {
        // Made under a temporary name and renamed when complete, so a power cut never leaves
        // a half-created database under the real name.
        let temp = crate::files::temp_path(&db);
        drop(Store::open(&temp, 1 << 20)?);
        crate::files::publish(&temp, &db)
            .map_err(|source| InitError::Io { path: db.clone(), source })?;
        report.created.push(db);
    }
    Ok(report)
}

fn cert_err(path: &Path) -> impl Fn(rcgen::Error) -> InitError + '_ {
    move |e| InitError::Cert { path: path.to_path_buf(), message: e.to_string() }
}

fn ensure_certs(
    certs: &Path,
    hostnames: &[String],
    report: &mut InitReport,
) -> Result<(), InitError> {
    let ca_pem = certs.join("ca.pem");
    let ca_key = certs.join("ca.key");
    match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => {}
        (true, false) => {
            return Err(InitError::KeyMissing {
                cert: ca_pem,
                key: ca_key,
                also: " (and the certificates it signed: server.pem, server.key, client.pem, \
                       client.key)"
                    .into(),
            });
        }
        (false, has_key) => {
            let key = if has_key {
                // The key was written, the certificate not yet: finish the job.
                KeyPair::from_pem(&read(&ca_key)?).map_err(cert_err(&ca_key))?
            } else {
                let key = KeyPair::generate().map_err(cert_err(&ca_key))?;
                create(&ca_key, key.serialize_pem().as_bytes(), Mode::Private)?;
                report.created.push(ca_key.clone());
                key
            };
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("edgechat development CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = days_from_now(-1);
            params.not_after = days_from_now(3650);
            let cert = params.self_signed(&key).map_err(cert_err(&ca_pem))?;
            create(&ca_pem, cert.pem().as_bytes(), Mode::Public)?;
            report.created.push(ca_pem);
        }
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.extend(hostnames.iter().cloned());
    let server =
        Leaf { cn: "edgechat server", sans: names, usage: ExtendedKeyUsagePurpose::ServerAuth };
    ensure_leaf(certs, "server", &server, report)?;
    let client =
        Leaf { cn: "edgechat-client", sans: vec![], usage: ExtendedKeyUsagePurpose::ClientAuth };
    ensure_leaf(certs, "client", &client, report)
}

struct Leaf<'a> {
    cn: &'a str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
}

fn ensure_leaf(
    certs: &Path,
    stem: &str,
    leaf: &Leaf<'_>,
    report: &mut InitReport,
) -> Result<(), InitError> {
    let pem = certs.join(format!("{stem}.pem"));
    let key_path = certs.join(format!("{stem}.key"));
    let key = match (pem.exists(), key_path.exists()) {
        (true, true) => return Ok(()),
        (true, false) => {
            return Err(InitError::KeyMissing { cert: pem, key: key_path, also: String::new() });
        }
        // The key was written, the certificate not yet: sign one for it.
        (false, true) => KeyPair::from_pem(&read(&key_path)?).map_err(cert_err(&key_path))?,
        (false, false) => {
            let key = KeyPair::generate().map_err(cert_err(certs))?;
            create(&key_path, key.serialize_pem().as_bytes(), Mode::Private)?;
            report.created.push(key_path);
            key
        }
    };
    let cert = sign_leaf(certs, leaf, &key)?;
    create(&pem, cert.as_bytes(), Mode::Public)?;
    report.created.push(pem);
    Ok(())
}

fn read(p: &Path) -> Result<String, InitError> {
    std::fs::read_to_string(p).map_err(|source| InitError::Io { path: p.to_path_buf(), source })
}

/// Signs a certificate for `key` with the CA in `certs`; returns the certificate PEM.
fn sign_leaf(certs: &Path, leaf: &Leaf<'_>, key: &KeyPair) -> Result<String, InitError> {
    let ca_pem_path = certs.join("ca.pem");
    let ca_key_path = certs.join("ca.key");
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(cert_err(&ca_key_path))?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&ca_pem_path)?, ca_key).map_err(cert_err(&ca_pem_path))?;
    let mut params = CertificateParams::new(leaf.sans.clone()).map_err(cert_err(certs))?;
    params.distinguished_name = dn(leaf.cn);
    params.extended_key_usages = vec![leaf.usage.clone()];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = days_from_now(-1);
    params.not_after = days_from_now(825);
    let cert = params.signed_by(key, &issuer).map_err(cert_err(certs))?;
    Ok(cert.pem())
}

/// Issues a client certificate whose subject common name is `name` (for
/// `bind_client_cert`: the name must equal the token's username), signed by the data
/// directory's CA, into `certs/clients/NAME.pem` and `NAME.key`.
pub fn issue_client_cert(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), InitError> {
    let certs = dir.join("certs");
    let out = certs.join("clients");
    mkdir_private(&out)?;
    let pem = out.join(format!("{name}.pem"));
    let key = out.join(format!("{name}.key"));
    for p in [&pem, &key] {
        if p.exists() {
            return Err(InitError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
            });
        }
    }
    let leaf = Leaf { cn: name, sans: vec![], usage: ExtendedKeyUsagePurpose::ClientAuth };
    let key_pair = KeyPair::generate().map_err(cert_err(&key))?;
    let cert_pem = sign_leaf(&certs, &leaf, &key_pair)?;
    create(&key, key_pair.serialize_pem().as_bytes(), Mode::Private)?;
    create(&pem, cert_pem.as_bytes(), Mode::Public)?;
    Ok((pem, key))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

#[allow(clippy::disallowed_methods)] // certificate validity is wall-clock by nature
fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_everything_once_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let r = init_data_dir(&dir, &["chat.example".into()], 1).unwrap();
        for f in [
            "certs/ca.pem",
            "certs/ca.key",
            "certs/server.pem",
            "certs/server.key",
            "certs/client.pem",
            "certs/client.key",
            "edgechat.toml",
            DB_FILE_NAME,
        ] {
            assert!(dir.join(f).exists(), "{f}");
        }
        assert_eq!(r.created.len(), 9);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["certs/ca.key", "certs/server.key", "certs/client.key"] {
                let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let before = std::fs::read(dir.join("certs/ca.pem")).unwrap();
        let again = init_data_dir(&dir, &[], 2).unwrap();
        assert!(again.created.is_empty(), "{:?}", again.created);
        assert_eq!(before, std::fs::read(dir.join("certs/ca.pem")).unwrap());
        // The config file written there is valid.
        crate::config::RawConfig::from_file(&dir.join("edgechat.toml"))
            .unwrap()
            .validate()
            .unwrap();
        let (pem, _) = issue_client_cert(&dir, "alice").unwrap();
        assert!(pem.exists());
        assert!(issue_client_cert(&dir, "alice").is_err(), "never overwrites");
    }

    /// What a power cut can leave (each file is written whole or not at all, keys before the
    /// certificates made from them): the next start finishes the job, and keeps what exists.
    #[test]
    fn a_half_initialised_directory_is_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        init_data_dir(&dir, &[], 1).unwrap();
        let ca_key = std::fs::read(dir.join("certs/ca.key")).unwrap();
        let server_key = std::fs::read(dir.join("certs/server.key")).unwrap();
        // Cut after the keys were written, before their certificates; a temp file of the
        // database and one of a key file are left over; the database was never renamed in.
        for f in ["certs/ca.pem", "certs/server.pem", "certs/client.pem", "certs/client.key"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        for f in std::fs::read_dir(dir.join("keys")).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        std::fs::remove_file(dir.join(DB_FILE_NAME)).unwrap();
        let junk = [
            dir.join(format!("{}edgechat.redb-00", crate::files::TEMP_PREFIX)),
            dir.join(format!("keys/{}0001-kid.pem-00", crate::files::TEMP_PREFIX)),
        ];
        for j in &junk {
            std::fs::write(j, b"torn").unwrap();
        }
        let r = init_data_dir(&dir, &[], 2).unwrap();
        assert_eq!(r.created.len(), 6, "{:?}", r.created);
        for j in &junk {
            assert!(!j.exists(), "{}", j.display());
        }
        assert_eq!(std::fs::read(dir.join("certs/ca.key")).unwrap(), ca_key, "key kept");
        assert_eq!(std::fs::read(dir.join("certs/server.key")).unwrap(), server_key);
        // The completed material works together: the server certificate chains to the CA.
        let tls = crate::config::RawConfig {
            data_dir: dir.to_string_lossy().into_owned(),
            ..Default::default()
        }
        .validate()
        .unwrap()
        .tls;
        crate::transport::tls::server_config(&tls, &[b"h2"]).unwrap();
        let ring = crate::auth::keys::Keyring::load(&dir.join("keys")).unwrap();
        assert!(!ring.active().kid.is_empty());
        crate::store::Store::open(&dir.join(DB_FILE_NAME), 1 << 20).unwrap();
    }

    #[test]
    fn a_certificate_without_its_key_names_the_file_to_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        init_data_dir(&dir, &[], 1).unwrap();
        std::fs::remove_file(dir.join("certs/server.key")).unwrap();
        let e = init_data_dir(&dir, &[], 2).unwrap_err().to_string();
        assert!(
            e.contains("server.key") && e.contains("remove") && e.contains("server.pem"),
            "{e}"
        );
        std::fs::remove_file(dir.join("certs/ca.key")).unwrap();
        let e = init_data_dir(&dir, &[], 2).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("ca.key"), "{e}");
    }
}
