//! A compromised container plants links in the session folder it owns; the host's inbox
//! writes and outbox reads must never leave the session folder.

use sessionbus_schema::DbError;
use sessionbus_store::StoreError;
use sessionbus_testkit::TempSession;
use std::os::unix::fs::symlink;

fn is_unsafe(e: &StoreError) -> bool {
    matches!(e.as_db(), Some(DbError::UnsafePath { .. }))
}

#[test]
fn inbox_write_and_outbox_read_work_normally() {
    let s = TempSession::new();
    let h = s.host();
    let p = h
        .write_inbox_attachment("m1", "photo.jpg", b"jpeg")
        .unwrap();
    assert_eq!(p, s.paths.inbox.join("m1/photo.jpg"));
    assert_eq!(std::fs::read(&p).unwrap(), b"jpeg");
    h.write_inbox_attachment("m1", "report..v2.pdf", b"pdf")
        .unwrap();
    std::fs::create_dir_all(s.paths.outbox.join("r1")).unwrap();
    std::fs::write(s.paths.outbox.join("r1/b.txt"), b"B").unwrap();
    std::fs::write(s.paths.outbox.join("r1/a.txt"), b"A").unwrap();
    let got = h.read_outbox_attachments("r1").unwrap();
    let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["a.txt", "b.txt"]);
    assert_eq!(got[0].bytes, b"A");
    assert!(h.read_outbox_attachments("none").unwrap().is_empty());
}

#[test]
fn inbox_refuses_existing_files_and_never_overwrites() {
    let s = TempSession::new();
    let h = s.host();
    h.write_inbox_attachment("m1", "f", b"first").unwrap();
    let err = h.write_inbox_attachment("m1", "f", b"second").unwrap_err();
    assert!(is_unsafe(&err), "{err}");
    assert_eq!(std::fs::read(s.paths.inbox.join("m1/f")).unwrap(), b"first");
}

#[test]
fn inbox_refuses_names_that_escape_the_message_folder() {
    let s = TempSession::new();
    let h = s.host();
    for (id, name) in [
        ("m1", "../x"),
        ("m1", "a/b"),
        ("m1", ".."),
        ("m1", ""),
        ("..", "x"),
        ("m/1", "x"),
        ("m1", "a\0b"),
    ] {
        let err = h.write_inbox_attachment(id, name, b"x").unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidId { .. }),
            "{id:?}/{name:?}: {err}"
        );
    }
    assert!(!s.paths.inbox.join("x").exists() && !s.paths.dir.join("x").exists());
}

#[test]
fn planted_inbox_links_cannot_redirect_host_writes() {
    let s = TempSession::new();
    let outside = tempfile::tempdir().unwrap();
    let h = s.host();
    // 1. inbox/ itself replaced by a link.
    std::fs::remove_dir(&s.paths.inbox).unwrap();
    symlink(outside.path(), &s.paths.inbox).unwrap();
    assert!(is_unsafe(
        &h.write_inbox_attachment("m1", "f", b"x").unwrap_err()
    ));
    std::fs::remove_file(&s.paths.inbox).unwrap();
    std::fs::create_dir(&s.paths.inbox).unwrap();
    // 2. inbox/<id> is a link.
    symlink(outside.path(), s.paths.inbox.join("m2")).unwrap();
    assert!(is_unsafe(
        &h.write_inbox_attachment("m2", "f", b"x").unwrap_err()
    ));
    // 3. the file name is a (dangling) link to a file outside.
    std::fs::create_dir(s.paths.inbox.join("m3")).unwrap();
    let victim = outside.path().join("victim");
    symlink(&victim, s.paths.inbox.join("m3/f")).unwrap();
    assert!(is_unsafe(
        &h.write_inbox_attachment("m3", "f", b"x").unwrap_err()
    ));
    assert!(
        !victim.exists(),
        "nothing was created outside the session folder"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn planted_outbox_links_cannot_make_the_host_read_outside() {
    let s = TempSession::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"host secret").unwrap();
    let h = s.host();
    // 1. outbox/<id>/f links to a file outside.
    std::fs::create_dir(s.paths.outbox.join("r1")).unwrap();
    symlink(outside.path().join("secret"), s.paths.outbox.join("r1/f")).unwrap();
    assert!(is_unsafe(&h.read_outbox_attachments("r1").unwrap_err()));
    // 2. outbox/<id> links to a folder outside.
    symlink(outside.path(), s.paths.outbox.join("r2")).unwrap();
    assert!(is_unsafe(&h.read_outbox_attachments("r2").unwrap_err()));
    // 3. outbox/ itself is a link.
    std::fs::remove_dir_all(&s.paths.outbox).unwrap();
    symlink(outside.path(), &s.paths.outbox).unwrap();
    assert!(is_unsafe(&h.read_outbox_attachments("secret").unwrap_err()));
}

#[test]
fn outbox_refuses_sub_folders_and_special_files() {
    let s = TempSession::new();
    let h = s.host();
    std::fs::create_dir_all(s.paths.outbox.join("r1/sub")).unwrap();
    assert!(is_unsafe(&h.read_outbox_attachments("r1").unwrap_err()));
    std::fs::create_dir_all(s.paths.outbox.join("r2")).unwrap();
    let fifo = std::ffi::CString::new(s.paths.outbox.join("r2/pipe").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let err = h.read_outbox_attachments("r2").unwrap_err();
    assert!(is_unsafe(&err), "a FIFO must not block or be read: {err}");
}
