//! `migrate::plan`, the dry run: it reports what `migrate` would do and writes nothing, not
//! even a journal, `-wal` or `-shm`, on any kind of file.

use crate::common::*;
use diesel::connection::SimpleConnection;
use sessionbus_schema::migrate::{self, FileState, Generation, MigrationPlan};
use sessionbus_schema::{DbError, FileKind};
use sessionbus_testkit::legacy::{self, Style};
use std::path::Path;

/// Runs the dry run on `path`, asserting the folder is byte-for-byte the same afterwards.
fn dry_run(path: &Path, kind: FileKind) -> Result<MigrationPlan, DbError> {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let result = migrate::plan(&writer_file(path, kind));
    assert_same_folder(&before, &snapshot(dir), "plan");
    result
}

/// The plan must be what `migrate` then does.
fn plan_then_migrate(path: &Path, kind: FileKind, plan: &MigrationPlan) {
    let out = migrate::migrate(
        &writer_file(path, kind),
        t0(),
        sessionbus_schema::migrate::IfMissing::Fail,
    )
    .unwrap();
    assert_eq!(out.applied, plan.would_apply, "applied vs planned");
    assert_eq!(out.switched_from.is_some(), plan.would_switch_from_wal);
    assert_eq!(out.before, plan.state);
    assert_eq!(out.changed(), !plan.is_current());
}

#[test]
fn a_missing_file_is_not_planned_into_existence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    let err = dry_run(&path, FileKind::Inbound).unwrap_err();
    assert!(matches!(err, DbError::NotFound { .. }), "{err:?}");
    assert!(snapshot(dir.path()).is_empty());
}

#[test]
fn an_empty_file_would_get_every_migration() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        std::fs::write(&path, b"").unwrap();
        let plan = dry_run(&path, kind).unwrap();
        assert_eq!(plan.state, FileState::Empty);
        assert_eq!(plan.would_apply, migrate::known_versions(kind));
        assert!(!plan.would_switch_from_wal && !plan.is_current());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}

#[test]
fn a_legacy_file_of_each_generation_would_get_every_migration() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        for g in legacy::GENERATIONS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(kind.file_name());
            legacy::create(&path, kind, g, Style::Patched, 3).unwrap();
            let plan = dry_run(&path, kind).unwrap();
            match &plan.state {
                FileState::Legacy { generation, .. } => {
                    assert_eq!(*generation, reported_generation(kind, g), "{kind} G{g}")
                }
                other => panic!("{kind} G{g}: {other:?}"),
            }
            assert_eq!(plan.would_apply, migrate::known_versions(kind));
            assert!(!plan.would_switch_from_wal);
            plan_then_migrate(&path, kind, &plan);
        }
    }
}

#[test]
fn a_current_file_would_get_nothing_and_an_old_one_its_missing_migration() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        migrated(&path, kind);
        let plan = dry_run(&path, kind).unwrap();
        assert!(plan.is_current(), "{plan:?}");
        assert!(plan.would_apply.is_empty());
        plan_then_migrate(&path, kind, &plan);

        let newest = migrate::latest_version(kind);
        raw_exec(
            &path,
            &format!("DELETE FROM __diesel_schema_migrations WHERE version = '{newest}'"),
        );
        let plan = dry_run(&path, kind).unwrap();
        assert_eq!(plan.would_apply, vec![newest.clone()]);
        match &plan.state {
            FileState::Migrated { pending, applied } => {
                assert_eq!(pending, &vec![newest.clone()]);
                assert!(!applied.contains(&newest));
            }
            other => panic!("{other:?}"),
        }
        plan_then_migrate(&path, kind, &plan);
    }
}

#[test]
fn a_newer_file_is_reported_not_planned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbound.db");
    migrated(&path, FileKind::Outbound);
    raw_exec(
        &path,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231200001')",
    );
    let err = dry_run(&path, FileKind::Outbound).unwrap_err();
    assert!(
        matches!(&err, DbError::NewerThanCode { file_version, .. } if file_version == "20991231200001"),
        "{err:?}"
    );
}

#[test]
fn a_wal_file_is_planned_from_its_main_file_without_creating_wal_or_shm() {
    for migrated_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbound.db");
        if migrated_first {
            migrated(&path, FileKind::Outbound);
        } else {
            legacy::create(&path, FileKind::Outbound, 5, Style::Created, 3).unwrap();
        }
        make_wal(&path);
        let plan = dry_run(&path, FileKind::Outbound).unwrap();
        assert!(plan.would_switch_from_wal, "{plan:?}");
        assert!(!plan.is_current());
        if migrated_first {
            assert!(plan.would_apply.is_empty(), "{plan:?}");
        } else {
            assert!(matches!(
                plan.state,
                FileState::Legacy {
                    generation: Generation(5),
                    ..
                }
            ));
            assert_eq!(
                plan.would_apply,
                migrate::known_versions(FileKind::Outbound)
            );
        }
        plan_then_migrate(&path, FileKind::Outbound, &plan);
        assert!(!header_is_wal(&path));
    }
}

#[test]
fn a_wal_file_with_a_live_wal_writer_is_left_alone() {
    // Another process's WAL connection is open with a -wal and -shm next to the file: the dry
    // run must not touch any of the three.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 8, Style::Created, 3).unwrap();
    make_wal(&path);
    let mut live = raw(&path);
    live.batch_execute(
        "PRAGMA wal_autocheckpoint = 0; \
         INSERT INTO destinations (name, type) VALUES ('later', 'agent');",
    )
    .unwrap();
    assert!(dir.path().join("inbound.db-wal").exists());
    let plan = dry_run(&path, FileKind::Inbound).unwrap();
    assert!(plan.would_switch_from_wal);
    assert_eq!(plan.would_apply, migrate::known_versions(FileKind::Inbound));
    drop(live);
}

#[test]
fn a_dry_run_works_in_a_read_only_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s");
    std::fs::create_dir(&session).unwrap();
    let path = session.join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 2, Style::Patched, 3).unwrap();
    std::fs::set_permissions(&session, std::fs::Permissions::from_mode(0o555)).unwrap();
    struct Restore<'a>(&'a Path);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
    let _restore = Restore(&session);
    let plan = dry_run(&path, FileKind::Inbound).unwrap();
    assert!(matches!(
        plan.state,
        FileState::Legacy {
            generation: Generation(1),
            ..
        }
    ));
}
