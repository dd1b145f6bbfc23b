//! Search text folding: what a title, artist or album is indexed under and
//! what a query is looked up by.
//!
//! Latin, Greek, Cyrillic and other spaced scripts are split into words at
//! anything that is not a letter or digit, then folded: compatibility forms
//! to their plain letters (full-width "ＡＢＣ", ligatures), case, accents
//! (combining marks), apostrophes ("Don't" = "dont"), and Latin letters
//! that have no decomposition to their usual ASCII spelling with
//! `deunicode` ("ß" = "ss", "æ" = "ae", "ø" = "o", "ł" = "l"), so that a
//! listener can type what is on the keyboard.
//!
//! Chinese, Japanese and Korean titles have no spaces between words, and
//! no dictionary is at hand to segment them, so a run of those scripts is
//! indexed as overlapping character bigrams and single characters (as
//! Lucene's CJK analyser does): a query's run is looked up by its bigrams
//! (a one-character run by that character), which finds a word anywhere
//! inside a title, at the cost of rare false hits where the bigrams occur
//! apart.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};
use unicode_script::{Script, UnicodeScript};

/// The words `text` is indexed under: folded words, and the single
/// characters and bigrams of its CJK runs.
pub fn index_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in pieces(text) {
        match piece {
            Piece::Word(w) => out.push(w),
            Piece::Cjk(run) => {
                out.extend(run.iter().map(char::to_string));
                out.extend(run.windows(2).map(|p| p.iter().collect()));
            }
        }
    }
    out
}

/// The tokens a query is looked up by (each must begin an indexed word):
/// folded words, and the bigrams of its CJK runs (a one-character run as
/// itself).
pub fn query_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in pieces(text) {
        match piece {
            Piece::Word(w) => out.push(w),
            Piece::Cjk(run) if run.len() == 1 => out.push(run[0].to_string()),
            Piece::Cjk(run) => out.extend(run.windows(2).map(|p| p.iter().collect())),
        }
    }
    out.sort();
    out.dedup();
    out
}

enum Piece {
    Word(String),
    Cjk(Vec<char>),
}

/// Whether `c` is written without spaces between words (Han, kana,
/// Hangul, Bopomofo), including the marks those scripts share, such as
/// the prolonged sound mark "ー" and the iteration mark "々".
fn is_cjk(c: char) -> bool {
    const CJK: [Script; 5] = [
        Script::Han,
        Script::Hiragana,
        Script::Katakana,
        Script::Hangul,
        Script::Bopomofo,
    ];
    let ext = c.script_extension();
    c.is_alphanumeric() && CJK.iter().any(|s| ext.contains_script(*s))
}

/// Splits folded text into words and CJK runs.
fn pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, out: &mut Vec<Piece>| {
        if !word.is_empty() {
            out.push(Piece::Word(std::mem::take(word)));
        }
    };
    let flush_run = |run: &mut Vec<char>, out: &mut Vec<Piece>| {
        if !run.is_empty() {
            out.push(Piece::Cjk(std::mem::take(run)));
        }
    };
    // NFKC first: full-width letters become plain ones and Hangul stays
    // composed (its syllables are the units of its bigrams).
    for c in text.nfkc() {
        if is_cjk(c) {
            flush_word(&mut word, &mut out);
            run.push(c);
            continue;
        }
        flush_run(&mut run, &mut out);
        if matches!(c, '\'' | '\u{2019}' | '\u{02BC}') {
            continue;
        }
        let mut split = false;
        decompose_compatible(c, |d| {
            if is_combining_mark(d) {
                return;
            }
            if !d.is_alphanumeric() {
                split = true;
                return;
            }
            fold_letter(d, &mut word);
        });
        if split {
            flush_word(&mut word, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_run(&mut run, &mut out);
    out
}

/// Appends one letter or digit, folded: ASCII lower-cased, other Latin
/// letters spelt in ASCII, anything else lower-cased.
fn fold_letter(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if c.script() == Script::Latin
        && let Some(ascii) = deunicode::deunicode_char(c)
        && !ascii.is_empty()
        && ascii.chars().all(|a| a.is_ascii_alphanumeric())
    {
        out.extend(ascii.chars().map(|a| a.to_ascii_lowercase()));
    } else {
        // Greek final sigma is sigma (as Unicode case folding has it).
        out.extend(c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: &[&str]) {
        assert_eq!(index_words(text), expect, "{text:?}");
    }

    #[test]
    fn latin_words_fold_to_what_a_keyboard_types() {
        check("Straße", &["strasse"]);
        check("Björk — Hyperballad", &["bjork", "hyperballad"]);
        check("Don't Stop", &["dont", "stop"]);
        check("AC/DC", &["ac", "dc"]);
        check("Ærøskøbing Łódź", &["aeroskobing", "lodz"]);
        check("ＡＢＣ ﬁne", &["abc", "fine"]);
        check("Sigur Rós", &["sigur", "ros"]);
        check("Ólafur Arnalds þú", &["olafur", "arnalds", "thu"]);
    }

    #[test]
    fn other_spaced_scripts_keep_their_letters_lower_cased() {
        check("Кино Группа крови", &["кино", "группа", "крови"]);
        check("Μάνος", &["μανοσ"]);
        assert_eq!(index_words("ΜΑΝΟΣ"), index_words("Μάνος"), "final sigma");
    }

    #[test]
    fn cjk_runs_index_characters_and_bigrams() {
        check(
            "東京タワー",
            &["東", "京", "タ", "ワ", "ー", "東京", "京タ", "タワ", "ワー"],
        );
        check("Ado 唱", &["ado", "唱"]);
        check("사랑해", &["사", "랑", "해", "사랑", "랑해"]);
        assert_eq!(query_words("タワー"), ["タワ", "ワー"]);
        assert_eq!(query_words("京"), ["京"]);
        assert_eq!(query_words("live 東京"), ["live", "東京"]);
    }

    #[test]
    fn a_query_finds_a_word_inside_a_title() {
        let matches = |title: &str, query: &str| {
            let words = index_words(title);
            query_words(query)
                .iter()
                .all(|q| words.iter().any(|w| w.starts_with(q.as_str())))
        };
        assert!(matches("東京タワーの夜", "タワー"));
        assert!(matches("東京タワーの夜", "夜"));
        assert!(matches("千と千尋の神隠し", "神隠"));
        assert!(!matches("千と千尋の神隠し", "神様"));
        assert!(matches("Straße der Besten", "strasse"));
        assert!(matches("Straße der Besten", "STRASS"));
        assert!(matches("Straße der Besten", "straße"));
        assert!(!matches("Straße der Besten", "asse"));
    }
}
