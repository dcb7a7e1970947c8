//! The mount allowlist and the validation of `additionalMounts`, against real folders, real
//! symlinks, a real FIFO and real file modes.

use sessionbus_runtime::config::AdditionalMount;
use sessionbus_runtime::mount_plan::{Access, MountKind};
use sessionbus_runtime::mount_security::{
    AllowedRoot, AllowlistError, MountAllowlist, MountValidation, MountWarning, RejectReason,
    Validator, MAX_ALLOWLIST_BYTES,
};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A canonical temp folder (so expected real paths compare equal).
fn tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = fs::canonicalize(t.path()).unwrap();
    (t, p)
}

fn mkdirs(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    p.to_path_buf()
}

fn mount(host: impl Into<PathBuf>, container: Option<&str>, readonly: bool) -> AdditionalMount {
    AdditionalMount {
        host_path: host.into(),
        container_path: container.map(Into::into),
        readonly,
        extra: Default::default(),
    }
}

fn root(path: impl Into<PathBuf>, rw: bool) -> AllowedRoot {
    AllowedRoot {
        path: path.into(),
        allow_read_write: rw,
        description: None,
    }
}

fn allow(roots: Vec<AllowedRoot>) -> MountAllowlist {
    MountAllowlist {
        allowed_roots: roots,
        blocked_patterns: Vec::new(),
    }
}

/// A validator with no `$HOME` (nothing protected by default, `~` refused).
fn no_home() -> Validator {
    Validator::with_home(None)
}

fn only_rejection(v: &MountValidation) -> &RejectReason {
    assert!(v.accepted.is_empty(), "{:?}", v.accepted);
    assert_eq!(v.rejected.len(), 1, "{:?}", v.rejected);
    &v.rejected[0].reason
}

#[test]
fn a_symlink_inside_an_allowed_root_pointing_outside_it_is_rejected() {
    let (_t, base) = tmp();
    let allowed = mkdirs(&base.join("allowed"));
    let outside = mkdirs(&base.join("outside"));
    symlink(&outside, allowed.join("escape")).unwrap();
    let list = allow(vec![root(&allowed, true)]);
    let v = no_home().validate(Some(&list), &[mount(allowed.join("escape"), None, true)]);
    assert_eq!(
        only_rejection(&v),
        &RejectReason::NotUnderAllowedRoot {
            real_path: outside.clone()
        }
    );
    // A `..` walk out of the root is the same thing.
    let dotdot = allowed.join("..").join("outside");
    let v = no_home().validate(Some(&list), &[mount(dotdot, Some("o"), true)]);
    assert_eq!(
        only_rejection(&v),
        &RejectReason::NotUnderAllowedRoot { real_path: outside }
    );
}

#[test]
fn a_symlink_to_an_ssh_like_folder_is_rejected_by_pattern_on_the_real_path() {
    let (_t, base) = tmp();
    let home = mkdirs(&base.join("home"));
    let ssh = mkdirs(&home.join(".ssh"));
    let projects = mkdirs(&home.join("projects"));
    symlink(&ssh, projects.join("keys")).unwrap();
    let list = allow(vec![root("~", true)]);
    let v = Validator::with_home(Some(home.clone()))
        .validate(Some(&list), &[mount("~/projects/keys", None, true)]);
    assert_eq!(
        only_rejection(&v),
        &RejectReason::Blocked {
            pattern: ".ssh".into(),
            path: ssh
        }
    );
    // The same folder under another name through its real path: still blocked.
    let aws = mkdirs(&home.join(".AWS"));
    symlink(&aws, projects.join("cloud")).unwrap();
    let v = Validator::with_home(Some(home))
        .validate(Some(&list), &[mount("~/projects/cloud", None, true)]);
    assert!(
        matches!(only_rejection(&v), RejectReason::Blocked { pattern, .. } if pattern == ".aws"),
        "{v:?}"
    );
}

#[test]
fn blocked_patterns_from_the_file_apply_with_the_defaults() {
    let (_t, base) = tmp();
    let data = mkdirs(&base.join("data"));
    mkdirs(&data.join("customer-exports"));
    mkdirs(&data.join("docs"));
    let mut list = allow(vec![root(&data, true)]);
    list.blocked_patterns.push("customer-exports".into());
    let v = no_home().validate(
        Some(&list),
        &[
            mount(data.join("customer-exports"), None, true),
            mount(data.join("docs"), None, true),
        ],
    );
    assert_eq!(v.accepted.len(), 1);
    assert!(matches!(
        &v.rejected[0].reason,
        RejectReason::Blocked { pattern, .. } if pattern == "customer-exports"
    ));
}

#[test]
fn the_host_root_asked_read_write_under_a_read_only_root_is_downgraded_or_protected() {
    let list = allow(vec![root("/", false)]);
    let asked = [mount("/", Some("host"), false)];
    let v = no_home().validate(Some(&list), &asked);
    assert!(v.rejected.is_empty(), "{:?}", v.rejected);
    let m = &v.accepted[0];
    assert_eq!(m.host_path(), Path::new("/"));
    assert_eq!(m.target().as_str(), "/workspace/extra/host");
    assert_eq!(m.access(), Access::ReadOnly);
    assert_eq!(m.kind(), MountKind::Dir);
    assert_eq!(
        v.warnings,
        [MountWarning::DowngradedToReadOnly {
            host_path: "/".into(),
            root: "/".into()
        }]
    );

    // With a home, `/` contains the allowlist's folder: refused whatever the access.
    let (_t, base) = tmp();
    let v = Validator::with_home(Some(base.clone())).validate(Some(&list), &asked);
    assert_eq!(
        only_rejection(&v),
        &RejectReason::Protected {
            real_path: "/".into(),
            protected: base.join(".config/sessionbus"),
        }
    );
    // And without a name of its own, `/` has no base name to appear under.
    let v = no_home().validate(Some(&list), &[mount("/", None, true)]);
    assert!(matches!(
        only_rejection(&v),
        RejectReason::InvalidContainerPath { .. }
    ));
}

#[test]
fn read_write_needs_both_the_request_and_the_root_and_the_real_path_is_mounted() {
    let (_t, base) = tmp();
    let rw = mkdirs(&base.join("rw"));
    let ro = mkdirs(&base.join("rw/archive"));
    mkdirs(&rw.join("a"));
    mkdirs(&ro.join("b"));
    fs::write(rw.join("notes.txt"), "n").unwrap();
    symlink(rw.join("a"), rw.join("link-to-a")).unwrap();
    let list = allow(vec![root(&rw, true), root(&ro, false)]);
    let v = no_home().validate(
        Some(&list),
        &[
            mount(rw.join("link-to-a"), None, false),
            mount(rw.join("a"), Some("a-again"), true),
            mount(ro.join("b"), None, false),
            mount(rw.join("notes.txt"), None, false),
        ],
    );
    assert!(v.rejected.is_empty(), "{:?}", v.rejected);
    let got: Vec<(&Path, &str, Access, MountKind)> = v
        .accepted
        .iter()
        .map(|m| (m.host_path(), m.target().as_str(), m.access(), m.kind()))
        .collect();
    let a = rw.join("a");
    let b = ro.join("b");
    let notes = rw.join("notes.txt");
    assert_eq!(
        got,
        [
            (
                a.as_path(),
                "/workspace/extra/link-to-a",
                Access::ReadWrite,
                MountKind::Dir
            ),
            (
                a.as_path(),
                "/workspace/extra/a-again",
                Access::ReadOnly,
                MountKind::Dir
            ),
            // The deepest root decides: archive/ is read-only although rw/ is not.
            (
                b.as_path(),
                "/workspace/extra/b",
                Access::ReadOnly,
                MountKind::Dir
            ),
            (
                notes.as_path(),
                "/workspace/extra/notes.txt",
                Access::ReadWrite,
                MountKind::File
            ),
        ]
    );
    assert_eq!(v.accepted[0].requested_host_path(), rw.join("link-to-a"));
    assert_eq!(v.accepted[2].allowed_root(), ro);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(matches!(
        &v.warnings[0],
        MountWarning::DowngradedToReadOnly { root, .. } if root == &ro
    ));
}

#[test]
fn roots_compare_by_components_not_by_string_prefix() {
    let (_t, base) = tmp();
    let data = mkdirs(&base.join("data"));
    let data2 = mkdirs(&base.join("data2"));
    let list = allow(vec![root(&data, false)]);
    let v = no_home().validate(
        Some(&list),
        &[mount(&data2, None, true), mount(&data, None, true)],
    );
    assert_eq!(v.accepted.len(), 1, "the root itself is allowed");
    assert_eq!(v.accepted[0].host_path(), data);
    assert_eq!(
        v.rejected[0].reason,
        RejectReason::NotUnderAllowedRoot { real_path: data2 }
    );
}

#[test]
fn relative_paths_dotdot_colon_and_nul_are_rejected() {
    let (_t, base) = tmp();
    let data = mkdirs(&base.join("data"));
    let list = allow(vec![root(&data, true)]);
    let nul_host = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/a\0b"));
    let cases: Vec<(AdditionalMount, Expect)> = vec![
        (mount("data/x", None, true), |r| {
            *r == RejectReason::NotAbsolute
        }),
        (mount("./x", Some("x"), true), |r| {
            *r == RejectReason::NotAbsolute
        }),
        (mount("~bob/x", Some("x"), true), |r| {
            *r == RejectReason::NotAbsolute
        }),
        (mount("~/x", Some("x"), true), |r| {
            *r == RejectReason::HomeUnknown
        }),
        (mount(nul_host, Some("x"), true), |r| {
            *r == RejectReason::HostPathHasNul
        }),
        (mount(&data, Some(".."), true), invalid_container_path),
        (
            mount(&data, Some("a/../../etc"), true),
            invalid_container_path,
        ),
        (mount(&data, Some("a:b"), true), invalid_container_path),
        (mount(&data, Some("a\0b"), true), invalid_container_path),
        (mount(&data, Some("/etc"), true), invalid_container_path),
        (mount(&data, Some(""), true), invalid_container_path),
        (mount(&data, Some("a//b"), true), invalid_container_path),
        (mount(data.join("missing"), None, true), |r| {
            *r == RejectReason::Missing
        }),
    ];
    for (m, expected) in cases {
        let v = no_home().validate(Some(&list), std::slice::from_ref(&m));
        let reason = only_rejection(&v);
        assert!(expected(reason), "{m:?}: {reason:?}");
        assert_eq!(v.rejected[0].mount, m);
        assert!(v.rejected[0].to_string().contains("additional mount"));
    }
}

/// What a rejection must look like.
type Expect = fn(&RejectReason) -> bool;

fn invalid_container_path(r: &RejectReason) -> bool {
    matches!(r, RejectReason::InvalidContainerPath { .. })
}

#[test]
fn without_an_allowlist_every_mount_is_rejected_with_one_warning() {
    let (_t, base) = tmp();
    let data = mkdirs(&base.join("data"));
    let mounts = [mount(&data, None, true), mount(&data, Some("b"), false)];
    let v = Validator::with_home(Some(base.clone())).validate(None, &mounts);
    let expected_at = Some(base.join(".config/sessionbus/mount-allowlist.json"));
    assert!(v.accepted.is_empty());
    assert_eq!(v.rejected.len(), 2);
    for r in &v.rejected {
        assert_eq!(
            r.reason,
            RejectReason::NoAllowlist {
                expected_at: expected_at.clone()
            }
        );
    }
    assert_eq!(
        v.warnings,
        [MountWarning::NoAllowlist {
            expected_at: expected_at.clone(),
            rejected: 2
        }]
    );
    let text = v.warnings[0].to_string();
    assert!(
        text.contains(".config/sessionbus/mount-allowlist.json"),
        "{text}"
    );
    // A custom location is named instead.
    let v = no_home()
        .allowlist_at("/etc/sessionbus/allow.json")
        .validate(None, &mounts);
    assert!(v.warnings[0]
        .to_string()
        .contains("/etc/sessionbus/allow.json"));
    // Nothing asked, nothing to warn about.
    assert_eq!(no_home().validate(None, &[]), MountValidation::default());
}

#[test]
fn duplicate_and_nested_container_paths_are_rejected() {
    let (_t, base) = tmp();
    let data = mkdirs(&base.join("data"));
    mkdirs(&data.join("x"));
    mkdirs(&base.join("other/x"));
    let list = allow(vec![root(&base, false)]);
    let v = no_home().validate(
        Some(&list),
        &[
            mount(data.join("x"), None, true),
            mount(base.join("other/x"), None, true),
            mount(&data, Some("x/inner"), true),
            mount(&data, Some("y"), true),
        ],
    );
    assert_eq!(v.accepted.len(), 2);
    assert!(matches!(
        &v.rejected[0].reason,
        RejectReason::DuplicateContainerPath { target } if target.as_str() == "/workspace/extra/x"
    ));
    assert!(matches!(
        &v.rejected[1].reason,
        RejectReason::NestedContainerPath { other, .. } if other.as_str() == "/workspace/extra/x"
    ));
}

#[test]
fn protected_paths_are_neither_mounted_nor_contained() {
    let (_t, base) = tmp();
    let data_dir = mkdirs(&base.join("srv/sessionbus-data"));
    mkdirs(&data_dir.join("v2-sessions/g"));
    let list = allow(vec![root(&base, true)]);
    let validator = no_home().protect(&data_dir);
    for host in [base.join("srv"), data_dir.join("v2-sessions/g")] {
        let v = validator.validate(Some(&list), &[mount(&host, Some("x"), true)]);
        assert_eq!(
            only_rejection(&v),
            &RejectReason::Protected {
                real_path: host.clone(),
                protected: data_dir.clone()
            }
        );
    }
    // The allowlist's own folder, given where it was loaded from.
    let cfg = mkdirs(&base.join("cfg"));
    let v = no_home()
        .allowlist_at(cfg.join("allow.json"))
        .validate(Some(&list), &[mount(&base, Some("all"), false)]);
    assert!(matches!(
        only_rejection(&v),
        RejectReason::Protected { protected, .. } if protected == &cfg
    ));
}

#[test]
fn special_files_and_unresolvable_roots() {
    let (_t, base) = tmp();
    let fifo = base.join("pipe");
    mkfifo(&fifo);
    let list = allow(vec![root(&base, true), root(base.join("gone"), true)]);
    let v = no_home().validate(Some(&list), &[mount(&fifo, None, true)]);
    assert_eq!(
        only_rejection(&v),
        &RejectReason::NotFileOrDir {
            real_path: fifo,
            kind: "FIFO"
        }
    );
    assert!(
        matches!(&v.warnings[..], [MountWarning::RootUnavailable { root, .. }] if root == &base.join("gone")),
        "{:?}",
        v.warnings
    );
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn write_allowlist(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

const GOOD: &str = r#"{"allowedRoots": [{"path": "/srv", "allowReadWrite": true}],
                      "blockedPatterns": ["x"]}"#;

#[test]
fn the_allowlist_loads_from_a_regular_file() {
    let (_t, base) = tmp();
    let path = base.join("allow.json");
    write_allowlist(&path, GOOD);
    let list = MountAllowlist::load(&path).unwrap();
    assert_eq!(list.allowed_roots, [root("/srv", true)]);
    assert_eq!(list.blocked_patterns, ["x"]);
    assert_eq!(MountAllowlist::load_optional(&path).unwrap(), Some(list));
}

#[test]
fn a_missing_allowlist_is_its_own_error_or_none() {
    let (_t, base) = tmp();
    let path = base.join("absent.json");
    assert!(matches!(
        MountAllowlist::load(&path),
        Err(AllowlistError::NotFound { path: p }) if p == path
    ));
    assert_eq!(MountAllowlist::load_optional(&path).unwrap(), None);
}

#[test]
fn a_fifo_allowlist_is_refused_without_blocking() {
    let (_t, base) = tmp();
    let path = base.join("allow.json");
    mkfifo(&path);
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(MountAllowlist::load(&p));
    });
    // No writer ever opens the FIFO: a blocking open or read would never return.
    let result = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("loading a FIFO allowlist blocked");
    assert!(started.elapsed() < Duration::from_secs(5));
    match result {
        Err(AllowlistError::NotAFile { path: p, kind }) => {
            assert_eq!(p, path);
            assert_eq!(kind, "FIFO");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_symlinked_folder_or_device_allowlist_is_refused() {
    let (_t, base) = tmp();
    let real = base.join("real.json");
    write_allowlist(&real, GOOD);
    let link = base.join("allow.json");
    symlink(&real, &link).unwrap();
    let dir = mkdirs(&base.join("dir.json"));
    for (path, want) in [
        (link.as_path(), "symbolic link"),
        (dir.as_path(), "directory"),
        (Path::new("/dev/null"), "character device"),
    ] {
        match MountAllowlist::load(path) {
            Err(e @ AllowlistError::NotAFile { kind, .. }) => {
                assert_eq!(kind, want);
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("{path:?}: {other:?}"),
        }
    }
    // A dangling symlink is refused as a symlink too, not reported missing.
    let dangling = base.join("dangling.json");
    symlink(base.join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        MountAllowlist::load(&dangling),
        Err(AllowlistError::NotAFile {
            kind: "symbolic link",
            ..
        })
    ));
}

#[test]
fn an_allowlist_others_can_change_is_refused() {
    let (_t, base) = tmp();
    let path = base.join("allow.json");
    write_allowlist(&path, GOOD);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
    assert!(matches!(
        MountAllowlist::load(&path),
        Err(AllowlistError::Insecure { reason, .. }) if reason.contains("0664")
    ));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(MountAllowlist::load(&path).is_ok());
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        assert!(matches!(
            MountAllowlist::load(&path),
            Err(AllowlistError::Insecure { reason, .. }) if reason.contains("uid 1000")
        ));
    }
}

#[test]
fn oversized_and_malformed_allowlist_files_are_refused() {
    let (_t, base) = tmp();
    let big = base.join("big.json");
    write_allowlist(&big, &" ".repeat(MAX_ALLOWLIST_BYTES as usize + 1));
    assert!(matches!(
        MountAllowlist::load(&big),
        Err(AllowlistError::TooLarge { size, limit, .. })
            if size == MAX_ALLOWLIST_BYTES + 1 && limit == MAX_ALLOWLIST_BYTES
    ));
    let bad = base.join("bad.json");
    write_allowlist(&bad, "{\n  \"allowedRoots\": [}\n");
    match MountAllowlist::load(&bad) {
        Err(e @ AllowlistError::Syntax { line: 2, .. }) => {
            assert!(e.to_string().contains("bad.json"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let missing_field = base.join("partial.json");
    write_allowlist(&missing_field, r#"{"allowedRoots": []}"#);
    assert!(matches!(
        MountAllowlist::load(&missing_field),
        Err(AllowlistError::Field { message, .. }) if message.contains("blockedPatterns")
    ));
}
