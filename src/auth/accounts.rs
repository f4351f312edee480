//! Account operations: register, login (throttled), refresh with rotation and family
//! revocation on reuse, logout (one device or all), and the admin's user management.
//!
//! Refresh tokens are 256 random bits, stored only as SHA-256 hashes. Each login starts a
//! family; every refresh spends the presented token and issues the next one in the family;
//! presenting a spent token again revokes the family (someone copied it). Logout-everywhere
//! and disabling bump the user's `token_version` (access tokens die at once) and
//! `refresh_epoch` (refresh tokens die too).

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::hasher::{Hasher, Ticket};
use super::keys::Keyring;
use super::password::{self, CredentialError};
use super::throttle::LoginThrottle;
use super::token::{self, TokenError};
use crate::audit::{self, AuditAction};
use crate::change::{Change, Exec};
use crate::config::{AuthConfig, Registration, Role};
use crate::proto;
use crate::store::{
    self, FamilyRecord, InviteRecord, JobResult, RefreshRecord, Store, StoreError, UserRecord,
    WriteCtx, invites, users,
};

/// Why an account operation failed; each variant maps to one gRPC status (api::status).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad input.
    #[error("{0}")]
    InvalidArgument(String),
    /// Bad or revoked credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// Unknown user id.
    #[error("{0}")]
    NotFound(String),
    /// Username taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Throttled.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CredentialError> for AuthError {
    fn from(e: CredentialError) -> Self {
        AuthError::InvalidArgument(e.to_string())
    }
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        AuthError::Unauthenticated(e.to_string())
    }
}

/// Who is calling: the verified token's user, as the store knows them now.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Current global role.
    pub role: Role,
    /// When the access token expires (ms); a `Connect` stream ends then unless reauthenticated.
    pub expires_at_ms: i64,
    /// The token's version: a stream re-checks it against the store to catch revocations it
    /// could not have been told about (opened during a logout, or a lagged signal ring).
    pub token_version: u64,
}

/// Tokens handed out by register/login/refresh.
pub struct Issued {
    /// The user.
    pub user: UserRecord,
    /// Signed access JWT.
    pub access_token: String,
    /// Its expiry.
    pub access_expires_at_ms: i64,
    /// Opaque refresh token.
    pub refresh_token: String,
}

/// The account service. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    keys: Keyring,
    store: Store,
    exec: Exec,
    throttle: Mutex<LoginThrottle>,
    /// Tokens already verified -> their claims (bounded: cleared when full).
    verified: Mutex<std::collections::HashMap<String, token::Claims>>,
    /// Password hashing workers with a bounded queue (each hash takes 19 MiB and a core for a
    /// while): a flood of logins is refused at once instead of queueing without bound.
    hasher: Hasher,
}

/// Role names as they appear in tokens and on the command line.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Guest => "guest",
        Role::Member => "member",
        Role::Admin => "admin",
    }
}

/// The stored/wire enum for a role.
pub fn role_to_proto(role: Role) -> proto::GlobalRole {
    match role {
        Role::Guest => proto::GlobalRole::Guest,
        Role::Member => proto::GlobalRole::Member,
        Role::Admin => proto::GlobalRole::Admin,
    }
}

/// A stored/wire role value back to a [`Role`]; `None` for unspecified or unknown values.
pub fn role_from_proto(v: i32) -> Option<Role> {
    match proto::GlobalRole::try_from(v).ok()? {
        proto::GlobalRole::Guest => Some(Role::Guest),
        proto::GlobalRole::Member => Some(Role::Member),
        proto::GlobalRole::Admin => Some(Role::Admin),
        proto::GlobalRole::Unspecified => None,
    }
}

/// A user record as the wire `User`.
pub fn user_to_proto(u: &UserRecord) -> proto::User {
    proto::User {
        id: u.id.clone(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role,
        disabled: u.disabled,
        created_at_ms: u.created_at_ms,
    }
}

/// SHA-256 of a secret handed out (refresh token, invite code): only this is stored.
fn sha256_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_refresh_token() -> String {
    format!("rt_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// Verified tokens remembered at most (then the cache starts over).
const VERIFIED_CACHE: usize = 10_000;

/// Names and ids per `LookupUsers` call: a client's page of senders, not a crawl.
const MAX_LOOKUP: usize = 100;
const BAD_LOGIN: &str = "wrong username or password";
const BAD_REFRESH: &str = "refresh token is unknown, expired or revoked; log in again";

impl Accounts {
    /// Builds the service over an open store and where its changes go.
    pub fn new(config: AuthConfig, keys: Keyring, store: Store, exec: Exec) -> Accounts {
        let throttle = LoginThrottle::new(config.login_free_failures, config.login_max_delay);
        let hasher = Hasher::start(config.hash_workers, config.hash_queue);
        Accounts {
            inner: Arc::new(Inner {
                config,
                keys,
                store,
                exec,
                throttle: Mutex::new(throttle),
                verified: Mutex::new(std::collections::HashMap::new()),
                hasher,
            }),
        }
    }

    /// The store this service writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where this service's changes go.
    pub fn exec(&self) -> &Exec {
        &self.inner.exec
    }

    /// `Register`: open registration only; the new user gets the configured default role.
    pub async fn register(
        &self,
        username: &str,
        pw: &str,
        display_name: &str,
        invite_code: &str,
        now_ms: i64,
    ) -> Result<Issued, AuthError> {
        let invite = match self.inner.config.registration {
            Registration::Closed => {
                return Err(AuthError::PermissionDenied(
                    "registration is closed on this server; ask an admin for an account".into(),
                ));
            }
            Registration::Open => None,
            Registration::Invite => {
                let hash = sha256_of(invite_code);
                // Checked before the password is hashed, so a wrong code costs no hash; the
                // change checks again and spends the code with the account.
                invite_usable(&self.inner.store.read()?, &hash, invite_code, now_ms)?;
                Some(hash)
            }
        };
        let role = self.inner.config.default_role;
        let new = NewUser { username, pw, display_name, role, created_by: "", invite };
        let user = self.create(new, now_ms).await?;
        self.start_session(user, now_ms).await
    }

    /// `AdminService.CreateInviteCode`: a single-use code valid for `valid_for_secs` (0: 7
    /// days, at most 90). Only its hash is stored; the code is returned once.
    pub async fn create_invite(
        &self,
        who: &Principal,
        valid_for_secs: i64,
        note: &str,
        now_ms: i64,
    ) -> Result<proto::InviteCode, AuthError> {
        const DAY_SECS: i64 = 24 * 3600;
        let secs = match valid_for_secs {
            0 => 7 * DAY_SECS,
            s if (1..=90 * DAY_SECS).contains(&s) => s,
            s => {
                return Err(AuthError::InvalidArgument(format!(
                    "valid_for_secs {s} must be between 1 and {} (90 days), or 0 for 7 days",
                    90 * DAY_SECS
                )));
            }
        };
        if note.chars().count() > 200 {
            return Err(AuthError::InvalidArgument("note must be at most 200 characters".into()));
        }
        let code = format!("inv_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()));
        let rec = InviteRecord {
            created_by: who.user_id.clone(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms + secs * 1000,
            note: note.to_string(),
            used_by: String::new(),
        };
        let change = CreateInvite { hash: sha256_of(&code).to_vec(), rec: Some(rec.clone()) };
        self.inner.exec.run(change).await?;
        Ok(proto::InviteCode { code, expires_at_ms: rec.expires_at_ms, note: rec.note })
    }

    /// `AdminService.CreateUser`: like [`Accounts::create_user`], recorded in the audit log
    /// as the admin's act.
    pub async fn create_user_as(
        &self,
        admin: &Principal,
        username: &str,
        pw: &str,
        display_name: &str,
        role: Role,
        now_ms: i64,
    ) -> Result<UserRecord, AuthError> {
        let created_by = admin.user_id.as_str();
        self.create(NewUser { username, pw, display_name, role, created_by, invite: None }, now_ms)
            .await
    }

    /// Creates a user with a role (`Register`, `edgechat user add`, `AdminService.CreateUser`).
    pub async fn create_user(
        &self,
        username: &str,
        pw: &str,
        display_name: &str,
        role: Role,
        now_ms: i64,
    ) -> Result<UserRecord, AuthError> {
        self.create(
            NewUser { username, pw, display_name, role, created_by: "", invite: None },
            now_ms,
        )
        .await
    }

    async fn create(&self, new: NewUser<'_>, now_ms: i64) -> Result<UserRecord, AuthError> {
        let NewUser { username, pw, display_name, role, created_by, invite } = new;
        let username = password::normalize_username(username)?;
        password::check_password(pw)?;
        let display_name = display_name.trim();
        if display_name.chars().count() > 64 {
            return Err(AuthError::InvalidArgument(
                "display_name must be at most 64 characters".into(),
            ));
        }
        let hash = self.reserve_hash()?.hash(pw.to_string()).await;
        let rec = UserRecord {
            id: store::new_id('u'),
            display_name: if display_name.is_empty() {
                username.clone()
            } else {
                display_name.to_string()
            },
            username,
            role: role_to_proto(role) as i32,
            password_hash: hash,
            created_at_ms: now_ms,
            ..Default::default()
        };
        let change = CreateUser {
            rec: Some(rec),
            created_by: created_by.to_string(),
            invite_hash: invite.map(|h| h.to_vec()).unwrap_or_default(),
        };
        self.inner.exec.run(change).await
    }

    /// A hashing slot, or `RESOURCE_EXHAUSTED` with a retry hint when every one is taken.
    fn reserve_hash(&self) -> Result<Ticket, AuthError> {
        self.inner.hasher.reserve().map_err(|busy| AuthError::ResourceExhausted(busy.to_string()))
    }

    /// `Login`: throttled per username; unknown users cost the same hash as known ones.
    pub async fn login(&self, username: &str, pw: &str, now_ms: i64) -> Result<Issued, AuthError> {
        let name = password::normalize_username(username)?;
        if pw.is_empty() {
            return Err(AuthError::InvalidArgument("password is empty".into()));
        }
        let ticket = {
            let mut throttle = self.inner.throttle.lock().expect("throttle lock");
            if let Err(wait) = throttle.check(&name, now_ms) {
                return Err(AuthError::ResourceExhausted(format!(
                    "too many failed logins for `{name}`; retry in {} s",
                    wait.as_secs().max(1)
                )));
            }
            // A refused attempt (no hashing slot) is not counted: nothing was checked.
            let ticket = self.reserve_hash()?;
            // Counted as a failure until it succeeds, so parallel guesses cannot all slip
            // past the check while their hashes run.
            throttle.failed(&name, now_ms);
            ticket
        };
        let mut user = users::user_by_name(&self.inner.store.read()?, &name)?;
        if user.is_none() {
            // A cluster node may not have applied a registration made on another node yet.
            self.inner.exec.catch_up().await;
            user = users::user_by_name(&self.inner.store.read()?, &name)?;
        }
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let ok = ticket.verify(pw.to_string(), phc).await;
        let user = {
            let mut throttle = self.inner.throttle.lock().expect("throttle lock");
            match (ok, user) {
                (true, Some(u)) => {
                    throttle.succeeded(&name);
                    u
                }
                _ => return Err(AuthError::Unauthenticated(BAD_LOGIN.into())),
            }
        };
        if user.disabled {
            return Err(AuthError::PermissionDenied("this account is disabled".into()));
        }
        self.start_session(user, now_ms).await
    }

    /// Starts a refresh family for `user` and issues its first tokens.
    async fn start_session(&self, user: UserRecord, now_ms: i64) -> Result<Issued, AuthError> {
        let refresh = new_refresh_token();
        let hash = sha256_of(&refresh);
        let family_id = store::new_id('f');
        let rec = RefreshRecord {
            user_id: user.id.clone(),
            family_id: family_id.clone(),
            expires_at_ms: now_ms + self.inner.config.refresh_ttl.as_millis() as i64,
            spent: false,
            epoch: user.refresh_epoch,
        };
        let family =
            FamilyRecord { user_id: user.id.clone(), revoked: false, created_at_ms: now_ms };
        let start =
            StartSession { family_id, family: Some(family), hash: hash.to_vec(), rec: Some(rec) };
        self.inner.exec.run(start).await?;
        Ok(self.issue(user, refresh, now_ms))
    }

    fn issue(&self, user: UserRecord, refresh_token: String, now_ms: i64) -> Issued {
        let cfg = &self.inner.config;
        let role = role_from_proto(user.role).unwrap_or(Role::Guest);
        let ttl = cfg.access_ttl.as_secs() as i64;
        let claims = token::access_claims(
            &cfg.issuer,
            &cfg.audience,
            &user.id,
            role_name(role),
            user.token_version,
            now_ms,
            ttl,
        );
        Issued {
            access_token: token::issue(&self.inner.keys, &claims),
            access_expires_at_ms: claims.exp.saturating_mul(1000),
            refresh_token,
            user,
        }
    }

    /// `Refresh`: spends the presented token and issues the next one of its family. A spent
    /// token presented again revokes the whole family.
    pub async fn refresh(&self, refresh_token: &str, now_ms: i64) -> Result<Issued, AuthError> {
        if refresh_token.is_empty() {
            return Err(AuthError::InvalidArgument("refresh_token is empty".into()));
        }
        if refresh_token.len() > 256 {
            return Err(AuthError::Unauthenticated(BAD_REFRESH.into()));
        }
        let old = sha256_of(refresh_token);
        let next = new_refresh_token();
        let next_hash = sha256_of(&next);
        let ttl_ms = self.inner.config.refresh_ttl.as_millis() as i64;
        let change = Refresh { old: old.to_vec(), next_hash: next_hash.to_vec(), now_ms, ttl_ms };
        let user = self.inner.exec.run(change).await?;
        Ok(self.issue(user, next, now_ms))
    }

    /// `Logout`: revokes the given refresh token's family (this device) and, with
    /// `all_devices`, every token of the user. A refresh token of another user is refused.
    pub async fn logout(
        &self,
        who: &Principal,
        refresh_token: &str,
        all_devices: bool,
    ) -> Result<(), AuthError> {
        if refresh_token.is_empty() && !all_devices {
            return Err(AuthError::InvalidArgument(
                "give the refresh_token of this device, or set all_devices".into(),
            ));
        }
        let hash = (!refresh_token.is_empty()).then(|| sha256_of(refresh_token));
        let change =
            Logout { user_id: who.user_id.clone(), hash: hash.map(|h| h.to_vec()), all_devices };
        self.inner.exec.run(change).await
    }

    /// Verifies an access token and checks the user against the store: gone, disabled or a
    /// stale token version -> `Unauthenticated`.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Principal, AuthError> {
        let claims = self.verified(token, now_ms)?;
        let user = users::user(&self.inner.store.read()?, &claims.sub)?
            .ok_or_else(|| AuthError::Unauthenticated("token user does not exist".into()))?;
        if user.disabled {
            return Err(AuthError::Unauthenticated("this account is disabled".into()));
        }
        if user.token_version != claims.ver {
            return Err(AuthError::Unauthenticated("token has been revoked; log in again".into()));
        }
        Ok(Principal {
            role: role_from_proto(user.role).unwrap_or(Role::Guest),
            user_id: user.id,
            username: user.username,
            expires_at_ms: claims.exp.saturating_mul(1000),
            token_version: claims.ver,
        })
    }

    /// The token's claims, from the cache of tokens already verified (an Ed25519 verification
    /// per RPC is a large share of a small box's CPU). Verification depends only on the token,
    /// the keyring and the time, so a hit re-checks only expiry; user state (disabled, token
    /// version) is checked by the caller on every call regardless.
    fn verified(&self, token: &str, now_ms: i64) -> Result<token::Claims, AuthError> {
        if let Some(c) = self.inner.verified.lock().expect("cache lock").get(token)
            && c.exp.saturating_add(token::LEEWAY_SECS) > now_ms.div_euclid(1000)
        {
            return Ok(c.clone());
        }
        let cfg = &self.inner.config;
        let claims = token::verify(&self.inner.keys, &cfg.issuer, &cfg.audience, token, now_ms)?;
        let mut cache = self.inner.verified.lock().expect("cache lock");
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    /// Whether `who`'s token is still good: the user exists, is enabled, and has not bumped
    /// their token version since.
    pub fn is_current(&self, who: &Principal) -> Result<bool, AuthError> {
        let user = users::user(&self.inner.store.read()?, &who.user_id)?;
        Ok(user.is_some_and(|u| !u.disabled && u.token_version == who.token_version))
    }

    /// The user record of an id.
    pub fn user(&self, id: &str) -> Result<UserRecord, AuthError> {
        users::user(&self.inner.store.read()?, id)?
            .ok_or_else(|| AuthError::NotFound(format!("no user with id `{id}`")))
    }

    /// The users with these usernames or ids (any authenticated caller: names and ids are
    /// what members see of each other anyway). Unknown ones are left out; a username that is
    /// not even well-formed cannot exist, so it is left out too rather than refused.
    pub fn lookup(&self, names: &[String], ids: &[String]) -> Result<Vec<UserRecord>, AuthError> {
        if names.len() + ids.len() > MAX_LOOKUP {
            return Err(AuthError::InvalidArgument(format!(
                "at most {MAX_LOOKUP} usernames and ids per lookup, got {}",
                names.len() + ids.len()
            )));
        }
        let snap = self.inner.store.read()?;
        let mut found: Vec<UserRecord> = Vec::new();
        for name in names {
            let Ok(name) = crate::auth::password::normalize_username(name) else { continue };
            if let Some(u) = users::user_by_name(&snap, &name)? {
                found.push(u);
            }
        }
        for id in ids {
            if let Some(u) = users::user(&snap, id)? {
                found.push(u);
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        Ok(found)
    }

    /// Every user (admins only; the caller checks).
    pub fn list_users(&self) -> Result<Vec<UserRecord>, AuthError> {
        Ok(users::users(&self.inner.store.read()?)?)
    }

    /// Changes a user's global role; their current tokens and streams end (token version).
    /// `actor` (an admin's id, for the audit log) acts at `now_ms`.
    pub async fn set_role(
        &self,
        actor: &str,
        user_id: &str,
        role: Role,
        now_ms: i64,
    ) -> Result<UserRecord, AuthError> {
        let set_role = Some(role_to_proto(role) as i32);
        self.update_user(actor, UpdateUser { set_role, ..Default::default() }, user_id, now_ms)
            .await
    }

    /// Disables or re-enables a user. Disabling revokes every token of theirs at once.
    pub async fn set_disabled(
        &self,
        actor: &str,
        user_id: &str,
        disabled: bool,
        now_ms: i64,
    ) -> Result<UserRecord, AuthError> {
        let set_disabled = Some(disabled);
        self.update_user(actor, UpdateUser { set_disabled, ..Default::default() }, user_id, now_ms)
            .await
    }

    async fn update_user(
        &self,
        actor: &str,
        change: UpdateUser,
        user_id: &str,
        now_ms: i64,
    ) -> Result<UserRecord, AuthError> {
        let change =
            UpdateUser { id: user_id.to_string(), actor_id: actor.to_string(), now_ms, ..change };
        self.inner.exec.run(change).await
    }
}

/// A refresh-token hash as a change carries it; a wrong length matches no token.
fn hash32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap_or([0; 32])
}

/// Change: a new user (`Register`, `CreateUser`, `edgechat user add`); refused when the
/// username is taken.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateUser {
    /// The user, id and password hash included.
    #[prost(message, optional, tag = "1")]
    pub rec: Option<UserRecord>,
    /// The admin who created the user (`AdminService.CreateUser`; recorded in the audit log);
    /// empty for a registration or `edgechat user add`.
    #[prost(string, tag = "2")]
    pub created_by: String,
    /// With invite-only registration: the SHA-256 of the invite code, spent with the account.
    #[prost(bytes = "vec", tag = "3")]
    pub invite_hash: Vec<u8>,
}

impl Change for CreateUser {
    type T = UserRecord;
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<UserRecord, AuthError> {
        let rec = self.rec.unwrap_or_default();
        let now_ms = rec.created_at_ms;
        let invite = if self.invite_hash.is_empty() {
            None
        } else {
            let hash = hash32(&self.invite_hash);
            match invite_usable(&**tx, &hash, "-", now_ms) {
                Ok(inv) => Some((hash, inv)),
                Err(AuthError::Store(e)) => return Err(e),
                Err(e) => return Ok(Err(e)),
            }
        };
        if !users::create_user(tx, &rec)? {
            return Ok(Err(AuthError::AlreadyExists(format!(
                "username `{}` is taken",
                rec.username
            ))));
        }
        if let Some((hash, mut inv)) = invite {
            inv.used_by.clone_from(&rec.id);
            invites::put(tx, &hash, &inv)?;
        }
        if !self.created_by.is_empty() {
            let on = audit::Target { user_id: &rec.id, ..Default::default() };
            let act = AuditAction::UserCreated;
            audit::record(tx, now_ms, &self.created_by, act, on, "", rec.username.clone())?;
        }
        Ok(Ok(rec))
    }
}

/// What a new account is made of.
struct NewUser<'a> {
    username: &'a str,
    pw: &'a str,
    display_name: &'a str,
    role: Role,
    /// The admin creating it (empty: registration or the command line).
    created_by: &'a str,
    /// The invite code's hash, with invite-only registration.
    invite: Option<[u8; 32]>,
}

/// The invite a code (hashed `hash`) names, if it can still register an account; else why
/// not. `code` is only checked for being empty.
fn invite_usable(
    s: &impl store::Snapshot,
    hash: &[u8; 32],
    code: &str,
    now_ms: i64,
) -> Result<InviteRecord, AuthError> {
    let deny = |m: &str| Err(AuthError::PermissionDenied(m.to_string()));
    if code.is_empty() {
        return deny("registration on this server needs an invite code; ask an admin for one");
    }
    let Some(inv) = invites::get(s, hash)? else {
        return deny("this invite code is not known; check it, or ask an admin for a new one");
    };
    if !inv.used_by.is_empty() {
        return deny("this invite code was already used; ask an admin for a new one");
    }
    if inv.expires_at_ms <= now_ms {
        return deny("this invite code has expired; ask an admin for a new one");
    }
    Ok(inv)
}

/// Change: `AdminService.CreateInviteCode` (the code's hash and its record; recorded in the
/// audit log).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateInvite {
    /// SHA-256 of the code.
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    /// The invite.
    #[prost(message, optional, tag = "2")]
    pub rec: Option<InviteRecord>,
}

impl Change for CreateInvite {
    type T = ();
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<(), AuthError> {
        let rec = self.rec.unwrap_or_default();
        invites::put(tx, &hash32(&self.hash), &rec)?;
        let act = AuditAction::InviteCodeCreated;
        let (at, by) = (rec.created_at_ms, rec.created_by.as_str());
        audit::record(tx, at, by, act, audit::Target::default(), "", rec.note.clone())?;
        Ok(Ok(()))
    }
}

/// Change: a login's new refresh family and its first token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartSession {
    /// The family's id.
    #[prost(string, tag = "1")]
    pub family_id: String,
    /// The family.
    #[prost(message, optional, tag = "2")]
    pub family: Option<FamilyRecord>,
    /// SHA-256 of the refresh token (the token itself never leaves the node that issued it).
    #[prost(bytes = "vec", tag = "3")]
    pub hash: Vec<u8>,
    /// The token's record.
    #[prost(message, optional, tag = "4")]
    pub rec: Option<RefreshRecord>,
}

impl Change for StartSession {
    type T = ();
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<(), AuthError> {
        users::put_family(tx, &self.family_id, &self.family.unwrap_or_default())?;
        users::put_refresh_token(tx, &hash32(&self.hash), &self.rec.unwrap_or_default())?;
        Ok(Ok(()))
    }
}

/// Change: spend the refresh token hashed `old` and store its successor `next_hash`; a spent
/// token presented again revokes its family (written, and refused).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refresh {
    /// Hash of the presented token.
    #[prost(bytes = "vec", tag = "1")]
    pub old: Vec<u8>,
    /// Hash of the next token.
    #[prost(bytes = "vec", tag = "2")]
    pub next_hash: Vec<u8>,
    /// When it was asked.
    #[prost(int64, tag = "3")]
    pub now_ms: i64,
    /// The next token's lifetime.
    #[prost(int64, tag = "4")]
    pub ttl_ms: i64,
}

impl Change for Refresh {
    type T = UserRecord;
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<UserRecord, AuthError> {
        let (old, next_hash) = (hash32(&self.old), hash32(&self.next_hash));
        let (now_ms, ttl_ms) = (self.now_ms, self.ttl_ms);
        let deny = || Ok(Err(AuthError::Unauthenticated(BAD_REFRESH.into())));
        let Some(mut rec) = users::refresh_token(&**tx, &old)? else {
            return deny();
        };
        let Some(mut family) = users::family(&**tx, &rec.family_id)? else {
            return deny();
        };
        if family.revoked || rec.expires_at_ms < now_ms {
            return deny();
        }
        if rec.spent {
            family.revoked = true;
            users::put_family(tx, &rec.family_id, &family)?;
            return Ok(Err(AuthError::Unauthenticated(
                "refresh token was already used; this session has been revoked, log in again"
                    .into(),
            )));
        }
        let Some(user) = users::user(&**tx, &rec.user_id)? else {
            return deny();
        };
        if user.disabled || user.refresh_epoch != rec.epoch {
            return deny();
        }
        rec.spent = true;
        users::put_refresh_token(tx, &old, &rec)?;
        let fresh = RefreshRecord {
            spent: false,
            expires_at_ms: now_ms + ttl_ms,
            epoch: user.refresh_epoch,
            ..rec
        };
        users::put_refresh_token(tx, &next_hash, &fresh)?;
        Ok(Ok(user))
    }
}

/// Change: revoke the family of the token hashed `hash` and, with `all_devices`, every token
/// of the user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Logout {
    /// The user logging out.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Hash of this device's refresh token, if given.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub hash: Option<Vec<u8>>,
    /// Every device.
    #[prost(bool, tag = "3")]
    pub all_devices: bool,
}

impl Change for Logout {
    type T = ();
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<(), AuthError> {
        let (user_id, all_devices) = (self.user_id, self.all_devices);
        let mut family = None;
        if let Some(hash) = self.hash {
            match users::refresh_token(&**tx, &hash32(&hash))? {
                Some(rec) if rec.user_id == user_id => {
                    family = users::family(&**tx, &rec.family_id)?.map(|f| (rec.family_id, f));
                }
                Some(_) => {
                    return Ok(Err(AuthError::InvalidArgument(
                        "refresh_token belongs to another user".into(),
                    )));
                }
                None if all_devices => {}
                None => {
                    return Ok(Err(AuthError::InvalidArgument("refresh_token is unknown".into())));
                }
            }
        }
        let user = if all_devices { users::user(&**tx, &user_id)? } else { None };
        if let Some((id, mut f)) = family {
            f.revoked = true;
            users::put_family(tx, &id, &f)?;
        }
        if let Some(mut user) = user {
            user.token_version += 1;
            user.refresh_epoch += 1;
            users::put_user(tx, &user)?;
            tx.revoke(&user.id, "logged out on all devices");
        }
        Ok(Ok(()))
    }
}

/// Change: a user's global role and/or disabled flag. A role change or a disable revokes the
/// user's tokens and ends their streams: the revocation is part of the committed batch, so it
/// happens even if the RPC that asked for it is cancelled after the commit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateUser {
    /// The user.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The new `proto::GlobalRole`.
    #[prost(int32, optional, tag = "2")]
    pub set_role: Option<i32>,
    /// Disable (true) or enable (false).
    #[prost(bool, optional, tag = "3")]
    pub set_disabled: Option<bool>,
    /// The admin acting (for the audit log).
    #[prost(string, tag = "4")]
    pub actor_id: String,
    /// When.
    #[prost(int64, tag = "5")]
    pub now_ms: i64,
}

impl Change for UpdateUser {
    type T = UserRecord;
    type E = AuthError;
    fn apply(self, tx: &mut WriteCtx<'_>) -> JobResult<UserRecord, AuthError> {
        let id = self.id;
        let Some(mut u) = users::user(&**tx, &id)? else {
            return Ok(Err(AuthError::NotFound(format!("no user with id `{id}`"))));
        };
        let mut revoked = None;
        let on = audit::Target { user_id: &id, ..Default::default() };
        if let Some(new) = self.set_role
            && u.role != new
        {
            u.role = new;
            u.token_version += 1;
            revoked = Some("global role changed; log in again (or refresh)");
            let name = proto::GlobalRole::try_from(new).unwrap_or_default().as_str_name();
            let detail = format!("now {}", name.trim_start_matches("GLOBAL_ROLE_").to_lowercase());
            let act = AuditAction::UserRoleChanged;
            audit::record(tx, self.now_ms, &self.actor_id, act, on, "", detail)?;
        }
        if let Some(disabled) = self.set_disabled {
            let revoke = disabled && !u.disabled;
            if disabled != u.disabled {
                let on = audit::Target { user_id: &id, ..Default::default() };
                let act =
                    if disabled { AuditAction::UserDisabled } else { AuditAction::UserEnabled };
                audit::record(tx, self.now_ms, &self.actor_id, act, on, "", String::new())?;
            }
            u.disabled = disabled;
            if revoke {
                u.token_version += 1;
                u.refresh_epoch += 1;
                revoked = Some("this account has been disabled");
            }
        }
        users::put_user(tx, &u)?;
        if let Some(why) = revoked {
            tx.revoke(&u.id, why);
        }
        Ok(Ok(u))
    }
}
