use sessionbus_schema::{migrate, DbFile, FileKind, Role, Timestamp};
use sessionbus_testkit::legacy;

#[test]
fn smoke_every_generation() {
    for g in legacy::GENERATIONS {
        for kind in [FileKind::Inbound, FileKind::Outbound] {
            for style in [legacy::Style::Patched, legacy::Style::Created] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(kind.file_name());
                legacy::create(&path, kind, g, style, 5).unwrap();
                let f = DbFile::new(&path, kind, Role::Operator);
                let out = migrate::migrate(&f, Timestamp::parse("2026-01-01").unwrap(), false)
                    .unwrap_or_else(|e| panic!("{kind} G{g} {style:?}: {e}"));
                println!("{kind} G{g}: {:?}", out.before);
                let again =
                    migrate::migrate(&f, Timestamp::parse("2026-01-01").unwrap(), false).unwrap();
                assert!(!again.changed());
            }
        }
    }
}
