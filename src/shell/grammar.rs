//! What a line typed at the interactive shell means: a command for every target host, or one
//! of the shell's own requests, after ClusterShell's interactive mode (`clush` without a
//! command).
//!
//! Owns: the grammar and the `help` text that documents it. Must not know: hosts, sessions or
//! the terminal.

/// One typed line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Blank: nothing runs, and the exit status stays as it was.
    Nothing,
    /// `quit` (or end of input): the shell ends.
    Quit,
    /// `help`: the grammar.
    Help,
    /// `?`: the current targets and which of them have a session.
    Show,
    /// `!HOSTLIST` or `@group`: the targets become these hosts.
    Set(&'a str),
    /// `+HOSTLIST`: these hosts join the targets.
    Add(&'a str),
    /// `-HOSTLIST`: these hosts leave the targets.
    Remove(&'a str),
    /// Anything else: the command to run on every target host.
    Run(&'a str),
}

/// Reads one line. Leading and trailing white space is not part of a request; a command is
/// sent as typed, without them.
pub fn parse(line: &str) -> Request<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Request::Nothing;
    }
    match line {
        "quit" => return Request::Quit,
        "help" => return Request::Help,
        "?" => return Request::Show,
        _ => {}
    }
    // A group is itself a hostlist term (`@workers`), so `@group` is `!@group`.
    if line.starts_with('@') {
        return Request::Set(line);
    }
    let rest = |prefix: char| line[prefix.len_utf8()..].trim();
    match line.chars().next() {
        Some(prefix @ '!') => Request::Set(rest(prefix)),
        Some(prefix @ '+') => Request::Add(rest(prefix)),
        Some(prefix @ '-') => Request::Remove(rest(prefix)),
        _ => Request::Run(line),
    }
}

/// The `help` text: the grammar, in the words of the man page's INTERACTIVE SHELL section.
pub const HELP: &str = "\
Each line runs on every target host over the sessions opened at the start; identical answers
are printed once under their hostlist, then the hosts that failed or exited non-zero.

  COMMAND       run COMMAND on every target host (a new channel per line)
  ?             show the target hosts and those without a session
  !HOSTLIST     set the targets to HOSTLIST (e.g. !worker[01-04],gpu1)
  @GROUP        set the targets to a named group (the same as !@GROUP)
  +HOSTLIST     add hosts to the targets
  -HOSTLIST     remove hosts from the targets
  help          show this text
  quit          end the shell (as Ctrl-D does)

Hosts that join the targets are logged in at once; a session lost since the last line is
logged in again before the next one. Ctrl-C clears the line at the prompt and, while a line
runs, stops that line's commands (their channels are closed) and returns to the prompt.
Unlike clush, `!` does not run a local command. Lines starting with a space are not kept
in the history.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_requests_follow_the_documented_grammar() {
        let cases = [
            ("", Request::Nothing),
            ("   \t", Request::Nothing),
            ("quit", Request::Quit),
            ("  quit  ", Request::Quit),
            ("help", Request::Help),
            ("?", Request::Show),
            ("!w[1-3]", Request::Set("w[1-3]")),
            ("! w1, w2 ", Request::Set("w1, w2")),
            ("@gpu", Request::Set("@gpu")),
            ("@gpu,w9", Request::Set("@gpu,w9")),
            ("+w4", Request::Add("w4")),
            ("-w[1-2]", Request::Remove("w[1-2]")),
            ("uname -a", Request::Run("uname -a")),
            ("  echo  a  ", Request::Run("echo  a")),
            // Only the whole word ends the shell or asks for help.
            ("quit now", Request::Run("quit now")),
            ("help me", Request::Run("help me")),
            ("?x", Request::Run("?x")),
            ("exit", Request::Run("exit")),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), expected, "{line:?}");
        }
    }

    #[test]
    fn a_multibyte_first_character_is_a_command() {
        assert_eq!(parse("é ls"), Request::Run("é ls"));
    }

    #[test]
    fn the_help_names_every_request() {
        for word in [
            "?",
            "!HOSTLIST",
            "@GROUP",
            "+HOSTLIST",
            "-HOSTLIST",
            "quit",
            "Ctrl-C",
        ] {
            assert!(HELP.contains(word), "{word}");
        }
    }
}
