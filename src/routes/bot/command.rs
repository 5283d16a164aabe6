//! The chat command language, the same on WhatsApp and Telegram, parsed in
//! plain Rust.
//!
//! ```text
//! help                  what the bot understands
//! search WORDS          issues matching WORDS, as a numbered list
//! issue N   (or just N) issue N of the last list shown to you
//! join N / leave N      join or leave issue N
//! my issues             the issues you joined, as a numbered list
//! actions N             actions you can take on issue N
//! post N TEXT           post TEXT to issue N's feed
//! link                  how to link a phone to a web account (on the web)
//! ```
//!
//! Words are matched without regard to case; extra spaces, a leading `/`
//! (Telegram's `/start`, `/help`) and a `#` before a number are ignored.
//! Anything else is [`Command::Unknown`], which the bot answers with a
//! short hint rather than silence.

/// The longest list the bot shows, so N is 1 to this.
pub const LIST_LEN: usize = 5;
/// Search words kept (the rest is dropped).
const MAX_SEARCH_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Search(String),
    Issue(usize),
    Join(usize),
    Leave(usize),
    MyIssues,
    Actions(usize),
    Post(usize, String),
    /// How to link a phone: on the web, never from the chat (see
    /// [`LINK_HELP`]).
    Link,
    /// Not understood; says why, for the reply.
    Unknown(Problem),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Empty,
    UnknownWord,
    /// A command that needs N got none or a bad one.
    NeedsNumber(&'static str),
    /// `search` without words.
    NeedsWords,
    /// `post N` without text.
    NeedsText,
}

/// A list position: `3` or `#3`, 1 to [`LIST_LEN`].
fn position(word: &str) -> Option<usize> {
    let digits = word.strip_prefix('#').unwrap_or(word);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=LIST_LEN).contains(n))
}

/// The first word and the rest of `text`, the rest trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    }
}

fn clipped(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

pub fn parse(text: &str) -> Command {
    let text = text.trim();
    if text.is_empty() {
        return Command::Unknown(Problem::Empty);
    }
    let (word, rest) = split_word(text);
    let word = word.trim_start_matches('/').to_lowercase();
    let numbered = |make: fn(usize) -> Command, name: &'static str| {
        let (n, extra) = split_word(rest);
        match position(n) {
            Some(n) if extra.is_empty() => make(n),
            _ => Command::Unknown(Problem::NeedsNumber(name)),
        }
    };
    match word.as_str() {
        "help" | "start" | "hi" | "hello" | "menu" | "?" if rest.is_empty() => Command::Help,
        "search" | "find" => {
            let words = rest.split_whitespace().collect::<Vec<_>>().join(" ");
            // Words as a search reads them: punctuation alone would list
            // the most popular issues as if they matched.
            if crate::domain::search::SearchQuery::parse(&words).is_none() {
                Command::Unknown(Problem::NeedsWords)
            } else {
                Command::Search(clipped(&words, MAX_SEARCH_CHARS))
            }
        }
        "issue" | "show" => numbered(Command::Issue, "issue"),
        "join" => numbered(Command::Join, "join"),
        "leave" => numbered(Command::Leave, "leave"),
        "actions" => numbered(Command::Actions, "actions"),
        // `link`, `link phone`, `link +44...`: the same guidance.
        "link" => Command::Link,
        "my" if rest.eq_ignore_ascii_case("issues") => Command::MyIssues,
        "mine" if rest.is_empty() => Command::MyIssues,
        "post" => {
            let (n, body) = split_word(rest);
            match position(n) {
                None => Command::Unknown(Problem::NeedsNumber("post")),
                Some(_) if body.is_empty() => Command::Unknown(Problem::NeedsText),
                // Length is checked where posts are validated.
                Some(n) => Command::Post(n, body.to_owned()),
            }
        }
        _ => match position(&word) {
            Some(n) if rest.is_empty() => Command::Issue(n),
            _ => Command::Unknown(Problem::UnknownWord),
        },
    }
}

/// What the bot says to `Unknown`.
pub fn explain(problem: Problem) -> String {
    match problem {
        Problem::Empty | Problem::UnknownWord => {
            "Sorry, I didn't understand that. Send \"help\" to see what I can do.".to_owned()
        }
        Problem::NeedsNumber(cmd) => format!(
            "Which one? Send \"{cmd} N\" with N from 1 to {LIST_LEN}, the number of an issue in the last list I sent you."
        ),
        Problem::NeedsWords => {
            "What should I look for? For example: \"search potholes\".".to_owned()
        }
        Problem::NeedsText => {
            "What would you like to post? For example: \"post 1 The council meets on Tuesday\"."
                .to_owned()
        }
    }
}

pub const HELP: &str = "Quiet Riots: here is what I understand.\n\
search WORDS - find issues\n\
issue N - more about issue N of the last list\n\
join N / leave N - join or leave issue N\n\
my issues - the issues you joined\n\
actions N - things you can do about issue N\n\
post N TEXT - post to issue N's feed\n\
link - how to link your phone to your account";

/// The answer to `link`. Linking starts and ends on the website, the code
/// going to the phone over WhatsApp: finishing it from the chat would let
/// someone who asked for a code for your number talk you into linking it
/// to their account.
pub const LINK_HELP: &str = "Phones are linked on the Quiet Riots website, not in this chat: \
signed in there, add your phone number, then type in the 6-digit code we send it on WhatsApp. \
Never send that code to anyone, me included.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let cases: &[(&str, Command)] = &[
            ("help", Command::Help),
            ("  HELP  ", Command::Help),
            ("/start", Command::Help),
            ("search  bus   lanes ", Command::Search("bus lanes".into())),
            ("Search Bus", Command::Search("Bus".into())),
            ("issue 2", Command::Issue(2)),
            ("3", Command::Issue(3)),
            ("#4", Command::Issue(4)),
            ("JOIN 1", Command::Join(1)),
            ("join #5", Command::Join(5)),
            ("leave 1", Command::Leave(1)),
            ("my issues", Command::MyIssues),
            ("My   Issues", Command::MyIssues),
            ("actions 2", Command::Actions(2)),
            ("link", Command::Link),
            ("/link", Command::Link),
            ("Link my phone +447700900123", Command::Link),
            (
                "post 1 The road is   fixed!",
                Command::Post(1, "The road is   fixed!".into()),
            ),
            (
                "post 1 🚲 more bikes",
                Command::Post(1, "🚲 more bikes".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn odd_input_is_unknown_with_a_reason() {
        use Problem::*;
        let cases: &[(&str, Problem)] = &[
            ("", Empty),
            ("   \n\t ", Empty),
            ("🙂", UnknownWord),
            ("🙂🙂🙂 join", UnknownWord),
            ("what is this", UnknownWord),
            ("join", NeedsNumber("join")),
            ("join 0", NeedsNumber("join")),
            ("join 6", NeedsNumber("join")),
            ("join -1", NeedsNumber("join")),
            ("join 1 2", NeedsNumber("join")),
            ("join 99999999999999999999999", NeedsNumber("join")),
            ("issue one", NeedsNumber("issue")),
            ("actions", NeedsNumber("actions")),
            ("search", NeedsWords),
            ("search    ", NeedsWords),
            ("search !!! ?", NeedsWords),
            ("find -- ...", NeedsWords),
            ("post", NeedsNumber("post")),
            ("post 1", NeedsText),
            ("post x hello", NeedsNumber("post")),
            ("help me please", UnknownWord),
            ("my", UnknownWord),
            ("0", UnknownWord),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Command::Unknown(*want), "{text:?}");
        }
    }

    #[test]
    fn very_long_input_is_bounded() {
        let long = "word ".repeat(10_000);
        match parse(&format!("search {long}")) {
            Command::Search(words) => assert!(words.chars().count() <= MAX_SEARCH_CHARS),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&long), Command::Unknown(Problem::UnknownWord));
        // Multi-byte characters are clipped on character boundaries.
        match parse(&format!("search {}", "é".repeat(500))) {
            Command::Search(words) => assert_eq!(words.chars().count(), MAX_SEARCH_CHARS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_has_an_answer() {
        for p in [
            Problem::Empty,
            Problem::UnknownWord,
            Problem::NeedsNumber("join"),
            Problem::NeedsWords,
            Problem::NeedsText,
        ] {
            assert!(!explain(p).is_empty());
        }
        assert!(explain(Problem::NeedsNumber("leave")).contains("leave N"));
    }
}
