//! Making text safe for a terminal: every line smssh prints itself (errors, warnings, `-v`
//! lines, summaries, progress lines) passes through [`visible`] at the one place it is
//! written, so a string that came from a server (an SFTP status message, a file name, an
//! exit-signal name, a script's stderr quoted in a rotation summary), a secret's metadata or a
//! config file cannot move the cursor, clear the screen, retitle the window or hide text (the
//! class of OpenSSH's CVE-2019-6109).
//!
//! Owns: the encoding, in the spirit of OpenSSH's `vis`: control characters (C0, DEL, C1) and
//! the Unicode characters that reorder or hide text are shown as `\n`, `\t`, `\r`, `\xNN` or
//! `\u{NNNN}`; everything else is kept. Must not know: where the text came from. The remote
//! command's own stdout and stderr (`smssh host cmd`, `-w` prefixed lines) are not ours and stay
//! raw, as in ssh.

use std::borrow::Cow;
use std::fmt::Write;

/// True for the characters a terminal acts on or that change what is shown: control
/// characters, and Unicode's bidirectional overrides and invisible formatting characters.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// `text` with every character [`needs_escape`] makes visible. Borrowed when nothing changes,
/// which is the common case.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\t' => shown.push_str("\\t"),
            '\r' => shown.push_str("\\r"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(shown, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(shown, "\\u{{{:04x}}}", c as u32);
            }
            c => shown.push(c),
        }
    }
    Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        let cases = [
            ("plain: No such file", "plain: No such file"),
            ("caf\u{e9} \u{4e16}", "caf\u{e9} \u{4e16}"),
            ("\u{1b}]0;owned\u{7}", "\\x1b]0;owned\\x07"),
            ("\u{1b}[2J\u{1b}[8mhidden", "\\x1b[2J\\x1b[8mhidden"),
            ("a\nfake line", "a\\nfake line"),
            ("tab\there\r", "tab\\there\\r"),
            ("\u{9b}31m", "\\u{009b}31m"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("del\u{7f}", "del\\x7f"),
        ];
        for (raw, shown) in cases {
            assert_eq!(visible(raw), shown, "{raw:?}");
        }
        assert!(matches!(visible("nothing to do"), Cow::Borrowed(_)));
    }
}
