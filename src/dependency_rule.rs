//! DESIGN.md's dependency rule, checked against the source: the stage contract is a leaf,
//! and the stage modules build on it, never on the pipeline, the upstream, the server, the
//! composition root or the admin listener.
//!
//! The check reads every `crate::` path in `src/` (grouped `use crate::{a::{b, c}}`
//! included; comment lines skipped), the way a reviewer would grep for them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Modules that may import nothing from the crate but the stage contract.
const LEAVES: &[&str] = &["src/proxy/contract", "src/admin/hooks.rs"];
/// The stage modules.
const STAGE_MODULES: &[&str] = &["src/shield", "src/privacy", "src/expiry"];
/// Stage modules built from their own config section, never from the whole `Config`.
const SECTION_BUILT: &[&str] = &["src/shield", "src/privacy", "src/expiry"];

/// Every `crate::` path in `code`, without the `crate::` (`proxy::contract::Flow`).
fn crate_paths(code: &str) -> Vec<String> {
    let code: String =
        code.lines().filter(|line| !line.trim_start().starts_with("//")).map(|line| format!("{line}\n")).collect();
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut tree = rest;
        out.extend(use_tree(&mut tree));
    }
    out
}

/// One use tree (`a::b`, `a::{b, c::d}`, `a as x`), expanded to its paths.
fn use_tree(s: &mut &str) -> Vec<String> {
    *s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        *s = group;
        let mut paths = Vec::new();
        loop {
            *s = s.trim_start();
            if let Some(after) = s.strip_prefix('}') {
                *s = after;
                return paths;
            }
            if s.is_empty() {
                return paths;
            }
            paths.extend(use_tree(s));
            *s = s.trim_start();
            if let Some(after) = s.strip_prefix(',') {
                *s = after;
            }
        }
    }
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '*')).unwrap_or(s.len());
    let ident = s[..end].to_owned();
    *s = &s[end..];
    if let Some(after) = s.strip_prefix("::") {
        *s = after;
        return use_tree(s).into_iter().map(|p| format!("{ident}::{p}")).collect();
    }
    if let Some(after) = s.trim_start().strip_prefix("as ") {
        let after = after.trim_start();
        *s = &after[after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len())..];
    }
    vec![ident]
}

/// What `path` (imported by a file of `module`) breaks, if anything.
fn violation(module: &str, path: &str) -> Option<&'static str> {
    let under = |p: &str, prefix: &str| p == prefix || p.starts_with(&format!("{prefix}::"));
    if LEAVES.iter().any(|leaf| module.starts_with(leaf)) && !under(path, "proxy::contract") {
        return Some("the stage contract is a leaf: it imports nothing else from the crate");
    }
    if STAGE_MODULES.iter().any(|m| module.starts_with(m)) {
        if under(path, "proxy") && !under(path, "proxy::contract") {
            return Some("a stage module imports the stage contract, never the pipeline or the upstream");
        }
        if under(path, "server") || under(path, "app") {
            return Some("a stage module never imports the server or the composition root");
        }
        if under(path, "admin") && !under(path, "admin::hooks") {
            return Some("a stage module plugs into the admin listener through admin::hooks only");
        }
    }
    if SECTION_BUILT.iter().any(|m| module.starts_with(m)) && under(path, "config") {
        return Some("a stage module is built from its own config section, never from the whole Config");
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn violations_in(module: &str, code: &str) -> Vec<String> {
    crate_paths(code)
        .into_iter()
        .filter_map(|path| violation(module, &path).map(|why| format!("{module}: crate::{path}: {why}")))
        .collect()
}

#[test]
fn stage_modules_build_on_the_leaf_contract_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut checked = [0usize; 2];
    let mut found = Vec::new();
    for file in &files {
        let module = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if module == "src/dependency_rule.rs" {
            continue;
        }
        let code = std::fs::read_to_string(file).unwrap();
        if LEAVES.iter().any(|leaf| module.starts_with(leaf)) {
            checked[0] += 1;
        }
        if STAGE_MODULES.iter().any(|m| module.starts_with(m)) {
            checked[1] += 1;
        }
        found.extend(violations_in(&module, &code));
    }
    assert!(checked[0] >= 8 && checked[1] >= 60, "the check read too few files: {checked:?}");
    assert!(found.is_empty(), "the dependency rule is broken:\n{}", found.join("\n"));
}

/// The check itself: each kind of import it must refuse, in each spelling.
#[test]
fn the_check_sees_every_spelling_of_a_forbidden_import() {
    let code = r#"
        use crate::proxy::pipeline::Pipeline;
        use crate::{
            metrics::MetricsSource,
            proxy::{contract::Flow, upstream::{Upstream, last_word as lw}},
        };
        // crate::server::run in a comment is no import
        fn f() { crate::server::run(); let x = crate::admin::Admin::new(); }
    "#;
    let found = violations_in("src/shield/x.rs", code);
    assert_eq!(found.len(), 5, "{found:#?}");
    for path in ["proxy::pipeline::Pipeline", "proxy::upstream::Upstream", "proxy::upstream::last_word", "server::run"]
    {
        assert!(found.iter().any(|v| v.contains(&format!("crate::{path}:"))), "{path}: {found:#?}");
    }
    assert!(found.iter().any(|v| v.contains("crate::admin::Admin::new")));
    assert!(violations_in("src/shield/x.rs", "use crate::{admin::hooks::Reload, proxy::contract::Stage};").is_empty());
    let leaf = violations_in("src/proxy/contract/x.rs", "use crate::{metrics::Metrics, proxy::contract::Body};");
    assert_eq!(leaf.len(), 1, "{leaf:?}");
    assert_eq!(violations_in("src/privacy/x.rs", "fn f(c: &crate::config::Config) {}").len(), 1);
    assert!(violations_in("src/app.rs", "use crate::proxy::pipeline::Pipeline;").is_empty());
}
