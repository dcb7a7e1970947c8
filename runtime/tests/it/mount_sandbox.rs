//! A real bubblewrap sandbox from a [`MountPlan`]: the container user can write its own area
//! and nothing the host owns, and the host's session folder is unchanged afterwards.
//!
//! Needs `/usr/bin/bwrap` (fails, never skips, without it) and root (to give the container's
//! folders to uid 1000, as the host does). bubblewrap itself runs as uid 1000 through a user
//! namespace: started as root with `--uid` it refuses.

use sessionbus_runtime::mount_plan::{
    BwrapCommand, ContainerPath, GroupMounts, MountPlan, SessionMounts, CONTAINER_AREA_DIR,
    DEFAULT_BWRAP,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

const UID: u32 = 1000;
const GID: u32 = 1000;

fn require_bwrap_and_root() {
    assert!(
        Path::new(DEFAULT_BWRAP).exists(),
        "{DEFAULT_BWRAP} is missing: apt-get install bubblewrap"
    );
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test gives folders to uid {UID} and must run as root"
    );
}

fn dir(path: &Path, owner: Option<u32>) {
    dir_mode(path, owner, 0o755);
}

fn dir_mode(path: &Path, owner: Option<u32>, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    if let Some(uid) = owner {
        chown(path, Some(uid), Some(GID)).unwrap();
    }
}

fn file(path: &Path, text: &str, owner: Option<u32>) {
    file_mode(path, text, owner, 0o644);
}

fn file_mode(path: &Path, text: &str, owner: Option<u32>, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    if let Some(uid) = owner {
        chown(path, Some(uid), Some(GID)).unwrap();
    }
}

/// Name, size, mode, owner and mtime of each entry of `dir` (not recursive).
type Snapshot = BTreeMap<String, (u64, u32, u32, SystemTime)>;

fn snapshot(dir: &Path) -> Snapshot {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.mode(), m.uid(), m.modified().unwrap()),
            )
        })
        .collect()
}

/// The session folder as the host owns it: its own mode, owner and mtime (no entry added or
/// removed), and each entry's; only the container area's mtime may move, as the container
/// writes in it.
fn host_view(session_dir: &Path) -> (u32, u32, SystemTime, Snapshot) {
    let m = fs::metadata(session_dir).unwrap();
    let mut entries = snapshot(session_dir);
    if let Some(area) = entries.get_mut(CONTAINER_AREA_DIR) {
        area.3 = SystemTime::UNIX_EPOCH;
    }
    (m.mode(), m.uid(), m.modified().unwrap(), entries)
}

/// Each check prints `<name>=yes` or `<name>=no`.
const SCRIPT: &str = r#"
check() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=yes"; else echo "$name=no"; fi; }
check uid_1000 test "$(id -u)" = 1000
check only_group_1000 test "$(id -G)" = 1000
check inbound_read grep -q host-data /workspace/inbound.db
check inbound_write sh -c 'echo x >> /workspace/inbound.db'
check inbound_remove rm -f /workspace/inbound.db
check outbound_write sh -c 'echo reply >> /workspace/outbound.db'
check workspace_create sh -c 'echo new > /workspace/x'
check inbox_read grep -q attachment /workspace/inbox/m1.txt
check inbox_write touch /workspace/inbox/planted
check stamps_write touch /workspace/.inbound-generation/9.9
check container_json_read grep -q provider /workspace/agent/container.json
check container_json_write sh -c 'echo {} > /workspace/agent/container.json'
check agent_write sh -c 'echo note > /workspace/agent/notes.md'
check claude_write touch /home/node/.claude/settings.json
check skills_write touch /home/node/.claude/skills/planted
check app_src_write touch /app/src/planted
check app_src_read test -f /app/src/index.js
check host_folders_visible test -e "$HOST_BASE"
check host_root_owned_dir_visible test -e /root
"#;

#[test]
fn a_bwrap_sandbox_from_the_plan_writes_only_the_containers_side() {
    require_bwrap_and_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    // tempfile makes 0700 folders: uid 1000 must traverse every ancestor.
    dir(&base, None);

    let data = base.join("data");
    let group_dir = data.join("v2-sessions/g");
    let session_dir = group_dir.join("s");
    let session = SessionMounts::for_session_dir(&session_dir);
    let group = GroupMounts::for_group(&data, "g", base.join("agents/g")).unwrap();
    let app_src = base.join("app-src");

    for d in [&data, &data.join("v2-sessions"), &group_dir, &session_dir] {
        dir(d, None);
    }
    // What is mounted read-only is world-writable on the host: only the mount can stop the
    // container's writes.
    file_mode(&session.inbound, "host-data", None, 0o666);
    dir_mode(&session.stamps, None, 0o777);
    file(&session.stamps.join("1.1000"), "", None);
    dir_mode(&session.inbox, None, 0o777);
    file_mode(&session.inbox.join("m1.txt"), "attachment", None, 0o666);
    dir(&session.container_area, Some(UID));
    file(
        &session.container_area.join("outbound.db"),
        "out",
        Some(UID),
    );
    dir(group.container_json.parent().unwrap(), None);
    file_mode(
        &group.container_json,
        r#"{"provider": "claude"}"#,
        None,
        0o666,
    );
    dir_mode(&group.skill_links, None, 0o777);
    dir(&group.claude_shared, Some(UID));
    dir(base.join("agents").as_path(), None);
    dir(&group.agent_dir, Some(UID));
    dir_mode(&app_src, None, 0o777);
    file(&app_src.join("index.js"), "//", None);

    let plan = MountPlan::builder(session.clone(), group.clone())
        .app_src(&app_src)
        .build()
        .unwrap();
    plan.verify_sources().unwrap();
    let before = host_view(&session_dir);
    let inbox_before = snapshot(&session.inbox);
    let stamps_before = snapshot(&session.stamps);

    let system: Vec<&str> = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"]
        .into_iter()
        .filter(|d| Path::new(d).exists())
        .collect();
    let mut cmd = BwrapCommand::new(&plan, "/bin/sh", UID, GID)
        .args(["-c", SCRIPT])
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/home/node")
        .env("HOST_BASE", &base)
        .system_mounts(system)
        .chdir(ContainerPath::new("/workspace").unwrap())
        .command()
        .unwrap();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bwrap");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sandbox did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "bwrap failed: {status}\n{out}\n{err}");

    let results: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let expect = [
        ("uid_1000", "yes"),
        ("only_group_1000", "yes"),
        ("inbound_read", "yes"),
        ("inbound_write", "no"),
        ("inbound_remove", "no"),
        ("outbound_write", "yes"),
        ("workspace_create", "yes"),
        ("inbox_read", "yes"),
        ("inbox_write", "no"),
        ("stamps_write", "no"),
        ("container_json_read", "yes"),
        ("container_json_write", "no"),
        ("agent_write", "yes"),
        ("claude_write", "yes"),
        ("skills_write", "no"),
        ("app_src_write", "no"),
        ("app_src_read", "yes"),
        ("host_folders_visible", "no"),
        ("host_root_owned_dir_visible", "no"),
    ];
    for (name, want) in expect {
        assert_eq!(
            results.get(name).copied(),
            Some(want),
            "{name}\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    assert_eq!(results.len(), expect.len(), "{out}");

    // On the host: the host's files are as they were, the container's writes landed in its
    // own folders.
    assert_eq!(
        host_view(&session_dir),
        before,
        "the session folder changed"
    );
    assert_eq!(snapshot(&session.inbox), inbox_before);
    assert_eq!(snapshot(&session.stamps), stamps_before);
    assert_eq!(fs::read_to_string(&session.inbound).unwrap(), "host-data");
    assert_eq!(
        fs::read_to_string(&group.container_json).unwrap(),
        r#"{"provider": "claude"}"#
    );
    assert!(fs::read_dir(&group.skill_links).unwrap().next().is_none());
    assert!(!app_src.join("planted").exists());
    let area = &session.container_area;
    assert_eq!(
        fs::read_to_string(area.join("outbound.db")).unwrap(),
        "outreply\n"
    );
    let x = area.join("x");
    assert_eq!(fs::read_to_string(&x).unwrap(), "new\n");
    assert_eq!(fs::metadata(&x).unwrap().uid(), UID);
    assert_eq!(
        fs::read_to_string(group.agent_dir.join("notes.md")).unwrap(),
        "note\n"
    );
    assert!(group.claude_shared.join("settings.json").exists());
    // The nested mount points bubblewrap made are empty placeholders in the container's own
    // folders, never the host's files.
    assert_eq!(fs::metadata(area.join("inbound.db")).unwrap().len(), 0);
    for placeholder in [area.join("inbox"), area.join(".inbound-generation")] {
        assert!(
            fs::read_dir(&placeholder).unwrap().next().is_none(),
            "{placeholder:?}"
        );
    }
    assert_eq!(
        fs::metadata(group.agent_dir.join("container.json"))
            .unwrap()
            .len(),
        0
    );
}
