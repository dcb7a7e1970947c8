//! `sync_skills` against real folders and symlinks.

use sessionbus_runtime::config::Skills;
use sessionbus_runtime::skills::{available_skills, sync_skills, SkillSyncReport, SkillsError};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A host layout: the shared skills folder with some skills, and a group's skills folder path
/// (not created).
struct Layout {
    _tmp: tempfile::TempDir,
    available: PathBuf,
    skills_dir: PathBuf,
}

const TARGET_ROOT: &str = "/app/skills";

fn layout(skills: &[&str]) -> Layout {
    let tmp = tempfile::tempdir().unwrap();
    let available = tmp.path().join("container-skills");
    fs::create_dir(&available).unwrap();
    for s in skills {
        fs::create_dir(available.join(s)).unwrap();
        fs::write(available.join(s).join("SKILL.md"), b"# skill").unwrap();
    }
    let skills_dir = tmp
        .path()
        .join("group")
        .join(".sessionbus-host")
        .join("skills");
    Layout {
        _tmp: tmp,
        available,
        skills_dir,
    }
}

fn named(names: &[&str]) -> Skills {
    Skills::Named(names.iter().map(|s| s.to_string()).collect())
}

fn sync(l: &Layout, sel: &Skills) -> Result<SkillSyncReport, SkillsError> {
    sync_skills(&l.skills_dir, &l.available, Path::new(TARGET_ROOT), sel)
}

fn v(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The folder's entries: name -> Some(link target) for symlinks, None for anything else.
fn entries(dir: &Path) -> Vec<(String, Option<PathBuf>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let target = if e.file_type().unwrap().is_symlink() {
                Some(fs::read_link(e.path()).unwrap())
            } else {
                None
            };
            (name, target)
        })
        .collect();
    out.sort();
    out
}

fn link(name: &str) -> (String, Option<PathBuf>) {
    (name.into(), Some(Path::new(TARGET_ROOT).join(name)))
}

#[test]
fn all_links_every_skill_folder_and_creates_the_skills_dir() {
    let l = layout(&["pdf", "browser"]);
    // Not skills: a plain file, a hidden folder, a dangling symlink.
    fs::write(l.available.join("README.md"), b"").unwrap();
    fs::create_dir(l.available.join(".git")).unwrap();
    symlink("/nowhere", l.available.join("dangling")).unwrap();
    // A symlink to a folder is a skill.
    let elsewhere = l.available.parent().unwrap().join("extra-skill-src");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, l.available.join("linked")).unwrap();

    let r = sync(&l, &Skills::All).unwrap();
    assert_eq!(r.created, v(&["browser", "linked", "pdf"]));
    assert!(r.removed.is_empty() && r.kept.is_empty() && r.unknown.is_empty());
    assert_eq!(
        entries(&l.skills_dir),
        vec![link("browser"), link("linked"), link("pdf")]
    );
}

#[test]
fn a_second_sync_keeps_everything() {
    let l = layout(&["pdf", "browser"]);
    sync(&l, &Skills::All).unwrap();
    let r = sync(&l, &Skills::All).unwrap();
    assert_eq!(r.kept, v(&["browser", "pdf"]));
    assert!(r.created.is_empty() && r.removed.is_empty() && r.repointed.is_empty());
}

#[test]
fn named_selection_links_only_those_and_reports_unknown_names() {
    let l = layout(&["pdf", "browser", "slides"]);
    let r = sync(&l, &named(&["slides", "nope", "pdf", "also-nope"])).unwrap();
    assert_eq!(r.created, v(&["pdf", "slides"]));
    assert_eq!(r.unknown, v(&["also-nope", "nope"]));
    assert_eq!(entries(&l.skills_dir), vec![link("pdf"), link("slides")]);
}

#[test]
fn links_no_longer_selected_are_removed() {
    let l = layout(&["pdf", "browser", "slides"]);
    sync(&l, &Skills::All).unwrap();
    // A stray dangling link and a hidden link are not selected either.
    symlink("/gone/old", l.skills_dir.join("old")).unwrap();
    symlink("/app/skills/x", l.skills_dir.join(".x")).unwrap();
    let r = sync(&l, &named(&["browser"])).unwrap();
    assert_eq!(r.kept, v(&["browser"]));
    assert_eq!(r.removed, v(&[".x", "old", "pdf", "slides"]));
    assert_eq!(entries(&l.skills_dir), vec![link("browser")]);
    // The shared skills themselves are untouched.
    assert!(l.available.join("pdf").join("SKILL.md").is_file());
}

#[test]
fn a_skill_that_disappeared_loses_its_link_under_all() {
    let l = layout(&["pdf", "browser"]);
    sync(&l, &Skills::All).unwrap();
    fs::remove_dir_all(l.available.join("pdf")).unwrap();
    let r = sync(&l, &Skills::All).unwrap();
    assert_eq!(r.removed, v(&["pdf"]));
    assert_eq!(entries(&l.skills_dir), vec![link("browser")]);
}

#[test]
fn a_link_pointing_elsewhere_is_repointed() {
    let l = layout(&["pdf", "browser"]);
    fs::create_dir_all(&l.skills_dir).unwrap();
    symlink("/old/skills/pdf", l.skills_dir.join("pdf")).unwrap();
    symlink("/app/skills/browser", l.skills_dir.join("browser")).unwrap();
    let r = sync(&l, &Skills::All).unwrap();
    assert_eq!(r.repointed, v(&["pdf"]));
    assert_eq!(r.kept, v(&["browser"]));
    assert!(r.created.is_empty());
    assert_eq!(entries(&l.skills_dir), vec![link("browser"), link("pdf")]);
}

#[test]
fn non_symlinks_are_never_touched() {
    let l = layout(&["pdf", "browser", "slides"]);
    fs::create_dir_all(l.skills_dir.join("pdf")).unwrap();
    fs::write(l.skills_dir.join("pdf").join("mine.md"), b"local").unwrap();
    fs::write(l.skills_dir.join("browser"), b"a file").unwrap();
    fs::write(l.skills_dir.join("notes.txt"), b"unrelated").unwrap();
    let r = sync(&l, &Skills::All).unwrap();
    assert_eq!(r.blocked, v(&["browser", "pdf"]));
    assert_eq!(r.created, v(&["slides"]));
    assert!(r.removed.is_empty());
    assert_eq!(
        fs::read(l.skills_dir.join("pdf").join("mine.md")).unwrap(),
        b"local"
    );
    assert_eq!(fs::read(l.skills_dir.join("browser")).unwrap(), b"a file");
    assert_eq!(
        fs::read(l.skills_dir.join("notes.txt")).unwrap(),
        b"unrelated"
    );
    // Deselecting does not remove them either, and then they are not reported.
    let r = sync(&l, &named(&["slides"])).unwrap();
    assert!(r.blocked.is_empty() && r.removed.is_empty());
    assert!(l.skills_dir.join("pdf").join("mine.md").is_file());
    assert!(l.skills_dir.join("browser").is_file());
}

#[test]
fn invalid_names_are_refused_before_anything_changes() {
    let l = layout(&["pdf", "browser"]);
    sync(&l, &Skills::All).unwrap();
    let before = entries(&l.skills_dir);
    for bad in ["../etc", "a/b", "..", ".", "", "x\0y", "tab\there", "a..b"] {
        match sync(&l, &named(&["pdf", bad])) {
            Err(SkillsError::InvalidName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
        assert_eq!(entries(&l.skills_dir), before, "{bad:?} changed the folder");
    }
}

#[test]
fn a_missing_available_root_is_an_error_and_strips_nothing() {
    let l = layout(&["pdf"]);
    sync(&l, &Skills::All).unwrap();
    fs::remove_dir_all(&l.available).unwrap();
    let err = sync(&l, &Skills::All).unwrap_err();
    assert!(matches!(err, SkillsError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&l.available.display().to_string()),
        "{err}"
    );
    assert_eq!(entries(&l.skills_dir), vec![link("pdf")]);
}

#[test]
fn a_skills_dir_that_is_a_file_is_an_error_naming_it() {
    let l = layout(&["pdf"]);
    fs::create_dir_all(l.skills_dir.parent().unwrap()).unwrap();
    fs::write(&l.skills_dir, b"not a folder").unwrap();
    let err = sync(&l, &Skills::All).unwrap_err();
    assert!(
        err.to_string()
            .contains(&l.skills_dir.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(&l.skills_dir).unwrap(), b"not a folder");
}

#[test]
fn an_empty_selection_removes_every_link() {
    let l = layout(&["pdf", "browser"]);
    sync(&l, &Skills::All).unwrap();
    let r = sync(&l, &named(&[])).unwrap();
    assert_eq!(r.removed, v(&["browser", "pdf"]));
    assert!(entries(&l.skills_dir).is_empty());
}

#[test]
fn available_skills_lists_only_valid_folders() {
    let l = layout(&["b", "a"]);
    fs::write(l.available.join("file"), b"").unwrap();
    fs::create_dir(l.available.join(".hidden")).unwrap();
    let got: Vec<String> = available_skills(&l.available)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(got, v(&["a", "b"]));
}

/// A link in place of the links folder (planted, or a mistake) is refused before anything is
/// removed or created: the host's symlinks elsewhere stay as they are.
#[test]
fn a_links_folder_that_is_a_link_is_refused_and_nothing_changes() {
    let l = layout(&["pdf"]);
    let elsewhere = l.available.parent().unwrap().join("host-links");
    fs::create_dir(&elsewhere).unwrap();
    symlink("/somewhere/important", elsewhere.join("keep-me")).unwrap();
    fs::create_dir_all(l.skills_dir.parent().unwrap()).unwrap();
    symlink(&elsewhere, &l.skills_dir).unwrap();
    let err = sync(&l, &Skills::All).unwrap_err();
    assert!(matches!(err, SkillsError::NotAFolder { .. }), "{err}");
    assert_eq!(
        entries(&elsewhere),
        vec![link_to("keep-me", "/somewhere/important")]
    );
}

fn link_to(name: &str, target: &str) -> (String, Option<PathBuf>) {
    (name.to_string(), Some(PathBuf::from(target)))
}
