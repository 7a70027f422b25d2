//! The one source of secret tokens and random ids. It fails closed: when the
//! operating system cannot give randomness, callers get an error, never an
//! all-zero token.

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(getrandom::Error);

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(RandomError)?;
    Ok(b)
}

/// A secret token: 32 random bytes as 64 hex characters.
pub fn token() -> Result<String, RandomError> {
    Ok(hex::encode(bytes::<32>()?))
}

/// `N` random bytes as hex, for ids that must not collide (not secrets).
pub fn hex_id<const N: usize>() -> Result<String, RandomError> {
    Ok(hex::encode(bytes::<N>()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (super::token().unwrap(), super::token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(super::hex_id::<4>().unwrap().len(), 8);
        assert_ne!(super::bytes::<16>().unwrap(), [0u8; 16]);
    }
}
