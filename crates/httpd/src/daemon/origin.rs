//! A daemon serves only requests from this Apache's children. Each request carries its group's secret,
//! which only Apache's own processes and that group's daemons hold. Without it, any process able to connect
//! to a group's socket (anything running as Apache's `User`: a CGI script, another module's code) could
//! have the daemon, which may run as another user, load and run whatever script the request names.
//! mod_wsgi guards the same door with its "magic token", and as there, each daemon forgets the other
//! groups' secrets when it starts.
//!
//! Pure: the parent makes and keeps the secrets (`crate::ffi::daemons`), the child sends its group's, the
//! daemon checks it (`super::process`).

use std::fmt;
use std::io::{self, Read as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// The private variable that carries the secret (`mod_wsgi.x-` names never reach the application).
pub(crate) const TOKEN_KEY: &str = "mod_wsgi.x-magic";

/// 128 random bits. Atomics only so that a daemon can wipe the copies it inherited, which other
/// references share.
pub(crate) struct Secret([AtomicU64; 2]);

impl Secret {
    /// A new secret from the kernel's random source.
    pub(crate) fn generate() -> io::Result<Self> {
        let mut random = std::fs::File::open("/dev/urandom")?;
        let mut word = || -> io::Result<u64> {
            let mut bytes = [0u8; 8];
            random.read_exact(&mut bytes)?;
            Ok(u64::from_ne_bytes(bytes))
        };
        let (high, low) = (word()?, word()?);
        Ok(Self::from_words(high, low))
    }

    fn from_words(high: u64, low: u64) -> Self {
        Self([AtomicU64::new(high), AtomicU64::new(low)])
    }

    fn words(&self) -> (u64, u64) {
        (
            self.0[0].load(Ordering::Relaxed),
            self.0[1].load(Ordering::Relaxed),
        )
    }

    /// The secret as 32 hex digits, as requests carry it.
    pub(crate) fn to_hex(&self) -> String {
        let (high, low) = self.words();
        format!("{high:016x}{low:016x}")
    }

    /// The secret written by [`Secret::to_hex`].
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let high = u64::from_str_radix(text.get(..16)?, 16).ok()?;
        let low = u64::from_str_radix(text.get(16..)?, 16).ok()?;
        Some(Self::from_words(high, low))
    }

    /// Whether `token` is this secret. The comparison takes the same time wherever the first difference
    /// is; a wiped secret admits nothing.
    pub(crate) fn admits(&self, token: &[u8]) -> bool {
        let expected = self.to_hex();
        if self.words() == (0, 0) || token.len() != expected.len() {
            return false;
        }
        let difference = expected
            .bytes()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }

    /// Forgets the secret in this process.
    pub(crate) fn wipe(&self) {
        self.0[0].store(0, Ordering::Relaxed);
        self.0[1].store(0, Ordering::Relaxed);
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        let (high, low) = self.words();
        Self::from_words(high, low)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a daemon refused a request's origin, in mod_wsgi's words.
pub(crate) fn check(secret: &Secret, token: Option<&[u8]>) -> Result<(), &'static str> {
    match token {
        None => Err("Request origin could not be validated; missing magic token."),
        Some(token) if !secret.admits(token) => {
            Err("Request origin could not be validated; magic token mismatch.")
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_admits_its_own_hex_and_nothing_else() {
        let secret = Secret::generate().unwrap();
        let token = secret.to_hex();
        assert_eq!(token.len(), 32);
        assert!(secret.admits(token.as_bytes()));
        assert!(!secret.admits(&token.as_bytes()[..31]));
        let mut other = token.clone().into_bytes();
        other[31] = if other[31] == b'0' { b'1' } else { b'0' };
        assert!(!secret.admits(&other));
        assert!(!Secret::generate().unwrap().admits(token.as_bytes()));
        assert_eq!(check(&secret, Some(token.as_bytes())), Ok(()));
        assert!(check(&secret, None).unwrap_err().contains("missing"));
    }

    #[test]
    fn a_secret_survives_its_hex_and_a_wiped_one_admits_nothing() {
        let secret = Secret::generate().unwrap();
        let again = Secret::from_hex(&secret.to_hex()).unwrap();
        assert!(again.admits(secret.to_hex().as_bytes()));
        assert!(Secret::from_hex("xyz").is_none());
        assert!(Secret::from_hex(&"g".repeat(32)).is_none());
        secret.wipe();
        assert!(!secret.admits(b"00000000000000000000000000000000"));
        assert!(!secret.admits(again.to_hex().as_bytes()));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
