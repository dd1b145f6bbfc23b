//! When two names are the same name: the one folding rule for artist,
//! album and account names, used wherever names are compared or indexed
//! (the node's name tables, the gateway's index and account lookup), so
//! that every place agrees on which names collide; and what an account
//! name may be ([`account_name`]) and when two account names look alike
//! ([`account_key`]).

use unicode_normalization::UnicodeNormalization;

/// What a login's name is compared by: NFKC, trimmed, lower case (a
/// look-alike of a name is not that name).
pub fn login_key(name: &str) -> String {
    fold(&name.nfkc().collect::<String>())
}

/// The key two names share when they are the same name: surrounding white
/// space trimmed, lower case.
pub fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The longest account name, in characters.
pub const MAX_ACCOUNT_NAME: usize = 100;

/// Why a name cannot be an account's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must be 1-{MAX_ACCOUNT_NAME} characters")]
    Length,
    #[error("a name may not hold control, invisible or text-direction characters")]
    Invisible,
}

/// Invisible characters and text-direction controls (Unicode format
/// characters, default-ignorable code points): they make two different
/// names look the same, or a name look like another.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// An account name as it is kept: NFKC-normalised (full-width and other
/// compatibility forms become their plain letters), trimmed, without
/// control, invisible or text-direction characters.
pub fn account_name(raw: &str) -> Result<String, NameError> {
    let name: String = raw.nfkc().collect::<String>().trim().to_string();
    if name.chars().any(invisible) {
        return Err(NameError::Invisible);
    }
    let n = name.chars().count();
    if n == 0 || n > MAX_ACCOUNT_NAME {
        return Err(NameError::Length);
    }
    Ok(name)
}

/// The key two account names share when they look alike: the UTS #39
/// confusable skeleton of the folded, NFKC-normalised name (Cyrillic "а"
/// and Latin "a", "rn" and "m", "ALICE" and "alice" collide). Account
/// names are unique by this key.
pub fn account_key(name: &str) -> String {
    let folded = fold(&name.nfkc().collect::<String>());
    unicode_security::confusable_detection::skeleton(&folded).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_surrounding_space_fold_away() {
        assert_eq!(fold("Björk"), fold(" BJÖRK "));
        assert_eq!(fold("ABBA\t"), "abba");
        assert_ne!(fold("a b"), fold("ab"), "inner space is kept");
    }

    #[test]
    fn look_alike_account_names_share_a_key() {
        let alice = account_key("alice");
        // Full-width, Cyrillic "а", upper case: the same account.
        for other in ["ａｌｉｃｅ", "\u{0430}lice", "ALICE", " Alice "] {
            assert_eq!(account_key(other), alice, "{other}");
        }
        assert_ne!(account_key("bob"), alice);
        assert_eq!(account_key("rn"), account_key("m"));
    }

    #[test]
    fn account_names_are_normalised_and_invisible_characters_refused() {
        assert_eq!(account_name(" ａｌｉｃｅ ").unwrap(), "alice");
        for bad in [
            "alice\u{200b}",
            "\u{202e}ecila",
            "al\u{00ad}ice",
            "a\tb",
            "a\u{feff}",
        ] {
            assert_eq!(account_name(bad), Err(NameError::Invisible), "{bad:?}");
        }
        assert_eq!(account_name("   "), Err(NameError::Length));
        assert_eq!(account_name(&"x".repeat(101)), Err(NameError::Length));
        assert_eq!(account_name("Zoë Ångström").unwrap(), "Zoë Ångström");
    }
}
