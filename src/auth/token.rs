//! Access tokens: EdDSA JWTs, issued and verified with every rule named here rather than left
//! to library defaults (DESIGN.md "Limits and hardening defaults").
//!
//! Verification order: size (8 KiB) before any decoding; three base64url parts; a header with
//! no duplicate keys, `alg` exactly `EdDSA` and a known `kid` (`jku`/`x5u`/`jwk` ignored);
//! the Ed25519 signature; a payload with no duplicate keys whose `exp`/`iat`/`nbf` are JSON
//! integers in 0..=2^63-1; `iss`, `aud`, `sub`, `jti` present; `typ` = `access` (a refresh
//! token is never an access token); `exp`/`nbf`/`iat` against `now` with 30 s of leeway.
//! Whether the user still exists, is enabled and has the same token version is checked by the
//! caller against the store.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::keys::Keyring;

/// Longest token accepted, checked before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 30;
/// The `typ` claim of access tokens.
const ACCESS: &str = "access";

/// The claims of an edgechat access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id.
    pub jti: String,
    /// Global role (`guest`, `member`, `admin`).
    pub role: String,
    /// The user's token version when issued.
    pub ver: u64,
    /// Token kind: always `access`.
    pub typ: String,
}

/// Why a token was refused. Every variant becomes `UNAUTHENTICATED` with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token is longer than 8 KiB")]
    TooLong,
    /// Not three base64url parts / not JSON / bad types.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// `alg` is not EdDSA.
    #[error("token algorithm `{0}` is not accepted (EdDSA only)")]
    Algorithm(String),
    /// No or unknown `kid`.
    #[error("token key id is unknown")]
    UnknownKey,
    /// Signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// A claim rule failed.
    #[error("token {0}")]
    Claim(&'static str),
}

/// Signs an access token for `claims` with the keyring's active key.
pub fn issue(keys: &Keyring, claims: &Claims) -> String {
    let key = keys.active();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing with a loaded Ed25519 key")
}

/// Builds the claims of a fresh access token.
pub fn access_claims(
    issuer: &str,
    audience: &str,
    user_id: &str,
    role: &str,
    version: u64,
    now_ms: i64,
    ttl_secs: i64,
) -> Claims {
    let now = now_ms.div_euclid(1000);
    Claims {
        iss: issuer.to_string(),
        aud: audience.to_string(),
        sub: user_id.to_string(),
        exp: now + ttl_secs,
        iat: now,
        nbf: None,
        jti: crate::store::new_id('t'),
        role: role.to_string(),
        ver: version,
        typ: ACCESS.to_string(),
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Payload as sent: `aud` may be a string or an array of strings (RFC 7519).
#[derive(Deserialize)]
struct WireClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
    role: Option<String>,
    ver: Option<u64>,
    typ: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Verifies a token against `keys`, `issuer`, `audience` at `now_ms`.
pub fn verify(
    keys: &Keyring,
    issuer: &str,
    audience: &str,
    token: &str,
    now_ms: i64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts".into()));
    };
    let header_json = b64(h64, "header")?;
    strict_json(&header_json, "header")?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let key =
        header.kid.as_deref().and_then(|k| keys.verifying(k)).ok_or(TokenError::UnknownKey)?;
    let signed = &token[..h64.len() + 1 + p64.len()];
    let ok =
        jsonwebtoken::crypto::verify(s64, signed.as_bytes(), key, jsonwebtoken::Algorithm::EdDSA)
            .map_err(|_| TokenError::BadSignature)?;
    if !ok {
        return Err(TokenError::BadSignature);
    }
    let payload = b64(p64, "payload")?;
    strict_json(&payload, "payload")?;
    let wire: WireClaims = serde_json::from_slice(&payload)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    check_claims(wire, issuer, audience, now_ms)
}

fn check_claims(
    w: WireClaims,
    issuer: &str,
    audience: &str,
    now_ms: i64,
) -> Result<Claims, TokenError> {
    let now = now_ms.div_euclid(1000);
    let exp = w.exp.ok_or(TokenError::Claim("has no exp"))?;
    let iat = w.iat.ok_or(TokenError::Claim("has no iat"))?;
    for v in [Some(exp), Some(iat), w.nbf].into_iter().flatten() {
        if v < 0 {
            return Err(TokenError::Claim("has a negative time"));
        }
    }
    let iss = w.iss.ok_or(TokenError::Claim("has no iss"))?;
    if iss != issuer {
        return Err(TokenError::Claim("has the wrong issuer"));
    }
    let aud_ok = match w.aud.ok_or(TokenError::Claim("has no aud"))? {
        Audience::One(a) => a == audience,
        Audience::Many(list) => list.iter().any(|a| a == audience),
    };
    if !aud_ok {
        return Err(TokenError::Claim("has the wrong audience"));
    }
    let sub = w.sub.filter(|s| !s.is_empty()).ok_or(TokenError::Claim("has no sub"))?;
    let jti = w.jti.filter(|s| !s.is_empty()).ok_or(TokenError::Claim("has no jti"))?;
    if w.typ.as_deref() != Some(ACCESS) {
        return Err(TokenError::Claim("is not an access token"));
    }
    let role = w.role.ok_or(TokenError::Claim("has no role"))?;
    let ver = w.ver.ok_or(TokenError::Claim("has no token version"))?;
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(TokenError::Claim("has expired"));
    }
    if let Some(nbf) = w.nbf
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(TokenError::Claim("is not valid yet (nbf)"));
    }
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Claim("was issued in the future (iat)"));
    }
    Ok(Claims {
        iss,
        aud: audience.to_string(),
        sub,
        exp,
        iat,
        nbf: w.nbf,
        jti,
        role,
        ver,
        typ: ACCESS.into(),
    })
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))
}

/// Refuses JSON with a duplicated object key at any depth (serde keeps the last one silently,
/// which would let two parties read one token differently).
fn strict_json(bytes: &[u8], what: &str) -> Result<(), TokenError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
}

struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::generate_key;

    const NOW: i64 = 1_700_000_000_000;

    fn new_ring() -> (tempfile::TempDir, Keyring) {
        let dir = tempfile::tempdir().unwrap();
        generate_key(dir.path(), 1).unwrap();
        let ring = Keyring::load(dir.path()).unwrap();
        (dir, ring)
    }

    fn claims() -> Claims {
        access_claims("edgechat", "edgechat", "u1", "member", 0, NOW, 900)
    }

    fn check(ring: &Keyring, token: &str) -> Result<Claims, TokenError> {
        verify(ring, "edgechat", "edgechat", token, NOW)
    }

    /// Signs arbitrary header and payload JSON with the ring's key.
    fn forge(ring: &Keyring, header: &str, payload: &str) -> String {
        let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &ring.active().encoding,
            jsonwebtoken::Algorithm::EdDSA,
        )
        .unwrap();
        format!("{msg}.{sig}")
    }

    fn header(ring: &Keyring) -> String {
        format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, ring.active().kid)
    }

    #[test]
    fn a_fresh_token_verifies() {
        let (_d, ring) = new_ring();
        let c = claims();
        assert_eq!(check(&ring, &issue(&ring, &c)).unwrap(), c);
    }

    #[test]
    fn alg_none_is_refused() {
        let (_d, ring) = new_ring();
        let t = issue(&ring, &claims());
        let payload = t.split('.').nth(1).unwrap();
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            check(&ring, &format!("{h}.{payload}.")),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let (_d, ring) = new_ring();
        let t = issue(&ring, &claims());
        let payload = t.split('.').nth(1).unwrap();
        let h = URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, ring.active().kid));
        let msg = format!("{h}.{payload}");
        // An attacker knows the public key and uses it as an HMAC secret.
        let public = ring.active().decoding.try_get_as_bytes().unwrap().to_vec();
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(&public),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            check(&ring, &format!("{msg}.{sig}")),
            Err(TokenError::Algorithm("HS256".into()))
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let (_d, ring) = new_ring();
        let t = issue(&ring, &claims());
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut c = claims();
        c.role = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(check(&ring, &parts.join(".")), Err(TokenError::BadSignature));
    }

    #[test]
    fn expiry_respects_the_leeway() {
        let (_d, ring) = new_ring();
        let mut c = claims();
        c.exp = NOW / 1000 - 29;
        assert!(check(&ring, &issue(&ring, &c)).is_ok());
        c.exp = NOW / 1000 - 31;
        assert_eq!(check(&ring, &issue(&ring, &c)), Err(TokenError::Claim("has expired")));
    }

    #[test]
    fn wrong_audience_or_issuer_is_refused() {
        let (_d, ring) = new_ring();
        let mut c = claims();
        c.aud = "someone-else".into();
        assert_eq!(
            check(&ring, &issue(&ring, &c)),
            Err(TokenError::Claim("has the wrong audience"))
        );
        let mut c = claims();
        c.iss = "evil".into();
        assert_eq!(check(&ring, &issue(&ring, &c)), Err(TokenError::Claim("has the wrong issuer")));
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let (_d, ring) = new_ring();
        let (_d2, other) = new_ring();
        assert_eq!(check(&ring, &issue(&other, &claims())), Err(TokenError::UnknownKey));
        let no_kid = forge(&ring, r#"{"alg":"EdDSA"}"#, &serde_json::to_string(&claims()).unwrap());
        assert_eq!(check(&ring, &no_kid), Err(TokenError::UnknownKey));
    }

    #[test]
    fn missing_claims_are_refused() {
        let (_d, ring) = new_ring();
        for claim in ["exp", "iat", "iss", "aud", "sub", "jti", "typ"] {
            let mut v = serde_json::to_value(claims()).unwrap();
            v.as_object_mut().unwrap().remove(claim);
            let t = forge(&ring, &header(&ring), &v.to_string());
            assert!(matches!(check(&ring, &t), Err(TokenError::Claim(_))), "{claim}");
        }
    }

    #[test]
    fn non_integer_times_duplicate_keys_and_future_iat_are_refused() {
        let (_d, ring) = new_ring();
        let base = serde_json::to_value(claims()).unwrap();
        let with = |k: &str, v: serde_json::Value| {
            let mut o = base.clone();
            o[k] = v;
            forge(&ring, &header(&ring), &o.to_string())
        };
        let exp = NOW / 1000 + 100;
        for bad in [
            serde_json::json!(exp as f64 + 0.5),
            serde_json::json!(exp.to_string()),
            serde_json::json!(true),
            serde_json::json!(-1),
            serde_json::json!(u64::MAX),
        ] {
            assert!(check(&ring, &with("exp", bad.clone())).is_err(), "{bad}");
        }
        assert_eq!(
            check(&ring, &with("iat", serde_json::json!(NOW / 1000 + 60))),
            Err(TokenError::Claim("was issued in the future (iat)"))
        );
        assert_eq!(
            check(&ring, &with("nbf", serde_json::json!(NOW / 1000 + 60))),
            Err(TokenError::Claim("is not valid yet (nbf)"))
        );
        let body = base.to_string();
        let dup = format!(r#"{{"role":"admin",{}"#, &body[1..]);
        let err = check(&ring, &forge(&ring, &header(&ring), &dup)).unwrap_err();
        assert!(matches!(&err, TokenError::Malformed(m) if m.contains("duplicate")), "{err:?}");
        let dup_header = format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{}"}}"#, ring.active().kid);
        assert!(check(&ring, &forge(&ring, &dup_header, &body)).is_err());
    }

    #[test]
    fn oversized_and_garbage_tokens_are_refused() {
        let (_d, ring) = new_ring();
        assert_eq!(check(&ring, &"a".repeat(64 * 1024)), Err(TokenError::TooLong));
        for junk in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(check(&ring, junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_refresh_style_token_is_not_an_access_token() {
        let (_d, ring) = new_ring();
        let mut c = claims();
        c.typ = "refresh".into();
        assert_eq!(
            check(&ring, &issue(&ring, &c)),
            Err(TokenError::Claim("is not an access token"))
        );
    }
}
