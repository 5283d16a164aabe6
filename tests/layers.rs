//! The layout's rules, read from the source: every `crate::` path in
//! `src/` (outside `#[cfg(test)]` modules and comments) is an edge from the
//! module that names it to the module it names. The modules import in no
//! circle, and the bottom layers import nothing above them.
//!
//! Layers, top down: `http` (pipeline, router) → `routes` and `jobs` →
//! `edge` → `objects` → `store` → `domain` and `runtime` (the Workers
//! runtime's fetch and timers). `http::error` is the one error
//! type, so every layer may name it. `bench` is compiled only with the
//! `bench` feature (the build without it proves nothing else needs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `src/edge/cache.rs` is `edge::cache`; `src/objects/mod.rs` is `objects`;
/// `src/lib.rs` is the crate root, "".
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code a module runs: comments and its `#[cfg(test)] mod tests`
/// (always last in this codebase) removed.
fn code(text: &str) -> String {
    let text = match text
        .find("#[cfg(test)]\nmod tests")
        .or_else(|| text.find("#[cfg(test)]\npub(crate) mod tests"))
    {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string (a URL) is rare in a use path; a
            // line's comment tail is what matters.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `crate::` use tree at `s` names, e.g. `crate::a::{b, c::d}`
/// gives `a::b` and `a::c::d`.
fn use_tree(s: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i < s.len() && s[i] == b'{' {
        i += 1;
        loop {
            skip_ws(&mut i);
            if i >= s.len() {
                return i;
            }
            if s[i] == b'}' {
                return i + 1;
            }
            i = use_tree(s, i, prefix, out);
            skip_ws(&mut i);
            if i < s.len() && s[i] == b',' {
                i += 1;
            }
        }
    }
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    if start == i {
        // `*` or something that ends the path.
        if i < s.len() && s[i] == b'*' {
            out.push(prefix.to_vec());
            return i + 1;
        }
        out.push(prefix.to_vec());
        return i;
    }
    let mut path = prefix.to_vec();
    path.push(String::from_utf8_lossy(&s[start..i]).into_owned());
    if s[i..].starts_with(b"::") {
        return use_tree(s, i + 2, &path, out);
    }
    out.push(path);
    i
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let texts: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            (module_of(&src, f), code(&text))
        })
        .collect();
    let mut graph = Graph::new();
    for (module, text) in &texts {
        let mut paths = Vec::new();
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(at) = text[from..].find("crate::") {
            let start = from + at + "crate::".len();
            use_tree(bytes, start, &[], &mut paths);
            from = start;
        }
        let edges = graph.entry(module.clone()).or_default();
        for path in paths {
            // The longest prefix that is a module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| texts.contains_key(m));
            if let Some(target) = target {
                let own = &target == module || module.starts_with(&format!("{target}::"));
                if !own {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

/// The circles of `graph` (strongly connected sets of two or more).
fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut set = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    set.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    self.found.push(set);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

#[test]
fn the_checker_sees_a_circle_and_its_absence() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in pairs {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    let circle = circles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
    assert_eq!(circle.len(), 1);
    assert_eq!(circle[0].len(), 3);
    assert!(circles(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());

    let mut paths = Vec::new();
    let text = b"store::{db::{Db, Query}, value as v}, edge::cache;";
    use_tree(text, 0, &[], &mut paths);
    assert_eq!(paths[0], ["store", "db", "Db"]);
    assert_eq!(paths[1], ["store", "db", "Query"]);
    assert_eq!(paths[2], ["store", "value"]);
}

#[test]
fn modules_import_in_no_circle() {
    let graph = graph();
    assert!(
        graph.len() > 40 && graph.contains_key("http::pipeline"),
        "the source was not read: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other: {found:?}"
    );
}

#[test]
fn the_bottom_layers_import_nothing_above_them() {
    let allowed: [(&str, &[&str]); 3] = [
        ("domain", &["domain"]),
        ("runtime", &["runtime"]),
        ("store", &["store", "domain", "runtime"]),
    ];
    let mut wrong = Vec::new();
    for (module, targets) in graph() {
        for (bottom, may) in allowed {
            if layer(&module) != bottom {
                continue;
            }
            for target in &targets {
                if target != "http::error" && !may.contains(&layer(target)) {
                    wrong.push(format!("{module} -> {target}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports upward: {wrong:?}");
}

#[test]
fn only_the_pipeline_the_objects_and_the_benchmarks_call_into_routes() {
    let mut wrong = Vec::new();
    for (module, targets) in graph() {
        let caller = layer(&module);
        for target in targets.iter().filter(|t| layer(t) == "routes") {
            // The pipeline dispatches to routes; the Outbox object replays a
            // kept write through the same functions; benchmark baselines
            // stand in for one.
            if !matches!(caller, "http" | "routes" | "objects" | "bench") {
                wrong.push(format!("{module} -> {target}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports into routes: {wrong:?}");
}
