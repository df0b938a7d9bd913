//! Splitting a directive's arguments into words, as Apache's `ap_getword_conf` does (whitespace
//! between words; a word wholly in `'…'` or `"…"` may hold spaces, and `\` before its quote escapes
//! it), plus mod_wsgi's option rule: in `name='value'` or `name="value"` the quoted value is one word's
//! value, quotes removed (mod-wsgi-express writes `display-name='(wsgi:host:80:0)'`).
//!
//! Pure: the directive callback hands it the raw argument text.

/// The words of a directive's argument text.
pub(crate) fn split(args: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = args.trim_start();
    while !rest.is_empty() {
        let (word, after) = next_word(rest);
        words.push(word);
        rest = after.trim_start();
    }
    words
}

fn next_word(text: &str) -> (String, &str) {
    if let Some(quote) = text.chars().next().filter(|c| *c == '\'' || *c == '"') {
        return quoted(&text[1..], quote);
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let word = &text[..end];
    // `name='value with spaces'`: the value is read as a quoted word of its own.
    if let Some(eq) = word.find('=') {
        let value = &text[eq + 1..];
        if let Some(quote) = value.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let (value, after) = quoted(&value[1..], quote);
            return (format!("{}{value}", &text[..=eq]), after);
        }
    }
    (word.to_owned(), &text[end..])
}

/// The contents up to the closing `quote` (or the end), with `\quote` unescaped, and what follows.
fn quoted(text: &str, quote: char) -> (String, &str) {
    let mut word = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if chars.peek().map(|(_, next)| *next) == Some(quote) => {
                word.push(quote);
                chars.next();
            }
            c if c == quote => return (word, &text[at + c.len_utf8()..]),
            c => word.push(c),
        }
    }
    (word, "")
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn words_split_as_apache_splits_them() {
        assert_eq!(split("  a  b\tc "), ["a", "b", "c"]);
        assert_eq!(
            split(r#"/x "/path with space" ''"#),
            ["/x", "/path with space", ""]
        );
        assert_eq!(split(r#""say \"hi\"" x"#), [r#"say "hi""#, "x"]);
        assert_eq!(split(""), Vec::<String>::new());
    }

    #[test]
    fn quoted_option_values_lose_their_quotes() {
        assert_eq!(
            split("'localhost:80' display-name='(wsgi:localhost:80:0)' python-path='' threads=5"),
            [
                "localhost:80",
                "display-name=(wsgi:localhost:80:0)",
                "python-path=",
                "threads=5"
            ]
        );
        assert_eq!(split(r#"home="/a b/c" x=1"#), ["home=/a b/c", "x=1"]);
        assert_eq!(split("a=b'c'"), ["a=b'c'"]);
        assert_eq!(split("unterminated='abc"), ["unterminated=abc"]);
    }
}
