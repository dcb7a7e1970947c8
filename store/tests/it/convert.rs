//! Converting an older host's single-layout folder to the split layout: the container's
//! entries move as the entries they are (links and FIFOs never followed), the host's folder
//! becomes the host's alone, and a folder whose host files could be forgeries is refused as it
//! is.

use sessionbus_schema::FileKind;
use sessionbus_store::{
    convert_to_split, provision, ContainerSession, ContainerStopped, HostSession, Layout,
    SessionPaths, StoreError, SystemClock,
};
use sessionbus_testkit::{hostile, legacy, message};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// An older host's folder: both files of generation 8 side by side, `outbox/`, a heartbeat,
/// an attachment in `inbox/`, and the folder writable by everyone (as the container's).
fn single_layout_folder() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("v2-sessions/g/s");
    std::fs::create_dir_all(dir.join("outbox/r1")).unwrap();
    std::fs::create_dir_all(dir.join("inbox/m1")).unwrap();
    std::fs::write(dir.join("inbox/m1/photo.jpg"), b"jpeg").unwrap();
    std::fs::write(dir.join("outbox/r1/out.txt"), b"from the agent").unwrap();
    std::fs::write(dir.join(".heartbeat"), b"").unwrap();
    legacy::create(
        &dir.join("inbound.db"),
        FileKind::Inbound,
        8,
        legacy::Style::Created,
        3,
    )
    .unwrap();
    legacy::create(
        &dir.join("outbound.db"),
        FileKind::Outbound,
        8,
        legacy::Style::Created,
        3,
    )
    .unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    (root, dir)
}

fn stopped() -> ContainerStopped {
    ContainerStopped::i_have_stopped_the_container()
}

#[test]
fn a_single_layout_folder_becomes_split_with_every_row_and_file_kept() {
    let (_root, dir) = single_layout_folder();
    assert_eq!(SessionPaths::for_host(&dir).layout, Layout::Single);
    let done = convert_to_split(&dir, None, &SystemClock, stopped())
        .unwrap()
        .expect("converted");
    let paths = SessionPaths::for_host(&dir);
    assert_eq!(paths.layout, Layout::Split);
    assert_eq!(done.paths, paths);
    assert_eq!(done.moved, [".heartbeat", "outbound.db", "outbox"]);
    assert!(done.inbound.changed(), "inbound.db is migrated in place");
    assert_eq!(
        std::fs::read(paths.outbox.join("r1/out.txt")).unwrap(),
        b"from the agent"
    );
    assert_eq!(
        std::fs::read(paths.inbox.join("m1/photo.jpg")).unwrap(),
        b"jpeg"
    );
    assert!(paths.heartbeat.exists());
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    // Both sides work on it at once: the container migrates its own file at start.
    let host = HostSession::open(&dir);
    host.inbound()
        .write_message(&message("new", "hi").build())
        .unwrap();
    let c = ContainerSession::open(&dir).unwrap();
    c.start().unwrap();
    assert!(c
        .poll_after_start(10)
        .unwrap()
        .messages
        .iter()
        .any(|m| m.id == "new"));
    // A second conversion has nothing to do.
    assert!(convert_to_split(&dir, None, &SystemClock, stopped())
        .unwrap()
        .is_none());
}

#[test]
fn planted_links_fifos_and_journals_move_as_entries_and_are_never_followed() {
    let (root, dir) = single_layout_folder();
    // A host folder the attacker aims at.
    let target = root.path().join("host-secrets");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("key"), b"secret").unwrap();
    std::os::unix::fs::symlink(&target, dir.join(".inbound-generation")).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("planted-link")).unwrap();
    hostile::mkfifo(&dir.join("planted-fifo"));
    std::fs::write(
        dir.join("outbound.db-journal"),
        hostile::super_journal_naming(&target.join("key")),
    )
    .unwrap();
    let done = convert_to_split(&dir, None, &SystemClock, stopped())
        .unwrap()
        .unwrap();
    let paths = done.paths;
    // The stamp link is gone (the next host write makes a real folder); its target is intact.
    assert!(std::fs::symlink_metadata(dir.join(".inbound-generation")).is_err());
    assert_eq!(std::fs::read(target.join("key")).unwrap(), b"secret");
    // The rest is the container's, moved as it was.
    for name in ["planted-link", "planted-fifo", "outbound.db-journal"] {
        assert!(
            std::fs::symlink_metadata(paths.container_dir.join(name)).is_ok(),
            "{name}"
        );
        assert!(std::fs::symlink_metadata(dir.join(name)).is_err(), "{name}");
    }
    assert!(
        std::fs::symlink_metadata(paths.container_dir.join("planted-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_folder_whose_host_files_could_be_forged_is_refused_and_left_as_it_was() {
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // A journal next to inbound.db: a dead host's, or a planted one.
    let (_root, dir) = single_layout_folder();
    std::fs::write(dir.join("inbound.db-journal"), vec![1u8; 600]).unwrap();
    let before = listing(&dir);
    let err = convert_to_split(&dir, None, &SystemClock, stopped()).unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    assert_eq!(listing(&dir), before);
    // inbound.db as a link.
    let (_root, dir) = single_layout_folder();
    std::fs::rename(dir.join("inbound.db"), dir.join("real.db")).unwrap();
    std::os::unix::fs::symlink(dir.join("real.db"), dir.join("inbound.db")).unwrap();
    let err = convert_to_split(&dir, None, &SystemClock, stopped()).unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // inbound.db owned by someone else (only root can make that here).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (_root, dir) = single_layout_folder();
        std::os::unix::fs::chown(dir.join("inbound.db"), Some(65534), Some(65534)).unwrap();
        let err = convert_to_split(&dir, None, &SystemClock, stopped()).unwrap_err();
        assert!(err.to_string().contains("uid 65534"), "{err}");
    }
}

/// The owner of every entry under `root` (itself included), links not followed.
fn owners_under(root: &Path) -> Vec<(PathBuf, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push((p, m.uid(), m.gid()));
    }
    out.sort();
    out
}

/// An older host ran as root and so did its container: everything in the folder is root's.
/// Converting it for a container that runs as another user hands that user the container's
/// area and everything moved into it (outbound.db, `outbox/` and what is in it, `.heartbeat`,
/// planted links as links), so the container can write its files again; a planted hard link to
/// a host file, and what a link points to, stay the host's.
#[test]
fn converting_for_a_container_user_hands_it_everything_moved_into_its_area() {
    use std::os::unix::fs::MetadataExt;
    const NOBODY: u32 = 65534;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root to hand files to another user (CI runs as root)"
    );
    let (root, dir) = single_layout_folder();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host_file = root.path().join("host-file");
    std::fs::write(&host_file, b"the host's").unwrap();
    std::fs::hard_link(&host_file, dir.join("outbox/planted-hard-link")).unwrap();
    std::os::unix::fs::symlink(&host_file, dir.join("planted-link")).unwrap();
    let owner = sessionbus_store::Ownership {
        uid: NOBODY,
        gid: NOBODY,
    };
    let done = convert_to_split(&dir, Some(owner), &SystemClock, stopped())
        .unwrap()
        .expect("converted");
    let area = done.paths.container_dir.clone();
    let owners = owners_under(&area);
    for (path, uid, gid) in &owners {
        if path.ends_with("outbox/planted-hard-link") {
            assert_eq!((*uid, *gid), (0, 0), "{}", path.display());
        } else {
            assert_eq!((*uid, *gid), (NOBODY, NOBODY), "{}", path.display());
        }
    }
    for name in [
        "",
        "outbound.db",
        ".heartbeat",
        "outbox",
        "outbox/r1/out.txt",
        "planted-link",
    ] {
        let p = area.join(name);
        assert!(
            owners.iter().any(|(q, _, _)| *q == p),
            "{} was not moved into the area",
            p.display()
        );
    }
    // What the links name stays the host's; the host's folder and files stay the host's.
    let host = std::fs::metadata(&host_file).unwrap();
    assert_eq!((host.uid(), host.gid()), (0, 0));
    for p in [&dir, &done.paths.inbound, &done.paths.inbox] {
        assert_eq!(
            std::fs::symlink_metadata(p).unwrap().uid(),
            0,
            "{}",
            p.display()
        );
    }
    // The container, as that user, starts on the converted folder and writes outbound.db.
    let out = {
        use std::os::unix::process::CommandExt;
        sessionbus_testkit::child::command()
            .arg("container-start")
            .arg(&dir)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHILD-OK"),
        "child: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_split_folder_is_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(root.path().join("s"));
    provision(&paths, None, &SystemClock).unwrap();
    assert!(convert_to_split(&paths.dir, None, &SystemClock, stopped())
        .unwrap()
        .is_none());
}
