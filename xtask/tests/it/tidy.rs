//! Conventions checked by a test rather than by memory: what ARCHITECTURE.md claims about the
//! code, where a test can check it.

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The library crates (the code a host or container links).
const LIBRARIES: &[&str] = &["schema", "store", "runtime"];

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a source file without its `#[cfg(test)]` module and comment lines.
fn library_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Library files (relative to the root) whose code contains `needle`.
fn library_files_with(needle: &str) -> Vec<String> {
    let root = root();
    LIBRARIES
        .iter()
        .flat_map(|c| rust_files(&root.join(c).join("src")))
        .filter(|p| library_code(p).contains(needle))
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect()
}

/// ARCHITECTURE: "every connection to a session file is opened by `DbFile`" (and the host's
/// connections to the container's file by `untrusted`, which `DbFile` calls).
#[test]
fn connections_are_opened_only_by_the_openers() {
    let allowed = [
        "schema/src/conn.rs",          // DbFile's openers
        "schema/src/untrusted/mod.rs", // the hardened reader DbFile uses for untrusted files
        "schema/src/migrate.rs",       // an in-memory scratch file: the expected shape
    ];
    for needle in ["::establish(", "sqlite3_open"] {
        for file in library_files_with(needle) {
            assert!(
                allowed.contains(&file.as_str()),
                "{file} opens a connection ({needle}) outside the openers"
            );
        }
    }
}

/// ARCHITECTURE: "every now of a decision comes from a `Clock`". Wall-clock reads are allowed
/// only where the time decides nothing.
#[test]
fn wall_clock_reads_are_only_where_they_decide_nothing() {
    let allowed = [
        "schema/src/time.rs",       // SystemClock itself
        "store/src/stamp.rs",       // the stamp's informational wall time
        "store/src/fileio.rs",      // seeding retry jitter
        "runtime/src/heartbeat.rs", // `touch`, the explicit system-clock variant
    ];
    for needle in ["SystemTime::now", "Utc::now", "Local::now"] {
        for file in library_files_with(needle) {
            assert!(
                allowed.contains(&file.as_str()),
                "{file} reads the wall clock ({needle}) instead of a Clock"
            );
        }
    }
}

/// Every library crate documents every public item and denies what can panic on input.
#[test]
fn library_crate_roots_deny_missing_docs_and_panics() {
    for c in LIBRARIES.iter().chain(&["testkit"]) {
        let lib = std::fs::read_to_string(root().join(c).join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("#![warn(missing_docs)]") || lib.contains("#![deny(missing_docs)]"),
            "{c}/src/lib.rs does not require docs"
        );
        if LIBRARIES.contains(c) {
            for lint in [
                "clippy::unwrap_used",
                "clippy::expect_used",
                "clippy::indexing_slicing",
                "clippy::panic",
            ] {
                assert!(lib.contains(lint), "{c}/src/lib.rs does not deny {lint}");
            }
        }
    }
}

/// The normal (not dev) dependencies of workspace crate `c` that are workspace crates.
fn workspace_deps(c: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join(c).join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" && line.starts_with("sessionbus-") {
            deps.push(line.split([' ', '=']).next().unwrap().to_string());
        }
    }
    deps.sort();
    deps
}

/// ARCHITECTURE's layering: schema depends on no workspace crate, store on schema, runtime on
/// both; test fixtures are never a normal dependency of a library (the operator build links
/// none).
#[test]
fn the_layering_matches_the_manifests() {
    assert_eq!(workspace_deps("schema"), Vec::<String>::new());
    assert_eq!(workspace_deps("store"), ["sessionbus-schema"]);
    assert_eq!(
        workspace_deps("runtime"),
        ["sessionbus-schema", "sessionbus-store"]
    );
    let store = std::fs::read_to_string(root().join("store/Cargo.toml")).unwrap();
    assert!(
        store.contains("fixtures = []") || !store.contains("fixtures"),
        "store's fixtures must stay an opt-in feature"
    );
}

/// Every `crate::module` path ARCHITECTURE.md names exists: a module file, or a function or
/// type of that name in the crate.
#[test]
fn architecture_names_only_code_that_exists() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for span in text.split('`').skip(1).step_by(2) {
        let mut parts = span.split("::");
        let Some(krate) = parts.next().filter(|c| LIBRARIES.contains(c)) else {
            continue;
        };
        let Some(first) = parts.next() else { continue };
        let name: String = first
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let src = root.join(krate).join("src");
        let module = src.join(format!("{name}.rs")).exists() || src.join(&name).is_dir();
        let item = rust_files(&src).iter().any(|p| {
            let code = std::fs::read_to_string(p).unwrap();
            [
                format!("fn {name}"),
                format!("struct {name}"),
                format!("enum {name}"),
                format!("trait {name}"),
                format!("type {name}"),
                format!("use {name}"),
                format!(" {name},"),
            ]
            .iter()
            .any(|d| code.contains(d.as_str()))
        });
        assert!(
            module || item,
            "ARCHITECTURE.md names `{span}`, but {krate} has no module or item `{name}`"
        );
        checked += 1;
    }
    assert!(
        checked > 20,
        "only {checked} paths found: did the format change?"
    );
}

/// Every tracked text file of the repository (from `git ls-files`), relative to the root.
fn tracked(ext: &[&str]) -> Vec<PathBuf> {
    let out = std::process::Command::new("git")
        .arg("ls-files")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.extension().is_some_and(|e| ext.iter().any(|x| e == *x)))
        .filter(|p| !p.starts_with("peer/node_modules"))
        .collect()
}

/// The repository carries its own documentation: nothing cites the reference documents the
/// project was started from (they are not in the repository). Applied migrations are never
/// edited, so their SQL comments are left as they were written.
#[test]
fn nothing_cites_documents_outside_the_repository() {
    for p in tracked(&["rs", "md", "toml", "sh", "mjs", "ts"]) {
        if p.ends_with("xtask/tests/it/tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&p)).unwrap();
        for needle in [
            "SPEC.md",
            "SPEC section",
            "SPEC rule",
            "NOTES-diesel",
            "PROTOCOL.md",
        ] {
            assert!(
                !text.contains(needle),
                "{} cites {needle:?}: cite docs/format.md, docs/protocol.md or docs/sqlite-notes.md",
                p.display()
            );
        }
    }
}

/// Every relative link of every Markdown file points at a file or folder that exists.
#[test]
fn markdown_links_resolve() {
    let mut checked = 0;
    for p in tracked(&["md"]) {
        let text = std::fs::read_to_string(root().join(&p)).unwrap();
        let dir = root().join(&p).parent().unwrap().to_path_buf();
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            assert!(
                dir.join(target).exists(),
                "{} links to {target}, which does not exist",
                p.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} links checked");
}
