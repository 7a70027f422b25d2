//! Session tokens: 32 random bytes as hex. Stores keep only their SHA-256.

use sha2::{Digest, Sha256};

pub const TOKEN_HEX_LEN: usize = 64;

/// A new session token, from the one generator (fails closed).
pub fn generate() -> Result<String, simcache_store::random::RandomError> {
    simcache_store::random::token()
}

pub fn hash(token: &str) -> String {
    hex::encode(digest(token))
}

/// The token's SHA-256, raw: what [`hash`] writes as hex.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A stored hash (hex) back to its digest; `None` if it is not one.
pub fn digest_of_hash(hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).ok()?;
    Some(out)
}

/// Cheap shape check before any lookup: anything else cannot be ours.
pub fn looks_valid(token: &str) -> bool {
    token.len() == TOKEN_HEX_LEN && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = super::generate().unwrap();
        let b = super::generate().unwrap();
        assert_ne!(a, b);
        assert!(super::looks_valid(&a));
        assert!(!super::looks_valid("short"));
        assert_eq!(super::hash(&a).len(), 64);
        assert_ne!(super::hash(&a), a);
    }
}
