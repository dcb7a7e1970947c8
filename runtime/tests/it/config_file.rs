//! `ContainerConfig::load` against real files.

use sessionbus_runtime::config::{ConfigError, ContainerConfig, Skills, MAX_CONFIG_BYTES};
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_valid_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "container.json",
        br#"{"provider": "claude", "assistantName": "Andy", "skills": ["pdf"], "maxMessagesPerPrompt": 2}"#,
    );
    let cfg = ContainerConfig::load(&p).unwrap();
    assert_eq!(cfg.assistant_name.as_deref(), Some("Andy"));
    assert_eq!(cfg.skills, Skills::Named(vec!["pdf".into()]));
    assert_eq!(cfg.max_messages_per_prompt.get(), 2);
}

#[test]
fn a_missing_file_is_its_own_variant() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent").join("container.json");
    match ContainerConfig::load(&p) {
        Err(ConfigError::NotFound { path }) => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_folder_is_not_a_config() {
    let dir = tempfile::tempdir().unwrap();
    match ContainerConfig::load(dir.path()) {
        Err(e @ ConfigError::NotAFile { .. }) => {
            assert!(e.to_string().contains(&dir.path().display().to_string()))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_malformed_file_names_the_file_and_is_not_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "container.json",
        b"{\"provider\": \"claude\",\n}",
    );
    let err = ContainerConfig::load(&p).unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");

    let p = write(
        dir.path(),
        "typed.json",
        br#"{"mcpServers": {"x": {"command": 1}}}"#,
    );
    let err = ContainerConfig::load(&p).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&p.display().to_string()), "{text}");
    assert!(text.contains("`mcpServers.x.command`"), "{text}");
}

#[test]
fn non_utf8_bytes_are_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "container.json",
        b"{\"provider\": \"cl\xffude\"}",
    );
    assert!(matches!(
        ContainerConfig::load(&p),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn an_empty_file_is_an_error_not_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "container.json", b"");
    assert!(matches!(
        ContainerConfig::load(&p),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn size_limit_is_inclusive_and_checked_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    // Exactly the limit: read and parsed (valid JSON padded with spaces).
    let mut at_limit = b"{}".to_vec();
    at_limit.resize(MAX_CONFIG_BYTES as usize, b' ');
    let p = write(dir.path(), "at.json", &at_limit);
    assert_eq!(
        ContainerConfig::load(&p).unwrap(),
        ContainerConfig::default()
    );

    // One byte more, and not JSON at all: refused as too large, never as a syntax error.
    let over = vec![b'x'; MAX_CONFIG_BYTES as usize + 1];
    let p = write(dir.path(), "over.json", &over);
    match ContainerConfig::load(&p) {
        Err(ConfigError::TooLarge { size, limit, path }) => {
            assert_eq!(size, MAX_CONFIG_BYTES + 1);
            assert_eq!(limit, MAX_CONFIG_BYTES);
            assert_eq!(path, p);
        }
        other => panic!("{other:?}"),
    }
}

/// A link or a FIFO in place of the file is refused at once, never followed or waited on:
/// whoever could write the folder could otherwise point the host at any file, or hang it.
#[test]
fn a_symlink_or_a_fifo_is_refused_without_following_or_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let real = write(dir.path(), "real.json", br#"{"model": "m"}"#);
    let link = dir.path().join("container.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(matches!(
        ContainerConfig::load(&link),
        Err(ConfigError::NotAFile { .. })
    ));
    let fifo = dir.path().join("fifo.json");
    sessionbus_testkit::hostile::mkfifo(&fifo);
    let start = std::time::Instant::now();
    assert!(matches!(
        ContainerConfig::load(&fifo),
        Err(ConfigError::NotAFile { .. })
    ));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
