//! The heartbeat file against a real filesystem.

use sessionbus_runtime::heartbeat::{self, HeartbeatError, Touched};
use sessionbus_schema::{Clock, SystemClock, Timestamp};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

#[test]
fn touch_creates_the_file_with_the_current_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    let before = SystemClock.now();
    assert_eq!(heartbeat::touch(&path).unwrap(), Touched::Created);
    let after = SystemClock.now();
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    let m = heartbeat::mtime(&path).unwrap().unwrap();
    // mtime is floored to whole milliseconds, so allow 1 ms below `before`.
    assert!(
        m >= before.plus_millis(-1) && m <= after,
        "{before} <= {m} <= {after}"
    );
}

#[test]
fn touch_moves_an_existing_files_mtime_and_keeps_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    std::fs::write(&path, b"keep me").unwrap();
    let old = ts("2020-01-01T00:00:00.000Z");
    assert_eq!(heartbeat::touch_at(&path, old).unwrap(), Touched::Updated);
    assert_eq!(heartbeat::mtime(&path).unwrap(), Some(old));

    assert_eq!(heartbeat::touch(&path).unwrap(), Touched::Updated);
    let now = SystemClock.now();
    let age = heartbeat::age_ms(&path, now).unwrap().unwrap();
    assert!((0..10_000).contains(&age), "age {age}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn touch_at_sets_exact_times_and_age_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    let t = ts("2026-04-21T12:05:19.123Z");
    assert_eq!(heartbeat::touch_at(&path, t).unwrap(), Touched::Created);
    assert_eq!(heartbeat::mtime(&path).unwrap(), Some(t));
    assert_eq!(
        heartbeat::age_ms(&path, t.plus_millis(61_001)).unwrap(),
        Some(61_001)
    );
    // Clock skew: a "now" before the mtime gives a negative age.
    assert_eq!(
        heartbeat::age_ms(&path, t.plus_millis(-500)).unwrap(),
        Some(-500)
    );
    // The access time is set too.
    let accessed = std::fs::metadata(&path).unwrap().accessed().unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(accessed, modified);
}

#[test]
fn a_missing_file_has_no_mtime_and_no_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    assert_eq!(heartbeat::mtime(&path).unwrap(), None);
    assert_eq!(heartbeat::age_ms(&path, SystemClock.now()).unwrap(), None);
    let gone = dir.path().join("no-such-session").join(".heartbeat");
    assert_eq!(heartbeat::mtime(&gone).unwrap(), None);
}

#[test]
fn a_folder_that_is_gone_is_not_an_error_and_is_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("sess");
    std::fs::create_dir(&session).unwrap();
    let path = heartbeat::heartbeat_path(&session);
    assert_eq!(heartbeat::touch(&path).unwrap(), Touched::Created);
    std::fs::remove_dir_all(&session).unwrap();
    assert_eq!(heartbeat::touch(&path).unwrap(), Touched::FolderGone);
    assert_eq!(
        heartbeat::touch_at(&path, ts("2026-01-01 00:00:00")).unwrap(),
        Touched::FolderGone
    );
    assert!(!session.exists());
}

#[test]
fn other_io_errors_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // The "session folder" is a regular file: ENOTDIR, not "gone".
    let not_a_dir = dir.path().join("plain");
    std::fs::write(&not_a_dir, b"").unwrap();
    let path = heartbeat::heartbeat_path(&not_a_dir);
    for err in [
        heartbeat::touch(&path).unwrap_err(),
        heartbeat::mtime(&path).unwrap_err(),
    ] {
        assert!(matches!(err, HeartbeatError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_read_only_heartbeat_file_can_still_be_touched_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let t = ts("2026-02-03T04:05:06.007Z");
    assert_eq!(heartbeat::touch_at(&path, t).unwrap(), Touched::Updated);
    assert_eq!(heartbeat::mtime(&path).unwrap(), Some(t));
}

#[test]
fn repeated_touches_keep_moving_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = heartbeat::heartbeat_path(dir.path());
    let mut t = ts("2026-04-21T12:00:00.000Z");
    assert_eq!(heartbeat::touch_at(&path, t).unwrap(), Touched::Created);
    for _ in 0..5 {
        t = t.plus_millis(250);
        assert_eq!(heartbeat::touch_at(&path, t).unwrap(), Touched::Updated);
        assert_eq!(heartbeat::mtime(&path).unwrap(), Some(t));
    }
}
