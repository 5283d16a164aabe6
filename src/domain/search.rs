//! Turning what people type into a safe FTS5 query.
//!
//! Input is cut into words (runs of letters and digits, any script); every
//! word becomes a quoted FTS5 string, so quotes, `*`, `NEAR`, `AND`, `-`,
//! `:` and brackets are just text and can never be a syntax error. Words are
//! ANDed; the last one matches as a prefix (people are still typing it).
//! Case and accents are folded by the index's tokenizer
//! (`unicode61 remove_diacritics 2`), which also tokenizes the query.

/// The most words a query keeps (the rest are dropped).
pub const MAX_TERMS: usize = 8;
/// The longest word kept, in characters.
pub const MAX_TERM_CHARS: usize = 64;

/// A normalised search: lower-case words, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    terms: Vec<String>,
}

impl SearchQuery {
    /// `None` when the input holds no word (an empty search lists instead).
    pub fn parse(raw: &str) -> Option<SearchQuery> {
        let terms: Vec<String> = raw
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(MAX_TERMS)
            .map(|w| {
                w.chars()
                    .take(MAX_TERM_CHARS)
                    .collect::<String>()
                    .to_lowercase()
            })
            .collect();
        (!terms.is_empty()).then_some(SearchQuery { terms })
    }

    /// The FTS5 MATCH expression: `"w1" "w2" "w3"*`.
    pub fn fts(&self) -> String {
        let last = self.terms.len() - 1;
        self.terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let quoted = format!("\"{}\"", t.replace('"', "\"\""));
                if i == last {
                    quoted + "*"
                } else {
                    quoted
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The canonical text of the query (for cache keys and cursors).
    pub fn canonical(&self) -> String {
        self.terms.join(" ")
    }
}

/// bm25 with the column weights the search uses: issue_id (unindexed) 0,
/// name 10, description 2, synonyms 5.
pub const BM25: &str = "bm25(issues_fts, 0.0, 10.0, 2.0, 5.0)";

/// The seed app's search, kept as the baseline the FTS search is measured
/// against: substring `LIKE` on name and description, or a synonym.
pub const LIKE_BASELINE_SQL: &str = "SELECT i.id, i.name FROM issues i \
     WHERE i.name LIKE ?1 OR i.description LIKE ?1 \
        OR i.id IN (SELECT issue_id FROM synonyms WHERE term LIKE ?1) \
     ORDER BY i.rioter_count DESC LIMIT 20";

/// The FTS search the API runs, in its simplest form (for the benchmark):
/// name counts most, then synonyms, then the description. The best matches
/// are found in the index alone and only they are joined to `issues`
/// (joining every match first was 5x slower at 100,000 issues).
pub const FTS_SQL: &str = "SELECT i.id, i.name FROM \
     (SELECT issue_id, bm25(issues_fts, 0.0, 10.0, 2.0, 5.0) AS score FROM issues_fts \
      WHERE issues_fts MATCH ?1 ORDER BY score LIMIT 20) f \
     JOIN issues i ON i.id = f.issue_id ORDER BY f.score, i.id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_quoted_terms_with_a_prefix_last() {
        let q = SearchQuery::parse("  Late TRAINS ").expect("query");
        assert_eq!(q.fts(), "\"late\" \"trains\"*");
        assert_eq!(q.canonical(), "late trains");
        assert_eq!(SearchQuery::parse("café").expect("q").fts(), "\"café\"*");
    }

    #[test]
    fn hostile_input_is_only_text() {
        for raw in [
            "\"",
            "\"\"\"",
            "*",
            "a*b",
            "NEAR(a b)",
            "a AND b OR NOT c",
            "-x",
            "(((",
            ")",
            "col:term",
            "^start",
            "{a b}",
            "a + b",
            "'; DROP TABLE issues; --",
            "\u{0}",
            "💥 boom",
        ] {
            if let Some(q) = SearchQuery::parse(raw) {
                let fts = q.fts();
                // Only quoted words, spaces and one trailing star.
                let stripped = fts.trim_end_matches('*');
                for part in stripped.split(' ') {
                    assert!(
                        part.starts_with('"') && part.ends_with('"') && part.len() >= 3,
                        "{raw:?} -> {fts}"
                    );
                    assert!(!part[1..part.len() - 1].contains('"'), "{raw:?} -> {fts}");
                }
            }
        }
        assert_eq!(SearchQuery::parse("!!! --- ***"), None);
        assert_eq!(SearchQuery::parse(""), None);
    }

    #[test]
    fn long_input_is_bounded() {
        let raw = "word ".repeat(100) + &"x".repeat(500);
        let q = SearchQuery::parse(&raw).expect("query");
        assert_eq!(q.terms.len(), MAX_TERMS);
        assert!(q.terms.iter().all(|t| t.chars().count() <= MAX_TERM_CHARS));
    }
}
