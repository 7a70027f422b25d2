//! Password hashing with argon2id (PHC string format).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// argon2 refused to hash (a password past its length limit, a failing RNG).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(argon2::password_hash::Error);

pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError)
}

/// True when `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_are_salted() {
        let h1 = super::hash("s3cret").unwrap();
        let h2 = super::hash("s3cret").unwrap();
        assert!(h1.starts_with("$argon2id$"));
        assert_ne!(h1, h2);
        assert!(super::verify("s3cret", &h1));
        assert!(!super::verify("S3cret", &h1));
        assert!(!super::verify("s3cret", "not-a-hash"));
    }
}
