//! Data directory initialisation (`edgechat init`, and `serve` on first start).
//!
//! Writes, each only if missing (existing material is never overwritten):
//! `certs/ca.pem` + `ca.key` (a development CA), `certs/server.pem` + `server.key` (SANs
//! `localhost`, `127.0.0.1`, `::1` and the configured host names), `certs/client.pem` +
//! `client.key` (a client certificate from the same CA), `keys/<time>-<kid>.pem` (the Ed25519
//! signing key, PKCS#8), `edgechat.toml` (the example config) and the database. Private keys
//! are created with mode 0600, the directories 0700.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

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
    /// Signing key.
    #[error(transparent)]
    Key(#[from] crate::auth::keys::KeyError),
    /// Database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Writes `bytes` to a new file readable only by its owner; fails if the file exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    let io = |source| InitError::Io { path: path.to_path_buf(), source };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
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
pub fn init_data_dir(
    dir: &Path,
    hostnames: &[String],
    now_ms: i64,
) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    mkdir_private(dir)?;
    let certs = dir.join("certs");
    mkdir_private(&certs)?;
    ensure_certs(&certs, hostnames, &mut report)?;
    let keys = dir.join("keys");
    mkdir_private(&keys)?;
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
        write_public(&config, text.as_bytes())?;
        report.created.push(config);
    }
    let db = dir.join(DB_FILE_NAME);
    if !db.exists() {
        drop(Store::open(&db, 1 << 20)?);
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
    if !ca_pem.exists() && !ca_key.exists() {
        let key = KeyPair::generate().map_err(cert_err(&ca_key))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("edgechat development CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(3650);
        let cert = params.self_signed(&key).map_err(cert_err(&ca_pem))?;
        write_private(&ca_key, key.serialize_pem().as_bytes())
            .map_err(|source| InitError::Io { path: ca_key.clone(), source })?;
        write_public(&ca_pem, cert.pem().as_bytes())?;
        report.created.extend([ca_pem.clone(), ca_key.clone()]);
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
    if pem.exists() || key_path.exists() {
        return Ok(());
    }
    let (cert, key) = sign_leaf(certs, leaf)?;
    write_private(&key_path, key.as_bytes())
        .map_err(|source| InitError::Io { path: key_path.clone(), source })?;
    write_public(&pem, cert.as_bytes())?;
    report.created.extend([pem, key_path]);
    Ok(())
}

/// Signs a leaf certificate with the CA in `certs`; returns (certificate PEM, key PEM).
fn sign_leaf(certs: &Path, leaf: &Leaf<'_>) -> Result<(String, String), InitError> {
    let ca_pem_path = certs.join("ca.pem");
    let ca_key_path = certs.join("ca.key");
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| InitError::Io { path: p.to_path_buf(), source })
    };
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(cert_err(&ca_key_path))?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&ca_pem_path)?, ca_key).map_err(cert_err(&ca_pem_path))?;
    let key = KeyPair::generate().map_err(cert_err(certs))?;
    let mut params = CertificateParams::new(leaf.sans.clone()).map_err(cert_err(certs))?;
    params.distinguished_name = dn(leaf.cn);
    params.extended_key_usages = vec![leaf.usage.clone()];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = days_from_now(-1);
    params.not_after = days_from_now(825);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err(certs))?;
    Ok((cert.pem(), key.serialize_pem()))
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
    let leaf = Leaf { cn: name, sans: vec![], usage: ExtendedKeyUsagePurpose::ClientAuth };
    let (cert_pem, key_pem) = sign_leaf(&certs, &leaf)?;
    write_private(&key, key_pem.as_bytes())
        .map_err(|source| InitError::Io { path: key.clone(), source })?;
    write_public(&pem, cert_pem.as_bytes())?;
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
    }
}
