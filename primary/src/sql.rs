//! Splitting SQL scripts (migrations, seed files) into single statements.
//!
//! Hrana's `execute` and `batch` take one statement each. A script is cut at
//! each `;` where SQLite's own `sqlite3_complete()` says the text so far is a
//! whole statement, so semicolons inside strings, comments and trigger bodies
//! (`BEGIN ... END;`) do not cut.

use std::ffi::CString;

/// The statements of `script`, in order, without blank ones. A trailing
/// statement without `;` is kept (the server will judge it).
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    for (i, ch) in script.char_indices() {
        if ch != ';' {
            continue;
        }
        let candidate = &script[start..=i];
        if is_complete(candidate) {
            if !is_blank(candidate) {
                statements.push(candidate.trim().to_owned());
            }
            start = i + 1;
        }
    }
    let rest = &script[start..];
    if !is_blank(rest) {
        statements.push(rest.trim().to_owned());
    }
    statements
}

fn is_complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // sqlite3_complete only reads it.
    unsafe { libsql_sys::ffi::sqlite3_complete(c.as_ptr()) != 0 }
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

    #[test]
    fn blank_sql_is_detected() {
        assert!(is_blank(""));
        assert!(is_blank("  ; -- only a comment\n /* and this */ ;"));
        assert!(!is_blank("-- c\nSELECT 1"));
        assert!(!is_blank("/* x */ SELECT 1"));
        assert!(split_statements("-- nothing\n;;").is_empty());
    }
}
