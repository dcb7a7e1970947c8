//! Files whose recorded migrations do not match this build: newer than the code, the other
//! file of the pair, never migrated, too old. Checked both by `migrate` (which must then
//! change nothing) and by the read-only `check_schema` the other side runs (which must write
//! nothing, even next to the file).

use crate::common::*;
use diesel::RunQueryDsl;
use sessionbus_schema::migrate::{self, Access};
use sessionbus_schema::{DbError, DbFile, FileKind};
use sessionbus_testkit::legacy::{self, Style};
use std::path::Path;

fn future_version(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Inbound => "20991231100001",
        FileKind::Outbound => "20991231200001",
    }
}

/// A current file of `kind` that also records a migration from a newer build.
fn newer_file(dir: &Path, kind: FileKind) -> std::path::PathBuf {
    let path = dir.join(kind.file_name());
    migrated(&path, kind);
    raw_exec(
        &path,
        &format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{}')",
            future_version(kind)
        ),
    );
    path
}

/// Opens `file` read-only and runs the schema check, asserting the folder is untouched.
fn reader_check(file: &DbFile, access: Access) -> Result<(), DbError> {
    let dir = file.path().parent().unwrap().to_path_buf();
    let before = snapshot(&dir);
    let result = file
        .open_reader("check schema")
        .and_then(|mut c| migrate::check_schema(&mut c, file, access, "check schema"));
    assert_same_folder(&before, &snapshot(&dir), "reader schema check");
    result
}

#[test]
fn a_file_newer_than_the_code_is_refused_by_migrate_and_unchanged() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = newer_file(dir.path(), kind);
        let before = snapshot(dir.path());
        let err = migrate::migrate(
            &writer_file(&path, kind),
            t0(),
            sessionbus_schema::migrate::IfMissing::Fail,
        )
        .unwrap_err();
        assert_same_folder(&before, &snapshot(dir.path()), "migrate of a newer file");
        match &err {
            DbError::NewerThanCode {
                at,
                file_version,
                code_version,
            } => {
                assert_eq!(file_version, future_version(kind));
                assert_eq!(code_version, &migrate::latest_version(kind));
                assert_eq!(at.path, path);
            }
            other => panic!("{kind}: expected NewerThanCode, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(future_version(kind)), "{text}");
        assert!(text.contains(&migrate::latest_version(kind)), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn a_reader_accepts_a_newer_file_and_a_writer_refuses_it() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = newer_file(dir.path(), kind);
        let reader = reader_file(&path, kind);
        reader_check(&reader, Access::Read)
            .unwrap_or_else(|e| panic!("{kind}: a reader must accept additive migrations: {e}"));
        if kind == FileKind::Inbound {
            let err = reader_check(&reader, Access::Write).unwrap_err();
            assert!(
                matches!(&err, DbError::NewerThanCode { file_version, .. } if file_version == future_version(kind)),
                "{kind}: {err:?}"
            );
        }
        // The writer's own check, through a writer connection, says the same.
        let writer = writer_file(&path, kind);
        let mut c = writer.open_writer("check schema").unwrap();
        let err =
            migrate::check_schema(&mut c, &writer, Access::Write, "check schema").unwrap_err();
        assert!(matches!(err, DbError::NewerThanCode { .. }), "{err:?}");
    }
}

#[test]
fn a_current_file_passes_both_checks() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        migrated(&path, kind);
        let reader = reader_file(&path, kind);
        reader_check(&reader, Access::Read).unwrap();
        reader_check(&reader, Access::Write).unwrap();
    }
}

/// An outbound.db (legacy and migrated) handed to the inbound side, and the reverse.
#[test]
fn the_other_file_of_the_pair_is_refused_as_wrong_file_and_unchanged() {
    for actual in [FileKind::Outbound, FileKind::Inbound] {
        let expected = actual.other();
        let mut cases = Vec::new();
        for g in [0u8, 5, 8] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(actual.file_name());
            legacy::create(&path, actual, g, Style::Patched, 3).unwrap();
            cases.push((format!("legacy {actual} G{g}"), dir, path));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(actual.file_name());
        migrated(&path, actual);
        cases.push((format!("migrated {actual}"), dir, path));

        for (what, dir, path) in cases {
            let before = snapshot(dir.path());
            let handed = DbFile::new(&path, expected, expected.writer());
            let err = migrate::migrate(&handed, t0(), sessionbus_schema::migrate::IfMissing::Fail)
                .unwrap_err();
            assert_same_folder(&before, &snapshot(dir.path()), &what);
            match &err {
                DbError::WrongFile {
                    at, expected: e, ..
                } => {
                    assert_eq!(*e, expected, "{what}");
                    assert_eq!(at.path, path, "{what}");
                }
                other => panic!("{what} as {expected}: expected WrongFile, got {other:?}"),
            }
            // The dry run and the reader's check say the same, writing nothing.
            let err = migrate::plan(&handed).unwrap_err();
            assert!(
                matches!(err, DbError::WrongFile { .. }),
                "{what}: plan {err:?}"
            );
            // The container's check names the wrong file; the host's structural check of the
            // container's file refuses it for the table it lacks.
            let err = reader_check(&reader_file(&path, expected), Access::Read).unwrap_err();
            if expected == FileKind::Inbound {
                assert!(
                    matches!(err, DbError::WrongFile { .. }),
                    "{what}: check_schema {err:?}"
                );
            } else {
                assert!(
                    matches!(err, DbError::RefusedSchema { .. }),
                    "{what}: check_schema {err:?}"
                );
            }
            assert_same_folder(&before, &snapshot(dir.path()), &what);
        }
    }
}

#[test]
fn a_never_migrated_file_is_not_migrated_with_a_hint() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        for g in [0u8, 4, 8] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(kind.file_name());
            legacy::create(&path, kind, g, Style::Created, 3).unwrap();
            if kind == FileKind::Outbound {
                // The host reads the container's file in whatever generation the container
                // keeps (the older implementation never migrates it).
                reader_check(&reader_file(&path, kind), Access::Read).unwrap();
                continue;
            }
            let err = reader_check(&reader_file(&path, kind), Access::Read).unwrap_err();
            match &err {
                DbError::NotMigrated { at, hint } => {
                    assert!(hint.contains("sessionbus migrate"), "{hint}");
                    assert_eq!(at.path, path);
                }
                other => panic!("{kind} G{g}: expected NotMigrated, got {other:?}"),
            }
            assert!(err.to_string().contains("sessionbus migrate"));
            assert!(!err.is_retryable());
        }
        // A zero-byte file (created but never provisioned) too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        std::fs::write(&path, b"").unwrap();
        let err = reader_check(&reader_file(&path, kind), Access::Read).unwrap_err();
        if kind == FileKind::Inbound {
            assert!(matches!(err, DbError::NotMigrated { .. }), "{err:?}");
        } else {
            assert!(matches!(err, DbError::RefusedSchema { .. }), "{err:?}");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}

#[test]
fn a_file_missing_the_newest_migration_is_too_old() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        let writer = migrated(&path, kind);
        let known = migrate::known_versions(kind);
        let newest = known.last().unwrap().clone();
        let previous = known[known.len() - 2].clone();
        {
            let mut c = writer.open_writer("forget newest migration").unwrap();
            let n = diesel::sql_query("DELETE FROM __diesel_schema_migrations WHERE version = ?")
                .bind::<diesel::sql_types::Text, _>(&newest)
                .execute(&mut c)
                .unwrap();
            assert_eq!(n, 1);
        }
        for access in [Access::Read, Access::Write] {
            if kind == FileKind::Outbound {
                // The host's view of the container's file ignores its migrations table.
                reader_check(&reader_file(&path, kind), access).unwrap();
                continue;
            }
            let err = reader_check(&reader_file(&path, kind), access).unwrap_err();
            match &err {
                DbError::TooOld {
                    at,
                    file_version,
                    required,
                    hint,
                } => {
                    assert_eq!(file_version, &previous, "{kind}");
                    assert_eq!(required, &newest, "{kind}");
                    assert!(hint.contains("sessionbus migrate"), "{hint}");
                    assert_eq!(at.path, path);
                }
                other => panic!("{kind}: expected TooOld, got {other:?}"),
            }
        }
        // migrate brings it back.
        let out =
            migrate::migrate(&writer, t0(), sessionbus_schema::migrate::IfMissing::Fail).unwrap();
        assert_eq!(out.applied, vec![newest]);
        reader_check(&reader_file(&path, kind), Access::Read).unwrap();
    }
}

#[test]
fn the_reader_check_works_in_a_read_only_folder_and_creates_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session");
    std::fs::create_dir(&session).unwrap();
    let inbound = session.join("inbound.db");
    let outbound = session.join("outbound.db");
    migrated(&inbound, FileKind::Inbound);
    legacy::create(&outbound, FileKind::Outbound, 5, Style::Patched, 3).unwrap();
    std::fs::set_permissions(&session, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Give the folder back its write bit whatever happens, so the temp dir can be removed.
    struct Restore<'a>(&'a Path);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
    let _restore = Restore(&session);

    // Tests may run as root, which ignores permission bits: the folder snapshot, not EACCES,
    // is what proves nothing was created (reader_check compares it).
    let before = snapshot(&session);
    reader_check(&reader_file(&inbound, FileKind::Inbound), Access::Read).unwrap();
    // The host reads a legacy outbound.db as it is.
    reader_check(&reader_file(&outbound, FileKind::Outbound), Access::Read).unwrap();

    // The reader really is read-only: SQLite refuses a write through it.
    let reader = reader_file(&inbound, FileKind::Inbound);
    let mut c = reader.open_reader("try to write").unwrap();
    let e = diesel::sql_query("DELETE FROM destinations")
        .execute(&mut c)
        .unwrap_err();
    let err = reader.err("try to write", e);
    assert!(matches!(err, DbError::ReadOnly { .. }), "{err:?}");
    drop(c);
    assert_same_folder(&before, &snapshot(&session), "read-only folder");
}
