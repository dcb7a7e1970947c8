//! Session folders whose names contain URI syntax (`#`, `?`, `%`, spaces): the reader must
//! still open the right file, read-only. Unencoded, `file:/x/a#b/inbound.db?mode=ro` opens
//! `/x/a` read-write (docs/sqlite-notes.md).

use crate::common::*;
use diesel::RunQueryDsl;
use sessionbus_schema::migrate::{self, Access};
use sessionbus_schema::{DbError, DbFile, FileKind, Role};

#[test]
fn odd_characters_in_the_folder_name_reach_the_right_file_read_only() {
    let root = tempfile::tempdir().unwrap();
    // A decoy where a truncated URI would land: `<root>/a`.
    let decoy = root.path().join("a");
    std::fs::write(&decoy, b"").unwrap();
    let session = root.path().join("a#b?mode=rw&c%41d e");
    std::fs::create_dir(&session).unwrap();

    let host = DbFile::in_session(&session, FileKind::Inbound, Role::Host);
    let out = migrate::migrate(&host, t0(), sessionbus_schema::migrate::IfMissing::Create).unwrap();
    assert!(out.created);
    assert!(session.join("inbound.db").is_file());
    assert_eq!(
        std::fs::metadata(&decoy).unwrap().len(),
        0,
        "the decoy was written"
    );

    let container = host.clone().as_role(Role::Container);
    let before = snapshot(&session);
    let root_before = snapshot(root.path());
    let mut c = container.open_reader("poll").unwrap();
    migrate::check_schema(&mut c, &container, Access::Read, "poll").unwrap();
    let e = diesel::sql_query("INSERT INTO host_cursor (name, seq) VALUES ('x', 2)")
        .execute(&mut c)
        .unwrap_err();
    let err = container.err("poll", e);
    assert!(matches!(err, DbError::ReadOnly { .. }), "{err:?}");
    drop(c);
    assert_same_folder(&before, &snapshot(&session), "reader in an odd folder");
    assert_same_folder(
        &root_before,
        &snapshot(root.path()),
        "reader's parent folder",
    );
    assert_eq!(err.at().path, session.join("inbound.db"));
}
