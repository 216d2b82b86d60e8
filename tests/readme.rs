//! The README's two quick-start commands work on a fresh Debian/Ubuntu container as root
//! (package lists updated first, no sudo), and CI runs the README's test command itself
//! rather than a copy of it.

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The line after the marker, as `.ci/run` extracts it.
fn ci_test_command(readme: &str) -> Option<String> {
    let mut lines = readme.lines();
    lines.find(|l| l.starts_with("<!-- ci: test command"))?;
    lines.next().map(|l| l.trim().to_string())
}

#[test]
fn quick_start_commands_run_as_root_on_a_fresh_machine() {
    let readme = read("README.md");
    let start = readme.find("## Quick start").expect("quick start section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let commands: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains("apt-get"))
        .map(str::trim)
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].ends_with("cargo run --release -- train"));
    assert!(commands[1].ends_with("cargo test --release"));
    for c in &commands {
        assert!(
            c.starts_with("apt-get update && apt-get install -y "),
            "package lists must be updated first: {c}"
        );
        assert!(!c.contains("sudo"), "a root container has no sudo: {c}");
    }
    assert!(section.contains("put `sudo`"), "say how to run with sudo");
    assert_eq!(ci_test_command(&readme).as_deref(), Some(commands[1]));
}

#[test]
fn ci_runs_the_readme_test_command_verbatim() {
    let ci = read(".ci/run");
    assert!(
        ci.contains("<!-- ci: test command"),
        "CI does not extract it"
    );
    assert!(
        ci.contains("bash -c \"$readme_test\""),
        "CI does not run it"
    );
    let copies: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with("*") && l.starts_with("cargo test"))
        .collect();
    assert!(copies.is_empty(), "CI repeats a test command: {copies:?}");
}
