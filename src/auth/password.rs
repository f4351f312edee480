//! Username and password rules, and argon2id hashing with OWASP's minimum parameters.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Why a username or password was refused; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Username rule broken.
    #[error("username {0}")]
    Username(&'static str),
    /// Password rule broken.
    #[error("password {0}")]
    Password(&'static str),
}

/// Folds a username to lowercase and checks it: 3-32 characters of `a-z 0-9 _ . -`.
pub fn normalize_username(raw: &str) -> Result<String, CredentialError> {
    if raw.is_empty() {
        return Err(CredentialError::Username("is empty"));
    }
    let name = raw.to_lowercase();
    let len = name.chars().count();
    if len < 3 {
        return Err(CredentialError::Username("must be at least 3 characters"));
    }
    if len > 32 {
        return Err(CredentialError::Username("must be at most 32 characters"));
    }
    if !name.chars().all(is_username_char) {
        return Err(CredentialError::Username(
            "may contain only letters a-z, digits 0-9 and _ . -",
        ));
    }
    Ok(name)
}

/// Characters allowed in a (folded) username; also what ends an `@mention`.
pub fn is_username_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

/// Checks a password: 8-128 characters.
pub fn check_password(pw: &str) -> Result<(), CredentialError> {
    let n = pw.chars().count();
    if n == 0 {
        return Err(CredentialError::Password("is empty"));
    }
    if n < 8 {
        return Err(CredentialError::Password("must be at least 8 characters"));
    }
    if n > 128 {
        return Err(CredentialError::Password("must be at most 128 characters"));
    }
    Ok(())
}

/// OWASP's minimum for argon2id: 19 MiB, 2 iterations, parallelism 1.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// The largest memory cost a stored hash may ask for (KiB): hashes are ours, but a damaged or
/// hand-edited record must not make a worker allocate gigabytes.
const MAX_M_COST_KIB: u32 = 256 * 1024;

/// Memory blocks a hashing worker owns and reuses: allocating 19 MiB per hash on many
/// threads left the allocator holding hundreds of MiB that never came back.
pub type Memory = Vec<argon2::Block>;

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn default_params() -> Params {
    Params::new(M_COST_KIB, T_COST, P_COST, None).expect("constant argon2 parameters are valid")
}

/// Runs argon2 with `params` into `out`, growing `memory` to what `params` needs (and never
/// shrinking it: the next hash reuses it).
fn fill(
    memory: &mut Memory,
    params: Params,
    pw: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), argon2::Block::default());
    }
    hasher(params).hash_password_into_with_memory(pw, salt, out, &mut memory[..])
}

/// Hashes a password into a PHC string (slow on purpose: call it on a hashing worker).
pub fn hash_password(memory: &mut Memory, pw: &str) -> String {
    let salt_bytes = rand::random::<[u8; 16]>();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes is a valid salt");
    let params = default_params();
    let mut out = [0u8; 32];
    fill(memory, params.clone(), pw.as_bytes(), &salt_bytes, &mut out)
        .expect("argon2 with valid params");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().expect("valid params encode"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes is a valid output")),
    }
    .to_string()
}

/// Stands in for the stored hash of a user who does not exist, so that a login for an unknown
/// name costs one full hash, like a real one (the time taken does not reveal whether the
/// username exists). No password matches it: its output is not the hash of anything known.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZWRnZWNoYXQtZHVtbXktc2FsdA$\
                         bm90IGEgaGFzaCBvZiBhbnkgcGFzc3dvcmQgYXQgYWxs";

/// Checks a password against a PHC string. `None` (unknown user) still spends one hash.
pub fn verify_password(memory: &mut Memory, pw: &str, phc: Option<&str>) -> bool {
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (DUMMY_PHC, false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() || params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if fill(memory, params, pw.as_bytes(), salt_bytes, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected) && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_folded_and_checked() {
        assert_eq!(normalize_username("Alice_01").unwrap(), "alice_01");
        assert_eq!(normalize_username("a.b-c").unwrap(), "a.b-c");
        assert!(normalize_username("").is_err());
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username(&"a".repeat(33)).is_err());
        assert!(normalize_username(&"a".repeat(32)).is_ok());
        for bad in ["al ice", "al!ce", "ålice", "alice\n", "al@ce", "al/ce"] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_length_rules() {
        assert!(check_password("").is_err());
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(128)).is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
        // Characters, not bytes.
        assert!(check_password(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn hash_and_verify() {
        let mut m = Memory::new();
        let h = hash_password(&mut m, "correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(m.len(), 19_456, "the worker's memory is kept for the next hash");
        assert!(verify_password(&mut m, "correct horse", Some(&h)));
        assert!(!verify_password(&mut m, "wrong horse", Some(&h)));
        assert!(!verify_password(&mut m, "correct horse", None));
        assert!(!verify_password(&mut m, "x", Some("not a phc string")));
        assert_eq!(m.len(), 19_456);
        // The stand-in for unknown users parses and costs a full hash.
        let dummy = PasswordHash::new(DUMMY_PHC).unwrap();
        assert_eq!(Params::try_from(&dummy).unwrap().m_cost(), M_COST_KIB);
        assert!(!verify_password(&mut m, "", Some(DUMMY_PHC)));
    }

    /// Hashes written by the argon2 crate's own `PasswordHasher` (what earlier versions
    /// stored) verify the same way.
    #[test]
    fn hashes_from_the_crates_own_hasher_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = hasher(default_params()).hash_password(b"old password", &salt).unwrap();
        let mut m = Memory::new();
        assert!(verify_password(&mut m, "old password", Some(&phc.to_string())));
        assert!(!verify_password(&mut m, "old passwore", Some(&phc.to_string())));
    }
}
