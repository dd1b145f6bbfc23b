//! Password checks. Password hashes (argon2id PHC strings) are kept only
//! on the storage nodes: a gateway asks a node (`CheckPassword`) and never
//! sees them. The work is bounded: one argon2 check per core at a time.

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Checked when a login names no account, so that timing does not tell
/// which names exist (argon2id of a random password, default parameters).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$t4DoyMaY0A3U7eRHCkVuoe5J8AzG9Wtc4Fqw4LXvPxE";

/// The longest password checked, in bytes (gateways refuse longer ones
/// before asking).
pub const MAX_PASSWORD: usize = 1024;

/// Bounds the argon2 work of one node.
#[derive(Debug)]
pub struct Checker {
    turns: Semaphore,
}

impl Default for Checker {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            turns: Semaphore::new(cores),
        }
    }
}

impl Checker {
    /// Whether `password` matches `hash` (any hash: [`DUMMY_HASH`] for
    /// none), on the blocking pool, one check per core at a time.
    pub async fn matches(&self, password: String, hash: String) -> Result<bool> {
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the node is stopping".into()))?;
        Ok(tokio::task::spawn_blocking(move || verify(&password, &hash)).await?)
    }
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_the_dummy_hash_parses() {
        use argon2::password_hash::PasswordHasher;
        let h = argon2::Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not a hash"));
        // Unknown names are checked against this hash: it must parse, or
        // the check would return early and leak timing.
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify("", DUMMY_HASH));
    }
}
