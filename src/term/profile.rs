//! Session profiles (the convention of `gh auth login` and `nats context`): one small TOML
//! file per profile under the user's config directory, holding where the server is, how to
//! reach it and the refresh token, so `edgechat chat`, `send` and `tail` need no password.
//!
//! The directory is `$EDGECHAT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/edgechat`, else
//! `~/.config/edgechat`; profiles are `profiles/NAME.toml` (mode 0600, the directory 0700),
//! chosen by `--profile NAME`, `EDGECHAT_PROFILE`, or `default`. A profile is rewritten whole
//! (`files::replace`) on every token rotation, under `profiles/NAME.lock`, so processes
//! sharing it never present a spent refresh token (see `client::session::TokenStore`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::client::session::{Client, TokenStore};
use crate::client::{ClientError, TlsFiles};
use crate::proto;

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// How a profile reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP/2 over TLS (or h2c for `http://`).
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

/// One saved session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The server as given to `login` (`https://host:port` or `http://host:port`).
    pub server: String,
    /// HTTP/2 or HTTP/3 (same host and port, UDP).
    pub transport: Transport,
    /// CA file, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate and key, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// See `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Who is logged in.
    pub username: String,
    /// Their id.
    pub user_id: String,
    /// The newest refresh token (single use: rotated on every refresh).
    pub refresh_token: String,
}

impl Profile {
    /// The URL the client library dials: `h3://host:port` for HTTP/3.
    pub fn url(&self) -> String {
        match self.transport {
            Transport::H2 => self.server.clone(),
            Transport::H3 => {
                let rest = self.server.split_once("://").map(|(_, r)| r).unwrap_or(&self.server);
                format!("h3://{rest}")
            }
        }
    }

    /// TLS files for the client library.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles { ca: self.ca.clone(), client_cert: self.cert.clone().zip(self.key.clone()) }
    }

    /// "HTTP/2" or "HTTP/3", for status lines.
    pub fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::H2 => "HTTP/2",
            Transport::H3 => "HTTP/3",
        }
    }
}

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No such profile.
    #[error("no profile `{0}`: log in first with `edgechat login --user NAME{1}`")]
    Missing(String, String),
    /// Bad name.
    #[error("bad profile name `{0}`: use 1-64 of a-z 0-9 _ . -")]
    BadName(String),
    /// The file is unreadable or malformed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// No config directory could be found.
    #[error("no config directory: set EDGECHAT_CONFIG_DIR, XDG_CONFIG_HOME or HOME")]
    NoDir,
}

impl From<ProfileError> for ClientError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::File { path, message } => ClientError::File { path, message },
            e => ClientError::Transport(e.to_string()),
        }
    }
}

/// The profiles directory, from the environment given (so tests need not touch the real one).
pub fn dir_from(env: impl Fn(&str) -> Option<String>) -> Result<PathBuf, ProfileError> {
    let base = env("EDGECHAT_CONFIG_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("XDG_CONFIG_HOME").filter(|v| !v.is_empty()).map(|v| Path::new(&v).join("edgechat"))
        })
        .or_else(|| {
            env("HOME").filter(|v| !v.is_empty()).map(|h| Path::new(&h).join(".config/edgechat"))
        })
        .ok_or(ProfileError::NoDir)?;
    Ok(base.join("profiles"))
}

/// The profiles directory of this process's environment.
pub fn dir() -> Result<PathBuf, ProfileError> {
    dir_from(|k| std::env::var(k).ok())
}

/// The profile name to use: `--profile`, else `EDGECHAT_PROFILE`, else `default`.
pub fn chosen(flag: Option<&str>) -> Result<String, ProfileError> {
    let name = flag
        .map(str::to_string)
        .or_else(|| std::env::var("EDGECHAT_PROFILE").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_PROFILE.into());
    check_name(&name)?;
    Ok(name)
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok { Ok(()) } else { Err(ProfileError::BadName(name.into())) }
}

/// A profile's files in a directory.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The profile's name.
    pub name: String,
    /// `NAME.toml`.
    pub path: PathBuf,
    lock: PathBuf,
}

impl Slot {
    /// The slot of `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<Slot, ProfileError> {
        check_name(name)?;
        Ok(Slot {
            name: name.into(),
            path: dir.join(format!("{name}.toml")),
            lock: dir.join(format!("{name}.lock")),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ProfileError {
        ProfileError::File { path: self.path.display().to_string(), message: e.to_string() }
    }

    /// Reads the profile; `Missing` if there is none.
    pub fn load(&self) -> Result<Profile, ProfileError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let flag = if self.name == DEFAULT_PROFILE {
                    String::new()
                } else {
                    format!(" --profile {}", self.name)
                };
                return Err(ProfileError::Missing(self.name.clone(), flag));
            }
            Err(e) => return Err(self.err(e)),
        };
        toml::from_str(&text).map_err(|e| self.err(e))
    }

    /// Writes the profile whole, owner-only, creating the directory (0700) if needed.
    pub fn save(&self, p: &Profile) -> Result<(), ProfileError> {
        let dir = self.path.parent().expect("a slot's path has a directory");
        create_private_dir(dir).map_err(|e| self.err(e))?;
        let text = toml::to_string(p).map_err(|e| self.err(e))?;
        crate::files::replace(&self.path, text.as_bytes(), crate::files::Mode::Private)
            .map_err(|e| self.err(e))
    }

    /// Deletes the profile (and its lock file); fine if it is already gone.
    pub fn remove(&self) -> Result<(), ProfileError> {
        for p in [&self.path, &self.lock] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Holds this profile's lock (an exclusive `flock` on `NAME.lock`) until the guard drops.
    pub fn lock(&self) -> Result<std::fs::File, ProfileError> {
        let dir = self.path.parent().expect("a slot's path has a directory");
        create_private_dir(dir).map_err(|e| self.err(e))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| self.err(e))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(self.err(std::io::Error::last_os_error()));
            }
        }
        Ok(f)
    }

    /// A client for this profile that saves every rotated refresh token back into it.
    pub fn client(&self, p: &Profile) -> Client {
        let client = Client::new(&p.url(), p.tls());
        client.resume(&p.refresh_token);
        client.keep_tokens_in(Arc::new(self.clone()));
        client
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

impl TokenStore for Slot {
    fn lock(&self) -> Result<Box<dyn Send>, ClientError> {
        Ok(Box::new(Slot::lock(self)?))
    }

    fn refresh_token(&self) -> Result<Option<String>, ClientError> {
        match self.load() {
            Ok(p) => Ok(Some(p.refresh_token)),
            // Logged out meanwhile: refreshing with what this process holds fails cleanly.
            Err(ProfileError::Missing(..)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save(&self, tokens: &proto::AuthResponse) -> Result<(), ClientError> {
        let mut p = match self.load() {
            Ok(p) => p,
            // `logout` removed the profile: do not bring it back.
            Err(ProfileError::Missing(..)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        p.refresh_token = tokens.refresh_token.clone();
        Ok(Slot::save(self, &p)?)
    }
}

/// A profile's name and what reading it gave.
pub type Listed = (String, Result<Profile, ProfileError>);

/// Every profile in `dir`, by name.
pub fn list(dir: &Path) -> Result<Vec<Listed>, ProfileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ProfileError::File {
                path: dir.display().to_string(),
                message: e.to_string(),
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = name.strip_suffix(".toml") else { continue };
        let Ok(slot) = Slot::new(dir, name) else { continue };
        out.push((slot.name.clone(), slot.load()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        Profile {
            server: "https://chat.example:7443".into(),
            transport: Transport::H3,
            ca: Some("/etc/ca.pem".into()),
            cert: None,
            key: None,
            username: "alice".into(),
            user_id: "u1".into(),
            refresh_token: "r1".into(),
        }
    }

    #[test]
    fn the_directory_follows_the_environment_in_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        const ALL: &[(&str, &str)] =
            &[("EDGECHAT_CONFIG_DIR", "/a"), ("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(dir_from(env(ALL)).unwrap(), Path::new("/a/profiles"));
        assert_eq!(
            dir_from(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            Path::new("/x/edgechat/profiles")
        );
        assert_eq!(
            dir_from(env(&[("EDGECHAT_CONFIG_DIR", ""), ("HOME", "/h")])).unwrap(),
            Path::new("/h/.config/edgechat/profiles")
        );
        assert!(matches!(dir_from(env(&[])), Err(ProfileError::NoDir)));
    }

    #[test]
    fn names_are_checked() {
        for good in ["default", "work-2", "a.b_c"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "Upper", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_profile_round_trips_owner_only_and_saves_rotated_tokens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("profiles");
        let slot = Slot::new(&dir, "work").unwrap();
        assert!(matches!(slot.load(), Err(ProfileError::Missing(..))));
        slot.save(&sample()).unwrap();
        assert_eq!(slot.load().unwrap(), sample());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&slot.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let rotated = proto::AuthResponse { refresh_token: "r2".into(), ..Default::default() };
        TokenStore::save(&slot, &rotated).unwrap();
        assert_eq!(TokenStore::refresh_token(&slot).unwrap().as_deref(), Some("r2"));
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "work");
        slot.remove().unwrap();
        // A rotation after logout does not bring the profile back.
        TokenStore::save(&slot, &rotated).unwrap();
        assert!(!slot.path.exists());
        assert!(list(&dir).unwrap().is_empty());
    }

    #[test]
    fn the_h3_url_keeps_host_and_port() {
        assert_eq!(sample().url(), "h3://chat.example:7443");
        let h2 = Profile { transport: Transport::H2, ..sample() };
        assert_eq!(h2.url(), "https://chat.example:7443");
    }

    #[test]
    fn a_malformed_profile_names_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = Slot::new(tmp.path(), "x").unwrap();
        std::fs::write(&slot.path, "server = 3").unwrap();
        let e = slot.load().unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
    }
}
