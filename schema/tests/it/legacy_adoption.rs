//! Adoption of the unversioned legacy files (docs/format.md §4): every generation of both
//! files, created in one go or patched up with `ALTER TABLE`, with rows, comes out of
//! `migrate` in the current shape with every row and value kept, upstream's backfills applied
//! and the migrations recorded; a second run changes nothing.

use crate::common::*;
use diesel::SqliteConnection;
use sessionbus_schema::migrate::{self, FileState};
use sessionbus_schema::{DbFile, FileKind, Role, Timestamp};
use sessionbus_testkit::legacy::{self, SessionStateShape, Style};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROWS: usize = 7;

/// The upstream tables of each file (docs/format.md §3); the rest are this library's own.
fn upstream_tables(kind: FileKind) -> &'static [&'static str] {
    match kind {
        FileKind::Inbound => &[
            "messages_in",
            "delivered",
            "destinations",
            "session_routing",
        ],
        FileKind::Outbound => &[
            "messages_out",
            "processing_ack",
            "session_state",
            "container_state",
        ],
    }
}

/// What adoption must report as missing, worked out from the file itself: absent upstream
/// tables by name, absent columns of present tables as `table.column`.
fn expected_missing(
    kind: FileKind,
    before: &BTreeMap<String, (Vec<String>, Vec<String>)>,
) -> BTreeSet<String> {
    let shape = migrate::expected_shape(kind).expect("expected shape");
    let mut missing = BTreeSet::new();
    for t in upstream_tables(kind) {
        match before.get(*t) {
            None => {
                missing.insert((*t).to_string());
            }
            Some((cols, _)) => {
                for c in &shape.tables[*t] {
                    if !cols.contains(&c.0) {
                        missing.insert(format!("{t}.{}", c.0));
                    }
                }
            }
        }
    }
    missing
}

/// Every table's rows as far as migration must keep them: all columns, except that
/// `session_state.updated_at` is rebuilt for the legacy shapes that lacked a real value (it is
/// checked on its own).
fn kept_rows(c: &mut SqliteConnection) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    for t in tables(c) {
        let cols: Vec<String> = column_names(c, &t)
            .into_iter()
            .filter(|col| !(t == "session_state" && col == "updated_at"))
            .collect();
        let rows = dump(c, &t, &cols);
        out.insert(t, (cols, rows));
    }
    out
}

/// Builds a legacy file, migrates it, and checks everything section 1 of the brief asks.
fn adopt_and_check(kind: FileKind, g: u8, style: Style, state: SessionStateShape) {
    let what = format!("{kind} G{g} {style:?} {state:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(kind.file_name());
    legacy::create_with(&path, kind, g, style, state, ROWS).unwrap();
    let before = dump_all(&mut raw(&path));
    let before_kept = kept_rows(&mut raw(&path));
    assert!(
        !before.is_empty() && before.values().any(|(_, rows)| !rows.is_empty()),
        "{what}: fixture has no rows"
    );

    let file = writer_file(&path, kind);
    let out = migrate::migrate(&file, t0(), sessionbus_schema::migrate::IfMissing::Fail)
        .unwrap_or_else(|e| panic!("{what}: {e}"));

    // What the file was.
    match &out.before {
        FileState::Legacy {
            generation,
            missing,
        } => {
            assert_eq!(
                *generation,
                reported_generation(kind, g),
                "{what}: generation"
            );
            let got: BTreeSet<String> = missing.iter().cloned().collect();
            assert_eq!(got, expected_missing(kind, &before), "{what}: missing");
        }
        other => panic!("{what}: expected a legacy file, got {other:?}"),
    }
    assert_eq!(
        out.applied,
        migrate::known_versions(kind),
        "{what}: applied"
    );
    assert!(
        !out.created && out.switched_from.is_none(),
        "{what}: {out:?}"
    );
    assert!(out.changed());
    assert_eq!(out.path, path);
    assert!(!journal_of(&path).exists(), "{what}: journal left behind");

    let mut c = raw(&path);
    // Recorded as migrated, in the current shape.
    assert_eq!(
        recorded_versions(&mut c),
        migrate::known_versions(kind),
        "{what}: migrations table"
    );
    let shape = migrate::read_shape(&mut c, None).unwrap();
    assert_eq!(
        &shape,
        migrate::expected_shape(kind).unwrap(),
        "{what}: shape"
    );

    // Every row kept, every old value unchanged (as typed JSON, so 1 and '1' differ).
    for (table, (cols, rows)) in &before_kept {
        assert_eq!(&dump(&mut c, table, cols), rows, "{what}: rows of {table}");
        assert_eq!(
            count(&mut c, table),
            rows.len() as i64,
            "{what}: row count of {table}"
        );
    }
    // Tables the generation lacked come out empty.
    for t in upstream_tables(kind) {
        if !before.contains_key(*t) {
            assert_eq!(count(&mut c, t), 0, "{what}: new table {t} has rows");
        }
    }

    match kind {
        FileKind::Inbound => check_inbound_backfills(&mut c, g, &before, &what),
        FileKind::Outbound => check_outbound_state(&mut c, g, state, &before, &what),
    }
}

fn check_inbound_backfills(
    c: &mut SqliteConnection,
    g: u8,
    before: &BTreeMap<String, (Vec<String>, Vec<String>)>,
    what: &str,
) {
    let n = count(c, "messages_in");
    assert_eq!(n, ROWS as i64, "{what}: messages_in rows");
    let had = |t: &str, col: &str| before[t].0.iter().any(|x| x == col);
    // series_id = id on every row of a file that lacked the column; kept as it was otherwise
    // (the fixture puts odd rows into the series of `in-0`, which must survive).
    let series_eq_id = int_value(
        c,
        "SELECT count(*) AS n FROM messages_in WHERE series_id = id",
    );
    if had("messages_in", "series_id") {
        assert!(g >= 4, "{what}");
        assert_eq!(
            series_eq_id,
            ROWS.div_ceil(2) as i64,
            "{what}: series_id changed"
        );
    } else {
        assert_eq!(series_eq_id, n, "{what}: series_id backfill");
    }
    let trig1 = int_value(c, "SELECT count(*) AS n FROM messages_in WHERE trigger = 1");
    if had("messages_in", "trigger") {
        assert_eq!(
            trig1,
            (0..ROWS).filter(|i| i % 3 != 2).count() as i64,
            "{what}"
        );
    } else {
        assert_eq!(trig1, n, "{what}: trigger backfill");
    }
    let wake0 = int_value(c, "SELECT count(*) AS n FROM messages_in WHERE on_wake = 0");
    if had("messages_in", "on_wake") {
        assert_eq!(
            wake0,
            (0..ROWS).filter(|i| i % 5 != 4).count() as i64,
            "{what}"
        );
    } else {
        assert_eq!(wake0, n, "{what}: on_wake backfill");
    }
    if !had("messages_in", "source_session_id") {
        assert_eq!(
            int_value(
                c,
                "SELECT count(*) AS n FROM messages_in WHERE source_session_id IS NULL"
            ),
            n,
            "{what}: source_session_id must start NULL"
        );
    }
    let delivered = int_value(
        c,
        "SELECT count(*) AS n FROM delivered WHERE status = 'delivered'",
    );
    if had("delivered", "status") {
        // The fixture records every third delivery as failed; adoption must not reset it.
        assert_eq!(
            delivered,
            (0..ROWS).filter(|i| i % 3 != 1).count() as i64,
            "{what}"
        );
    } else {
        assert_eq!(
            delivered,
            count(c, "delivered"),
            "{what}: delivered.status backfill"
        );
    }
}

fn check_outbound_state(
    c: &mut SqliteConnection,
    g: u8,
    state: SessionStateShape,
    before: &BTreeMap<String, (Vec<String>, Vec<String>)>,
    what: &str,
) {
    if g < 2 {
        assert!(!before.contains_key("session_state"));
        return;
    }
    let col = columns(c, "session_state")
        .into_iter()
        .find(|c| c.name == "updated_at")
        .unwrap_or_else(|| panic!("{what}: no updated_at"));
    assert_eq!(col.col_type, "TEXT", "{what}");
    assert!(col.not_null, "{what}: updated_at must be NOT NULL");
    assert_eq!(col.default, None, "{what}: updated_at must have no default");

    let rows = text_values(
        c,
        "SELECT key || '=' || updated_at AS v FROM session_state ORDER BY key",
    );
    let stamp = t0().to_iso();
    let expected: Vec<Option<String>> = match state {
        SessionStateShape::Current => vec![
            Some("continuation:claude=2026-04-21T12:07:00.000Z".into()),
            Some("sdk_session_id=2026-04-21T12:06:00.000Z".into()),
        ],
        // A real time written after the seed's patch is kept; the patch's '' is replaced.
        SessionStateShape::SeedPatched => vec![
            Some("continuation:claude=2026-04-21T12:07:00.000Z".into()),
            Some(format!("sdk_session_id={stamp}")),
        ],
        SessionStateShape::NoUpdatedAt => vec![
            Some(format!("continuation:claude={stamp}")),
            Some(format!("sdk_session_id={stamp}")),
        ],
    };
    assert_eq!(rows, expected, "{what}: updated_at values");
    for v in text_values(c, "SELECT updated_at AS v FROM session_state") {
        let v = v.unwrap_or_else(|| panic!("{what}: NULL updated_at"));
        Timestamp::parse(&v).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn every_inbound_generation_is_adopted_in_both_styles() {
    for g in legacy::GENERATIONS {
        for style in [Style::Patched, Style::Created] {
            adopt_and_check(FileKind::Inbound, g, style, SessionStateShape::Current);
        }
    }
}

#[test]
fn every_outbound_generation_is_adopted_in_both_styles() {
    for g in legacy::GENERATIONS {
        for style in [Style::Patched, Style::Created] {
            adopt_and_check(FileKind::Outbound, g, style, SessionStateShape::Current);
        }
    }
}

#[test]
fn every_session_state_shape_is_rebuilt_without_default() {
    for g in legacy::GENERATIONS.into_iter().filter(|g| *g >= 2) {
        for state in [
            SessionStateShape::Current,
            SessionStateShape::NoUpdatedAt,
            SessionStateShape::SeedPatched,
        ] {
            adopt_and_check(FileKind::Outbound, g, Style::Patched, state);
        }
    }
}

#[test]
fn the_fixture_really_is_legacy_before_migration() {
    // Guards the tests above against a fixture that is already current: a legacy file has no
    // migrations table, and the oldest generations lack what adoption adds.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 0, Style::Patched, 3).unwrap();
    let mut c = raw(&path);
    assert!(!tables(&mut c).iter().any(|t| t == "destinations"));
    assert!(!column_names(&mut c, "messages_in").contains(&"series_id".to_string()));
    assert!(diesel::RunQueryDsl::execute(
        diesel::sql_query("SELECT * FROM __diesel_schema_migrations"),
        &mut c
    )
    .is_err());
}

fn second_migrate_changes_nothing(path: &Path, kind: FileKind, what: &str) {
    let file = writer_file(path, kind);
    let bytes = std::fs::read(path).unwrap();
    let out = migrate::migrate(&file, t0(), sessionbus_schema::migrate::IfMissing::Fail)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!out.changed(), "{what}: second migrate changed {out:?}");
    assert!(out.applied.is_empty(), "{what}");
    match &out.before {
        FileState::Migrated { applied, pending } => {
            assert_eq!(applied, &migrate::known_versions(kind), "{what}");
            assert!(pending.is_empty(), "{what}");
        }
        other => panic!("{what}: expected migrated, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(path).unwrap(),
        bytes,
        "{what}: bytes changed on a no-op migrate"
    );
    assert!(!journal_of(path).exists(), "{what}");
}

#[test]
fn a_second_migrate_changes_nothing() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        for g in legacy::GENERATIONS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(kind.file_name());
            legacy::create(&path, kind, g, Style::Patched, 4).unwrap();
            migrate::migrate(
                &writer_file(&path, kind),
                t0(),
                sessionbus_schema::migrate::IfMissing::Fail,
            )
            .unwrap();
            second_migrate_changes_nothing(&path, kind, &format!("{kind} G{g}"));
            // And a third, with another clock: `now` only matters for rows being adopted.
            let later = Timestamp::parse("2030-01-01T00:00:00Z").unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let out = migrate::migrate(
                &writer_file(&path, kind),
                later,
                sessionbus_schema::migrate::IfMissing::Fail,
            )
            .unwrap();
            assert!(!out.changed());
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
        // A file this library created is current at once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        migrated(&path, kind);
        second_migrate_changes_nothing(&path, kind, &format!("new {kind}"));
    }
}

#[test]
fn a_new_file_is_created_in_the_current_shape_only_when_asked() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        let file = writer_file(&path, kind);
        let err =
            migrate::migrate(&file, t0(), sessionbus_schema::migrate::IfMissing::Fail).unwrap_err();
        assert!(
            matches!(err, sessionbus_schema::DbError::NotFound { .. }),
            "{err:?}"
        );
        assert!(!path.exists(), "create = false must create nothing");
        let out =
            migrate::migrate(&file, t0(), sessionbus_schema::migrate::IfMissing::Create).unwrap();
        assert!(out.created && out.before == FileState::Empty, "{out:?}");
        assert_eq!(out.applied, migrate::known_versions(kind));
        let mut c = raw(&path);
        assert_eq!(
            &migrate::read_shape(&mut c, None).unwrap(),
            migrate::expected_shape(kind).unwrap()
        );
        assert!(!header_is_wal(&path));
    }
}

#[test]
fn a_zero_byte_file_is_treated_as_new() {
    for kind in [FileKind::Inbound, FileKind::Outbound] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(kind.file_name());
        std::fs::write(&path, b"").unwrap();
        let out = migrate::migrate(
            &writer_file(&path, kind),
            t0(),
            sessionbus_schema::migrate::IfMissing::Fail,
        )
        .unwrap();
        assert!(out.created && out.before == FileState::Empty, "{out:?}");
        assert_eq!(
            recorded_versions(&mut raw(&path)),
            migrate::known_versions(kind)
        );
    }
}

#[test]
fn a_pair_of_different_generations_in_one_session_folder() {
    for (gin, gout) in [(2u8, 5u8), (8, 0), (0, 8), (4, 2)] {
        let what = format!("inbound G{gin} + outbound G{gout}");
        let dir = tempfile::tempdir().unwrap();
        let inbound = dir.path().join("inbound.db");
        let outbound = dir.path().join("outbound.db");
        legacy::create(&inbound, FileKind::Inbound, gin, Style::Patched, 5).unwrap();
        legacy::create_with(
            &outbound,
            FileKind::Outbound,
            gout,
            Style::Created,
            SessionStateShape::NoUpdatedAt,
            5,
        )
        .unwrap();
        let in_rows = kept_rows(&mut raw(&inbound));
        let out_rows = kept_rows(&mut raw(&outbound));

        // The host migrates its file; the container's file is left alone, and vice versa.
        let host = DbFile::in_session(dir.path(), FileKind::Inbound, Role::Host);
        let outbound_bytes = std::fs::read(&outbound).unwrap();
        let a = migrate::migrate(&host, t0(), sessionbus_schema::migrate::IfMissing::Fail)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            std::fs::read(&outbound).unwrap(),
            outbound_bytes,
            "{what}: migrating inbound.db touched outbound.db"
        );
        let container = DbFile::in_session(dir.path(), FileKind::Outbound, Role::Container);
        let inbound_bytes = std::fs::read(&inbound).unwrap();
        let b = migrate::migrate(
            &container,
            t0(),
            sessionbus_schema::migrate::IfMissing::Fail,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            std::fs::read(&inbound).unwrap(),
            inbound_bytes,
            "{what}: migrating outbound.db touched inbound.db"
        );

        assert!(matches!(
            a.before,
            FileState::Legacy { generation, .. } if generation == reported_generation(FileKind::Inbound, gin)
        ));
        assert!(matches!(
            b.before,
            FileState::Legacy { generation, .. } if generation == reported_generation(FileKind::Outbound, gout)
        ));
        for (path, kind, rows) in [
            (&inbound, FileKind::Inbound, &in_rows),
            (&outbound, FileKind::Outbound, &out_rows),
        ] {
            let mut c = raw(path);
            assert_eq!(recorded_versions(&mut c), migrate::known_versions(kind));
            assert_eq!(
                &migrate::read_shape(&mut c, None).unwrap(),
                migrate::expected_shape(kind).unwrap(),
                "{what}: {kind}"
            );
            for (t, (cols, r)) in rows {
                assert_eq!(&dump(&mut c, t, cols), r, "{what}: rows of {kind} {t}");
            }
        }
    }
}
