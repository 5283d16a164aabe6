//! Splitting SQL scripts (migrations, seed files) into single statements.
//!
//! Hrana's `execute` and `batch` take one statement each. A script is cut at
//! each `;` that ends a statement, so semicolons inside strings, quoted
//! names, comments and trigger bodies (`CREATE TRIGGER ... BEGIN ...; END;`)
//! do not cut. The rules are those of SQLite's `sqlite3_complete()`, applied
//! in one pass over the text: asking `sqlite3_complete()` about the text so
//! far at every `;` costs time quadratic in the length of the script.

/// What the scanner tells apart: statement ends, space (including comments),
/// the few keywords that decide where a trigger body ends, and anything else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Semicolon,
    Space,
    Explain,
    Create,
    Temp,
    Trigger,
    End,
    Other,
}

/// Where the scanner is within the current statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but space since the last statement end.
    Start,
    /// Inside an ordinary statement.
    Normal,
    /// After a leading `EXPLAIN` (which may precede `CREATE TRIGGER`).
    Explain,
    /// After a leading `CREATE` (and maybe `TEMP`): a trigger may follow.
    Create,
    /// Inside `CREATE TRIGGER`: a `;` ends a body statement, not the trigger.
    Trigger,
    /// Inside a trigger, right after a `;`.
    TriggerSemicolon,
    /// Inside a trigger, after `; END`: the next `;` ends the trigger.
    TriggerEnd,
}

impl State {
    /// The state after `token`; `Start` after a `;` means a statement ended.
    fn next(self, token: Token) -> State {
        use State::*;
        match (self, token) {
            (state, Token::Space) => state,
            (Trigger | TriggerSemicolon, Token::Semicolon) => TriggerSemicolon,
            (TriggerSemicolon, Token::End) => TriggerEnd,
            (Trigger | TriggerSemicolon, _) => Trigger,
            (_, Token::Semicolon) => Start,
            (TriggerEnd, _) => Trigger,
            (Start, Token::Explain) => Explain,
            (Start | Explain, Token::Create) => Create,
            (Explain, Token::Other) => Explain,
            (Create, Token::Temp) => Create,
            (Create, Token::Trigger) => Trigger,
            _ => Normal,
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The token at the start of `rest` (not empty) and its length in bytes. An
/// unclosed string, quoted name or block comment runs to the end of the text.
fn token(rest: &[u8]) -> (Token, usize) {
    let find = |from: usize, end: &[u8]| {
        rest.get(from..)
            .and_then(|tail| tail.windows(end.len()).position(|w| w == end))
            .map_or(rest.len(), |at| from + at + end.len())
    };
    match rest[0] {
        b';' => (Token::Semicolon, 1),
        b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => (Token::Space, 1),
        b'-' if rest.get(1) == Some(&b'-') => (Token::Space, find(2, b"\n")),
        b'/' if rest.get(1) == Some(&b'*') => (Token::Space, find(2, b"*/")),
        quote @ (b'\'' | b'"' | b'`') => (Token::Other, find(1, &[quote])),
        b'[' => (Token::Other, find(1, b"]")),
        b if is_word_byte(b) => {
            let len = rest
                .iter()
                .position(|b| !is_word_byte(*b))
                .unwrap_or(rest.len());
            let word = &rest[..len];
            let token = if word.eq_ignore_ascii_case(b"explain") {
                Token::Explain
            } else if word.eq_ignore_ascii_case(b"create") {
                Token::Create
            } else if word.eq_ignore_ascii_case(b"temp") || word.eq_ignore_ascii_case(b"temporary")
            {
                Token::Temp
            } else if word.eq_ignore_ascii_case(b"trigger") {
                Token::Trigger
            } else if word.eq_ignore_ascii_case(b"end") {
                Token::End
            } else {
                Token::Other
            };
            (token, len)
        }
        _ => (Token::Other, 1),
    }
}

/// The statements of a script, in order, trimmed, without blank ones (only
/// space, comments and semicolons). Each keeps its closing `;`; a last
/// statement without one is kept too (the server will judge it).
pub struct Statements<'a> {
    script: &'a str,
    /// Where the next statement starts.
    start: usize,
}

impl<'a> Statements<'a> {
    pub fn new(script: &'a str) -> Self {
        Statements { script, start: 0 }
    }
}

impl<'a> Iterator for Statements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.script.as_bytes();
        while self.start < bytes.len() {
            let from = self.start;
            let mut state = State::Start;
            let mut blank = true;
            let mut at = from;
            let mut ended = false;
            while at < bytes.len() {
                let (token, len) = token(&bytes[at..]);
                at += len;
                blank &= matches!(token, Token::Space | Token::Semicolon);
                state = state.next(token);
                if token == Token::Semicolon && state == State::Start {
                    ended = true;
                    break;
                }
            }
            // Tokens end at ASCII bytes or at the end of the text, so `at`
            // is a character boundary.
            self.start = at;
            if !blank {
                return Some(self.script[from..at].trim());
            }
            if !ended {
                break;
            }
        }
        None
    }
}

/// The statements of `script`, in order, without blank ones. A trailing
/// statement without `;` is kept (the server will judge it).
pub fn split_statements(script: &str) -> Vec<String> {
    Statements::new(script).map(str::to_owned).collect()
}

/// True when `sql` holds more than one statement. Takes time linear in the
/// length of `sql`, and stops at the end of the second statement; text
/// without a `;` (most statements, checked on every execute) is not scanned.
pub fn has_many_statements(sql: &str) -> bool {
    sql.contains(';') && Statements::new(sql).nth(1).is_some()
}

/// True when the SQL has nothing but whitespace, comments and semicolons.
pub fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            return rest.is_empty();
        }
    }
}

/// What a statement does to rows, as its first verb says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// INSERT or REPLACE: its result reports `last_insert_rowid` (as sqld
    /// reports it) and the rows it changed.
    Insert,
    /// UPDATE or DELETE: its result reports the rows it changed.
    Change,
    /// SELECT or VALUES.
    Read,
}

/// The verb of `sql`: the first of INSERT, REPLACE, SELECT, VALUES, UPDATE
/// or DELETE outside parentheses (so also after a `WITH` clause); strings,
/// quoted names and comments skipped. `None` for anything else (schema
/// statements, pragmas, transactions).
pub fn verb(sql: &str) -> Option<Verb> {
    let bytes = sql.as_bytes();
    let mut at = 0;
    let mut depth = 0usize;
    let mut first = true;
    while at < bytes.len() {
        let (_, len) = token(&bytes[at..]);
        let word = &bytes[at..at + len];
        at += len;
        match word {
            b"(" => depth += 1,
            b")" => depth = depth.saturating_sub(1),
            _ if depth == 0 && word.first().is_some_and(|b| is_word_byte(*b)) => {
                let is = |k: &[u8]| word.eq_ignore_ascii_case(k);
                if is(b"insert") || is(b"replace") {
                    return Some(Verb::Insert);
                }
                if is(b"update") || is(b"delete") {
                    return Some(Verb::Change);
                }
                if is(b"select") || is(b"values") {
                    return Some(Verb::Read);
                }
                // Only a WITH clause comes before the verb; a statement
                // that starts with another word (CREATE, PRAGMA, BEGIN)
                // is none of these.
                if first && !is(b"with") {
                    return None;
                }
                first = false;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_statement_ends_only() {
        let script = "-- header; with a semicolon\n\
            CREATE TABLE a (x TEXT DEFAULT ';');\n\
            /* block; comment */\n\
            CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  INSERT INTO a VALUES ('in; body');\n  SELECT 1;\nEND;\n\
            INSERT INTO a VALUES ('it''s; fine'); SELECT 2";
        let parts = split_statements(script);
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert!(parts[0].ends_with("DEFAULT ';');"));
        assert!(parts[1].contains("CREATE TRIGGER") && parts[1].ends_with("END;"));
        assert_eq!(parts[2], "INSERT INTO a VALUES ('it''s; fine');");
        assert_eq!(parts[3], "SELECT 2");
    }

    /// The splitter this module replaced: `sqlite3_complete()` asked about
    /// the text so far at every `;` (quadratic, so only for short texts).
    fn split_as_sqlite_judges(script: &str) -> Vec<String> {
        let complete = |sql: &str| {
            let c = std::ffi::CString::new(sql).expect("no NUL in test SQL");
            // SAFETY: `c` is NUL-terminated and outlives the call, which
            // only reads it.
            unsafe { libsql_sys::ffi::sqlite3_complete(c.as_ptr()) != 0 }
        };
        let mut statements = Vec::new();
        let mut start = 0;
        for (i, ch) in script.char_indices() {
            if ch == ';' && complete(&script[start..=i]) {
                if !is_blank(&script[start..=i]) {
                    statements.push(script[start..=i].trim().to_owned());
                }
                start = i + 1;
            }
        }
        if !is_blank(&script[start..]) {
            statements.push(script[start..].trim().to_owned());
        }
        statements
    }

    #[test]
    fn cuts_where_sqlite_says_a_statement_is_complete() {
        let cases = [
            "SELECT 1; SELECT 2;",
            "SELECT \"a;b\", `c;d`, [e;f] FROM t; SELECT 2",
            "SELECT 'unclosed; SELECT 2;",
            "SELECT 1 /* unclosed; SELECT 2;",
            "SELECT 1; -- trailing; comment",
            "SELECT 1; -- trailing; comment\nSELECT 2;",
            "CREATE TEMP TRIGGER t AFTER INSERT ON a BEGIN SELECT CASE WHEN 1 THEN 2 END; END; SELECT 3;",
            "create temporary trigger t after delete on a begin delete from b; end ; select 1",
            "EXPLAIN CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END; SELECT 2;",
            "CREATE TABLE trigger_log (x); SELECT end_date FROM t; SELECT 3",
            "CREATE TRIGGER t BEFORE UPDATE ON a BEGIN SELECT 1; SELECT 2; END",
            "SELECT 'zoë; ✊'; SELECT \"ü;\";",
            ";;; ; SELECT 1;;",
            "SELECT 1-2; SELECT 3/4; SELECT -5",
            "",
        ];
        for case in cases {
            assert_eq!(
                split_statements(case),
                split_as_sqlite_judges(case),
                "{case}"
            );
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut scripts = vec![root.join("seed/demo.sql")];
        for entry in std::fs::read_dir(root.join("../migrations")).expect("migrations") {
            scripts.push(entry.expect("entry").path());
        }
        for path in scripts
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        {
            let script = std::fs::read_to_string(path).expect("read script");
            assert_eq!(
                split_statements(&script),
                split_as_sqlite_judges(&script),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn many_semicolons_in_one_string_are_split_in_linear_time() {
        // `SELECT '` + a few MiB of `;` + `'`: asking sqlite3_complete()
        // about the prefix at every `;` would take hours.
        let sql = format!("SELECT '{}'", ";".repeat(4 << 20));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((has_many_statements(&sql), split_statements(&sql).len()));
        });
        let (many, count) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("split within 20 s");
        assert!(!many);
        assert_eq!(count, 1);
        assert!(has_many_statements("SELECT ';'; SELECT 2"));
        assert!(!has_many_statements("SELECT ';'; -- done;"));
    }

    #[test]
    fn inserts_are_told_from_other_statements() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "  -- a note\n insert or ignore into t (a) values ('select')",
            "REPLACE INTO t VALUES (2)",
            "/* x */ WITH a(x) AS (SELECT 1), b AS (VALUES (2)) INSERT INTO t SELECT x FROM a",
            "with recursive c(n) as (select 1 union all select n + 1 from c where n < 3) insert into t select n from c",
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2",
        ] {
            assert_eq!(verb(sql), Some(Verb::Insert), "{sql}");
        }
        for (sql, expected) in [
            ("SELECT 1", Some(Verb::Read)),
            ("select 'insert into t'", Some(Verb::Read)),
            ("VALUES (1)", Some(Verb::Read)),
            ("UPDATE t SET a = 1", Some(Verb::Change)),
            ("DELETE FROM t WHERE a IN (SELECT 1)", Some(Verb::Change)),
            (
                "WITH a AS (SELECT 1) UPDATE t SET x = (SELECT * FROM a)",
                Some(Verb::Change),
            ),
            (
                "WITH a AS NOT MATERIALIZED (SELECT 1) DELETE FROM t",
                Some(Verb::Change),
            ),
            ("CREATE TABLE \"insert\" (a)", None),
            ("CREATE TABLE t2 AS SELECT 1", None),
            (
                "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN INSERT INTO u VALUES (1); END",
                None,
            ),
            ("PRAGMA user_version", None),
            ("BEGIN", None),
            ("", None),
        ] {
            assert_eq!(verb(sql), expected, "{sql}");
        }
    }

    #[test]
    fn blank_sql_is_detected() {
        assert!(is_blank(""));
        assert!(is_blank("  ; -- only a comment\n /* and this */ ;"));
        assert!(!is_blank("-- c\nSELECT 1"));
        assert!(!is_blank("/* x */ SELECT 1"));
        assert!(split_statements("-- nothing\n;;").is_empty());
    }
}
