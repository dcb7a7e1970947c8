//! Change notification on real files, with writers in separate processes: a write wakes a
//! waiter long before its timeout, a file bind-mounted on its own still wakes it, a FUSE mount
//! is polled, a flood is coalesced, and a flooding session costs the host at most one report
//! per minimum interval before it loses its watch. Nothing here asserts how fast anything is:
//! the timeouts (30 s, far above any wake) only keep a broken watcher from hanging the test.

use sessionbus_runtime::container::{Container, ContainerOptions, Handled};
use sessionbus_runtime::wake::{
    FolderWatch, PollReason, Preference, Ready, Wake, WakeMode, WatchSet, WatchSetOptions,
};
use sessionbus_schema::Role;
use sessionbus_store::{Batch, NewOutbound};
use sessionbus_testkit::mount::{require_fuse, CacheMode, MountedSession};
use sessionbus_testkit::{message, TempSession};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longer than any wake takes on a loaded machine; a watcher that never wakes fails here.
const LONG: Duration = Duration::from_secs(30);

/// Runs `script` in `sh` as a separate process.
fn sh(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn wait_ok(mut child: Child) {
    let status = child.wait().expect("wait for sh");
    assert!(status.success(), "writer failed: {status}");
}

/// Kills a child process when dropped (a failing test leaves no writer behind).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_write_by_another_process_wakes_the_waiter_before_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inbound.db");
    std::fs::write(&file, b"v1").unwrap();
    let mut watch = FolderWatch::new(Role::Container, &file, Preference::Auto);
    assert_eq!(watch.mode(), &WakeMode::Inotify, "a temp dir is local");
    // Nothing happened: a short wait times out.
    assert_eq!(watch.wait(Duration::from_millis(100)), Wake::TimedOut);
    let writer = sh(&format!("sleep 0.2; printf v2 > {}", quote(&file)));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    wait_ok(writer);
    // A journal's life (created, written, deleted) is one commit: one wake.
    let journal = dir.path().join("inbound.db-journal");
    wait_ok(sh(&format!(
        "printf j > {j}; printf v3 >> {f}; rm {j}",
        j = quote(&journal),
        f = quote(&file)
    )));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    assert_eq!(watch.wait(Duration::from_millis(200)), Wake::TimedOut);
    // Other names in the folder never wake it (the heartbeat, the container's own file).
    wait_ok(sh(&format!(
        "printf x > {}; printf y > {}; touch {}",
        quote(&dir.path().join("outbound.db")),
        quote(&dir.path().join("outbound.db-journal")),
        quote(&dir.path().join(".heartbeat"))
    )));
    assert_eq!(watch.wait(Duration::from_millis(300)), Wake::TimedOut);
}

#[test]
fn a_file_that_does_not_exist_yet_wakes_the_waiter_when_it_appears_and_when_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inbound.db");
    let mut watch = FolderWatch::new(Role::Container, &file, Preference::Auto);
    assert_eq!(watch.mode(), &WakeMode::Inotify);
    wait_ok(sh(&format!("printf a > {}", quote(&file))));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    let tmp = dir.path().join("replacement");
    wait_ok(sh(&format!(
        "printf b > {t}; mv {t} {f}",
        t = quote(&tmp),
        f = quote(&file)
    )));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    // The new inode is followed: a later write to it wakes the waiter too.
    std::thread::sleep(Duration::from_millis(50));
    while watch.wait(Duration::from_millis(100)) == Wake::Changed {}
    wait_ok(sh(&format!("printf c >> {}", quote(&file))));
    assert_eq!(watch.wait(LONG), Wake::Changed);
}

#[test]
fn a_flood_of_writes_is_one_wake() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inbound.db");
    std::fs::write(&file, b"0").unwrap();
    let mut watch = FolderWatch::new(Role::Container, &file, Preference::Auto);
    assert_eq!(watch.mode(), &WakeMode::Inotify);
    // 200 open-write-close cycles, all queued before the wait starts.
    wait_ok(sh(&format!(
        "i=0; while [ $i -lt 200 ]; do printf $i > {f}; i=$((i+1)); done",
        f = quote(&file)
    )));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    assert_eq!(
        watch.wait(Duration::from_millis(300)),
        Wake::TimedOut,
        "every queued event was absorbed into the one wake"
    );
}

/// Unmounts a bind mount when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_file_bind_mounted_on_its_own_wakes_through_its_inode() {
    // The sandbox mounts inbound.db alone, read-only, into the container's folder: the host's
    // folder events happen in the host's folder, so only the file's own watch sees them.
    let host = tempfile::tempdir().unwrap();
    let container = tempfile::tempdir().unwrap();
    let file = host.path().join("inbound.db");
    std::fs::write(&file, b"v1").unwrap();
    let seen = container.path().join("inbound.db");
    std::fs::write(&seen, b"").unwrap();
    let out = Command::new("mount")
        .arg("--bind")
        .arg(&file)
        .arg(&seen)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "this test bind-mounts a file and needs root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _guard = Unmount(seen.clone());
    let mut watch = FolderWatch::new(Role::Container, &seen, Preference::Auto);
    assert_eq!(
        watch.mode(),
        &WakeMode::Inotify,
        "a bind mount keeps the filesystem type"
    );
    let writer = sh(&format!("sleep 0.2; printf v2 >> {}", quote(&file)));
    assert_eq!(watch.wait(LONG), Wake::Changed);
    wait_ok(writer);
    assert_eq!(std::fs::read(&seen).unwrap(), b"v1v2");
}

#[test]
fn a_fuse_mount_is_polled_and_says_why() {
    require_fuse();
    let s = MountedSession::new(CacheMode::DirectIo).unwrap();
    let paths = s.container_paths();
    let watch = FolderWatch::new(Role::Container, &paths.inbound, Preference::Auto);
    match watch.mode() {
        WakeMode::Polling(PollReason::RemoteFilesystem { name, .. }) => {
            assert!(name.starts_with("fuse"), "{name}")
        }
        other => panic!("expected polling for a FUSE mount, got {other}"),
    }
    let mut set = WatchSet::new(WatchSetOptions::default());
    assert!(set.watch("mounted", &paths.outbound).is_polling());
    assert_eq!(
        set.watch("local", &s.session.container_dir().join("outbound.db")),
        WakeMode::Inotify
    );
    assert_eq!(set.counts(), (1, 1));
    // The container reports it too.
    let c = Container::start(ContainerOptions {
        config_optional: true,
        ..ContainerOptions::in_folder(s.container_dir())
    })
    .unwrap();
    assert!(c.wake_mode().is_polling(), "{}", c.wake_mode());
    drop(c);
    // And polling can be asked for on a local folder.
    let local = FolderWatch::new(
        Role::Container,
        &s.session.dir().join("inbound.db"),
        Preference::Poll,
    );
    assert_eq!(local.mode(), &WakeMode::Polling(PollReason::Requested));
}

fn host_opts() -> WatchSetOptions {
    WatchSetOptions::default().with_full_pass_every(Duration::from_secs(3600))
}

/// Waits until `set` reports something other than [`Ready::Nothing`], or `LONG` passes.
fn next_ready<K: Clone + Eq + std::hash::Hash>(set: &mut WatchSet<K>) -> Ready<K> {
    let end = Instant::now() + LONG;
    loop {
        match set.wait(Duration::from_millis(200)) {
            Ready::Nothing if Instant::now() < end => continue,
            other => return other,
        }
    }
}

#[test]
fn the_host_hears_which_session_changed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut set = WatchSet::new(host_opts());
    assert_eq!(
        set.watch("a", &a.path().join("outbound.db")),
        WakeMode::Inotify
    );
    assert_eq!(
        set.watch("b", &b.path().join("outbound.db")),
        WakeMode::Inotify
    );
    assert_eq!(
        set.wait(Duration::ZERO),
        Ready::FullPass,
        "the first pass is due at once"
    );
    wait_ok(sh(&format!(
        "printf x > {}",
        quote(&b.path().join("outbound.db"))
    )));
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["b"]));
    // The container's heartbeat and other names are not news for the host.
    wait_ok(sh(&format!(
        "touch {}; printf x > {}",
        quote(&a.path().join(".heartbeat")),
        quote(&a.path().join("notes.txt"))
    )));
    assert_eq!(set.wait(Duration::from_millis(300)), Ready::Nothing);
    set.unwatch(&"b");
    wait_ok(sh(&format!(
        "printf y > {}",
        quote(&b.path().join("outbound.db"))
    )));
    assert_eq!(set.wait(Duration::from_millis(300)), Ready::Nothing);
    assert_eq!(set.len(), 1);
}

#[test]
fn a_flooding_session_is_reported_at_most_once_per_interval_then_loses_its_watch() {
    let hostile = tempfile::tempdir().unwrap();
    let quiet = tempfile::tempdir().unwrap();
    let min_interval = Duration::from_millis(100);
    let cooldown = Duration::from_secs(5);
    let mut set = WatchSet::new(
        host_opts()
            .with_min_interval(min_interval)
            .with_flood_limit(500, Duration::from_secs(1), cooldown),
    );
    set.watch("hostile", &hostile.path().join("outbound.db"));
    set.watch("quiet", &quiet.path().join("outbound.db"));
    assert_eq!(set.wait(Duration::ZERO), Ready::FullPass);
    let flood = Reap(sh(&format!(
        "while :; do printf x > {f}; done",
        f = quote(&hostile.path().join("outbound.db"))
    )));
    let start = Instant::now();
    let mut reports = 0u32;
    let mut full_passes = 0u32;
    while !set.mode(&"hostile").is_some_and(WakeMode::is_polling) {
        assert!(
            start.elapsed() < LONG,
            "the flood never took the watch away"
        );
        match set.wait(Duration::from_millis(50)) {
            Ready::Changed(keys) => {
                assert_eq!(keys, vec!["hostile"]);
                reports += 1;
            }
            Ready::Nothing => {}
            // Only when the kernel's queue overflowed before the first drain (events lost);
            // as rate-limited as a session.
            Ready::FullPass => full_passes += 1,
        }
    }
    // The burst allowance (3 by default), then one per interval.
    let bound = (start.elapsed().as_millis() / min_interval.as_millis()) as u32 + 3;
    assert!(
        reports <= bound,
        "{reports} reports, at most {bound} allowed"
    );
    assert!(
        full_passes <= bound,
        "{full_passes} full passes, at most {bound} allowed"
    );
    assert_eq!(
        set.mode(&"hostile"),
        Some(&WakeMode::Polling(PollReason::Flooded))
    );
    // While the flood goes on, the quiet session is still heard and the hostile one is not.
    wait_ok(sh(&format!(
        "printf x > {}",
        quote(&quiet.path().join("outbound.db"))
    )));
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["quiet"]));
    drop(flood);
    // After the cool-down the watch is back, and the session counts as changed once.
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["hostile"]));
    assert_eq!(set.mode(&"hostile"), Some(&WakeMode::Inotify));
    while set.wait(Duration::from_millis(300)) != Ready::Nothing {}
    wait_ok(sh(&format!(
        "printf y > {}",
        quote(&hostile.path().join("outbound.db"))
    )));
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["hostile"]));
}

#[test]
fn a_session_that_is_expensive_to_serve_waits_for_its_share() {
    let costly = tempfile::tempdir().unwrap();
    let cheap = tempfile::tempdir().unwrap();
    let mut set = WatchSet::new(host_opts().with_cost_share(4, Duration::ZERO));
    set.watch("costly", &costly.path().join("outbound.db"));
    set.watch("cheap", &cheap.path().join("outbound.db"));
    assert_eq!(set.wait(Duration::ZERO), Ready::FullPass);
    wait_ok(sh(&format!(
        "printf x > {}",
        quote(&costly.path().join("outbound.db"))
    )));
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["costly"]));
    // Serving it took 100 s (say): at a quarter of the host's time it is held for 400 s.
    set.charge(&"costly", Duration::from_secs(100));
    set.charge(&"cheap", Duration::from_micros(300));
    wait_ok(sh(&format!(
        "printf y > {}",
        quote(&costly.path().join("outbound.db"))
    )));
    assert_eq!(set.wait(Duration::from_millis(500)), Ready::Nothing);
    // Other sessions are served as usual.
    wait_ok(sh(&format!(
        "printf x > {}",
        quote(&cheap.path().join("outbound.db"))
    )));
    assert_eq!(next_ready(&mut set), Ready::Changed(vec!["cheap"]));
}

fn echo(
    _: &sessionbus_runtime::container::HandlerContext,
    b: &Batch,
) -> Result<Handled, sessionbus_runtime::error::RuntimeError> {
    Ok(Handled::completed(
        b.messages
            .iter()
            .map(|m| NewOutbound::reply_to(format!("re-{}", m.id), m, "echo"))
            .collect(),
    ))
}

#[test]
fn the_container_answers_long_before_its_poll_interval() {
    let s = TempSession::new();
    let agent = s.container_dir().join("agent");
    std::fs::create_dir_all(&agent).unwrap();
    // An idle poll interval of 10 minutes: only a wake can answer within the test's 30 s.
    std::fs::write(
        agent.join("container.json"),
        r#"{"pollIntervalIdleMs": 600000, "pollIntervalActiveMs": 600000}"#,
    )
    .unwrap();
    let opts = ContainerOptions {
        clock: s.clock.shared(),
        config_path: agent.join("container.json"),
        ..ContainerOptions::in_folder(s.dir())
    };
    let mut c = Container::start(opts).unwrap();
    assert_eq!(c.wake_mode(), &WakeMode::Inotify);
    let stop = AtomicBool::new(false);
    let host = s.host();
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| c.run(&stop, echo));
        // Past the first (immediate) poll, into the long wait.
        std::thread::sleep(Duration::from_millis(500));
        for (i, id) in ["m1", "m2"].iter().enumerate() {
            host.inbound()
                .write_messages(&[message(id, "hi").build()])
                .unwrap();
            let end = Instant::now() + LONG;
            loop {
                let due = host.due_outbound(10).unwrap();
                if due.len() > i {
                    break;
                }
                assert!(Instant::now() < end, "no reply to {id} within {LONG:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        stop.store(true, Ordering::SeqCst);
        let summary = runner.join().unwrap().unwrap();
        assert_eq!(summary.completed, 2);
    });
}
