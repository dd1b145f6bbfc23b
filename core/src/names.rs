//! When two names are the same name: the one folding rule for artist,
//! album and account names, used wherever names are compared or indexed
//! (the node's name tables, the gateway's index and account lookup), so
//! that every place agrees on which names collide.

/// The key two names share when they are the same name: surrounding white
/// space trimmed, lower case.
pub fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn case_and_surrounding_space_fold_away() {
        assert_eq!(fold("Björk"), fold(" BJÖRK "));
        assert_eq!(fold("ABBA\t"), "abba");
        assert_ne!(fold("a b"), fold("ab"), "inner space is kept");
    }
}
