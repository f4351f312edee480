//! Username and password rules, and argon2id hashing with OWASP's minimum parameters.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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

fn hasher() -> Argon2<'static> {
    // OWASP minimum: 19 MiB, 2 iterations, parallelism 1.
    let params = Params::new(19_456, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (slow on purpose: call it off the async threads).
pub fn hash_password(pw: &str) -> String {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    hasher().hash_password(pw.as_bytes(), &salt).expect("argon2 with valid params").to_string()
}

/// Checks a password against a PHC string. `None` (unknown user) still spends one hash, so the
/// time taken does not reveal whether the username exists.
pub fn verify_password(pw: &str, phc: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a real password"));
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher().verify_password(pw.as_bytes(), &parsed).is_ok() && real
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
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong horse", Some(&h)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }
}
