//! Mount plans: order, refusals, and the exact `bwrap` and `docker` arguments rendered.

use sessionbus_runtime::config::AdditionalMount;
use sessionbus_runtime::mount_plan::{
    Access, BwrapCommand, ContainerPath, DockerRunCommand, GroupMounts, MountPlan, MountRole,
    PlanError, SessionMounts,
};
use sessionbus_runtime::mount_security::{AllowedRoot, MountAllowlist, ValidatedMount, Validator};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

fn session() -> SessionMounts {
    SessionMounts::for_session_dir("/d/v2-sessions/g/s")
}

fn group() -> GroupMounts {
    GroupMounts::for_group(Path::new("/d"), "g", "/agents/g").unwrap()
}

fn small_plan() -> MountPlan {
    MountPlan::builder(session(), group())
        .app_src("/opt/app")
        .build()
        .unwrap()
}

fn os(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// Validates `(host, container path)` pairs (folders created under `base`, read-only root).
fn extras(base: &Path, names: &[(&str, &str)]) -> Vec<ValidatedMount> {
    let list = MountAllowlist {
        allowed_roots: vec![AllowedRoot {
            path: base.to_path_buf(),
            allow_read_write: true,
            description: None,
        }],
        blocked_patterns: Vec::new(),
    };
    let mounts: Vec<AdditionalMount> = names
        .iter()
        .map(|(host, ctr)| {
            fs::create_dir_all(base.join(host)).unwrap();
            AdditionalMount {
                host_path: base.join(host),
                container_path: Some((*ctr).into()),
                readonly: false,
                extra: Default::default(),
            }
        })
        .collect();
    let v = Validator::with_home(None).validate(Some(&list), &mounts);
    assert!(v.rejected.is_empty(), "{:?}", v.rejected);
    v.accepted
}

fn canonical_tmp() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = fs::canonicalize(t.path()).unwrap();
    (t, p)
}

#[test]
fn each_nested_mount_comes_after_the_mount_it_sits_on() {
    let (_t, base) = canonical_tmp();
    // Separate validations, child first: the plan still mounts the parent first.
    let child = extras(&base, &[("c", "data/c")]);
    let parent = extras(&base, &[("p", "data")]);
    let plan = MountPlan::builder(session(), group())
        .app_src("/opt/app")
        .shared_skills("/opt/skills")
        .extra_mounts(child)
        .extra_mounts(parent)
        .build()
        .unwrap();
    let targets: Vec<&str> = plan.mounts().iter().map(|m| m.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/workspace",
            "/workspace/inbound.db",
            "/workspace/.inbound-generation",
            "/workspace/inbox",
            "/workspace/agent",
            "/workspace/agent/container.json",
            "/home/node/.claude",
            "/home/node/.claude/skills",
            "/app/src",
            "/app/skills",
            "/workspace/extra/data",
            "/workspace/extra/data/c",
        ]
    );
    let mounts = plan.mounts();
    for (i, earlier) in mounts.iter().enumerate() {
        for later in &mounts[i + 1..] {
            assert!(
                !earlier.target.starts_with(&later.target),
                "{} before its parent {}",
                earlier.target,
                later.target
            );
        }
    }
    let extra = &mounts[10];
    assert_eq!(extra.role, MountRole::Extra);
    assert_eq!(extra.source, base.join("p"));
    assert_eq!(extra.access, Access::ReadWrite);
}

#[test]
fn two_mounts_at_one_target_are_refused() {
    let (_t, base) = canonical_tmp();
    let first = extras(&base, &[("one", "data")]);
    let second = extras(&base, &[("two", "data")]);
    let err = MountPlan::builder(session(), group())
        .extra_mounts(first)
        .extra_mounts(second)
        .build()
        .unwrap_err();
    match &err {
        PlanError::DuplicateTarget {
            target,
            first,
            second,
        } => {
            assert_eq!(target.as_str(), "/workspace/extra/data");
            let mut both = [first.clone(), second.clone()];
            both.sort();
            assert_eq!(both, [base.join("one"), base.join("two")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("/workspace/extra/data"), "{err}");
}

#[test]
fn relative_host_paths_are_refused_with_their_role() {
    let mut s = session();
    s.inbound = PathBuf::from("inbound.db");
    match MountPlan::builder(s, group()).build() {
        Err(e @ PlanError::InvalidHostPath { role, .. }) => {
            assert_eq!(role, MountRole::Inbound);
            assert!(e.to_string().contains("inbound.db"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    match MountPlan::builder(session(), group())
        .shared_skills("skills")
        .build()
    {
        Err(PlanError::InvalidHostPath { role, path, .. }) => {
            assert_eq!(role, MountRole::SharedSkills);
            assert_eq!(path, Path::new("skills"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn docker_args_for_a_small_plan() {
    let plan = small_plan();
    let m = |spec: &str| ["--mount".to_string(), format!("type=bind,{spec}")];
    let expected: Vec<String> = [
        m("source=/d/v2-sessions/g/s/container,target=/workspace"),
        m("source=/d/v2-sessions/g/s/inbound.db,target=/workspace/inbound.db,readonly"),
        m("source=/d/v2-sessions/g/s/.inbound-generation,target=/workspace/.inbound-generation,readonly"),
        m("source=/d/v2-sessions/g/s/inbox,target=/workspace/inbox,readonly"),
        m("source=/agents/g,target=/workspace/agent"),
        m("source=/d/v2-sessions/g/.sessionbus-host/container.json,target=/workspace/agent/container.json,readonly"),
        m("source=/d/v2-sessions/g/.claude-shared,target=/home/node/.claude"),
        m("source=/d/v2-sessions/g/.sessionbus-host/skills,target=/home/node/.claude/skills,readonly"),
        m("source=/opt/app,target=/app/src,readonly"),
    ]
    .concat();
    let mount_args: Vec<OsString> = expected.iter().map(OsString::from).collect();
    assert_eq!(plan.docker_args(), mount_args);

    let docker = DockerRunCommand::new(&plan, "sb-g-s", "sessionbus/agent:1", "node", 1000, 1000)
        .arg("/app/src/index.js")
        .env("ANTHROPIC_API_KEY", "secret-value")
        .env("TZ", "UTC");
    let mut want = os(&[
        "run",
        "--rm",
        "--name",
        "sb-g-s",
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "none",
        "-e",
        "ANTHROPIC_API_KEY",
        "-e",
        "TZ",
    ]);
    want.extend(mount_args.iter().cloned());
    want.extend(os(&["sessionbus/agent:1", "node", "/app/src/index.js"]));
    let args = docker.args().unwrap();
    assert_eq!(args, want);
    assert!(
        !args
            .iter()
            .any(|a| a.to_string_lossy().contains("secret-value")),
        "environment values stay out of the argument vector"
    );
    assert_eq!(
        docker.client_env(),
        [
            ("ANTHROPIC_API_KEY".into(), "secret-value".into()),
            ("TZ".into(), "UTC".into())
        ]
    );
    let shared = docker.clone().share_net(true).args().unwrap();
    assert!(!shared.iter().any(|a| a == "--network"));
}

#[test]
fn bwrap_args_for_a_small_plan() {
    let plan = small_plan();
    let mount_args = os(&[
        "--bind",
        "/d/v2-sessions/g/s/container",
        "/workspace",
        "--ro-bind",
        "/d/v2-sessions/g/s/inbound.db",
        "/workspace/inbound.db",
        "--ro-bind",
        "/d/v2-sessions/g/s/.inbound-generation",
        "/workspace/.inbound-generation",
        "--ro-bind",
        "/d/v2-sessions/g/s/inbox",
        "/workspace/inbox",
        "--bind",
        "/agents/g",
        "/workspace/agent",
        "--ro-bind",
        "/d/v2-sessions/g/.sessionbus-host/container.json",
        "/workspace/agent/container.json",
        "--bind",
        "/d/v2-sessions/g/.claude-shared",
        "/home/node/.claude",
        "--ro-bind",
        "/d/v2-sessions/g/.sessionbus-host/skills",
        "/home/node/.claude/skills",
        "--ro-bind",
        "/opt/app",
        "/app/src",
    ]);
    assert_eq!(plan.bwrap_args(), mount_args);

    let bwrap = BwrapCommand::new(&plan, "/bin/sh", 1000, 1001)
        .args(["-c", "echo hi"])
        .env("HOME", "/home/node")
        .system_mounts(["/usr", "/lib"])
        .chdir(ContainerPath::new("/workspace").unwrap());
    let mut want = os(&[
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        "1000",
        "--gid",
        "1001",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/lib",
        "/lib",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]);
    want.extend(mount_args);
    want.extend(os(&[
        "--chdir",
        "/workspace",
        "--",
        "/bin/sh",
        "-c",
        "echo hi",
    ]));
    assert_eq!(bwrap.render_args().unwrap(), want);

    let cmd = bwrap.command().unwrap();
    assert_eq!(cmd.get_program(), "/usr/bin/bwrap");
    assert_eq!(cmd.get_args().collect::<Vec<_>>(), want);
    assert_eq!(
        cmd.get_envs().collect::<Vec<_>>(),
        [(OsStr::new("HOME"), Some(OsStr::new("/home/node")))]
    );
    assert_eq!(cmd.get_current_dir(), Some(Path::new("/")));

    let net = bwrap
        .clone()
        .share_net(true)
        .disable_nested_userns(false)
        .render_args()
        .unwrap();
    assert_eq!(
        net[..4],
        os(&[
            "--unshare-all",
            "--unshare-user",
            "--share-net",
            "--die-with-parent"
        ])
    );
}

#[test]
fn commands_refuse_what_they_cannot_render_safely() {
    let plan = small_plan();
    let bwrap = |f: fn(BwrapCommand<'_>) -> BwrapCommand<'_>| {
        f(BwrapCommand::new(&plan, "/bin/sh", 1000, 1000)).render_args()
    };
    assert!(matches!(
        bwrap(|b| b.system_mount("/tmp")),
        Err(PlanError::DuplicateTarget { .. })
    ));
    assert!(matches!(
        bwrap(|b| b.system_mount("/workspace/x")),
        Err(PlanError::Shadowed { .. })
    ));
    assert!(matches!(
        bwrap(|b| b.system_mount("usr")),
        Err(PlanError::InvalidHostPath {
            role: MountRole::System,
            ..
        })
    ));
    assert!(matches!(
        bwrap(|b| b.env("A=B", "x")),
        Err(PlanError::InvalidArgument { .. })
    ));
    assert!(matches!(
        BwrapCommand::new(&plan, "", 1000, 1000).render_args(),
        Err(PlanError::InvalidArgument {
            what: "program",
            ..
        })
    ));
    // A system folder under /tmp (a program built in a checkout under /tmp) is mounted
    // after the sandbox's own /tmp, which would otherwise hide it.
    let args = bwrap(|b| b.system_mounts(["/usr", "/tmp/checkout/target/debug"])).unwrap();
    let at = |needle: &[&str]| {
        args.windows(needle.len())
            .position(|w| w.iter().zip(needle).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{needle:?} not in {args:?}"))
    };
    let tmpfs = at(&["--tmpfs", "/tmp"]);
    assert!(at(&["--ro-bind", "/usr", "/usr"]) < tmpfs);
    assert!(tmpfs < at(&["--ro-bind", "/tmp/checkout/target/debug"]));
    let docker = |name: &str, image: &str| {
        DockerRunCommand::new(&plan, name, image, "node", 1000, 1000).args()
    };
    assert!(docker("ok-name", "img").is_ok());
    for (name, image) in [("-x", "img"), ("a", "img"), ("ok-name", "--privileged")] {
        assert!(
            matches!(docker(name, image), Err(PlanError::InvalidArgument { .. })),
            "{name} {image}"
        );
    }
}

#[test]
fn verify_sources_checks_presence_kind_and_symlinks() {
    let (_t, base) = canonical_tmp();
    let data = base.join("data");
    let s = SessionMounts::for_session_dir(data.join("v2-sessions/g/s"));
    let g = GroupMounts::for_group(&data, "g", base.join("agent")).unwrap();
    let plan = || MountPlan::builder(s.clone(), g.clone()).build().unwrap();
    for dir in [
        &s.container_area,
        &s.stamps,
        &s.inbox,
        &g.agent_dir,
        &g.skill_links,
        &g.claude_shared,
    ] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(&g.container_json, "{}").unwrap();
    match plan().verify_sources() {
        Err(PlanError::Source { role, problem, .. }) => {
            assert_eq!(role, MountRole::Inbound);
            assert_eq!(problem, "does not exist");
        }
        other => panic!("{other:?}"),
    }
    fs::create_dir(&s.inbound).unwrap();
    assert!(matches!(
        plan().verify_sources(),
        Err(PlanError::Source {
            problem: "is not a regular file",
            ..
        })
    ));
    fs::remove_dir(&s.inbound).unwrap();
    symlink("/etc/passwd", &s.inbound).unwrap();
    assert!(matches!(
        plan().verify_sources(),
        Err(PlanError::Source { role: MountRole::Inbound, problem, .. }) if problem.contains("symbolic link")
    ));
    fs::remove_file(&s.inbound).unwrap();
    fs::write(&s.inbound, "").unwrap();
    plan().verify_sources().unwrap();
}

#[test]
fn group_ids_are_checked_like_the_stores_session_ids() {
    let err = GroupMounts::for_group(Path::new("/d"), "../x", "/a").unwrap_err();
    assert!(
        matches!(&err, PlanError::InvalidGroupId { group_id, .. } if group_id == "../x"),
        "{err:?}"
    );
    assert!(err.to_string().contains("../x"), "{err}");
}
