//! Per-group skill selection.
//!
//! The shared skills folder is mounted read-only in the container (at `/app/skills`). Per group
//! the host keeps a folder holding exactly one symlink `<name> -> <link_target_root>/<name>`
//! per selected skill: `<group>/.sessionbus-host/skills/` (see [`crate::mount_plan`]), a
//! host-owned folder mounted read-only at `/home/node/.claude/skills` on top of the group's
//! writable `~/.claude`, so the container can neither change the links nor plant a link in
//! place of the folder. [`sync_skills`] brings that folder to the selection:
//!
//! - a skill is a folder (or a symlink to one) in the host's copy of the shared skills folder
//!   whose name is a valid skill name ([`validate_skill_name`]; hidden names are not skills);
//!   [`Skills::All`] selects every skill present at sync time;
//! - links are created for selected skills, re-pointed when they point elsewhere, and removed
//!   when not selected (any symlink in the folder that is not a selected skill's link goes,
//!   dangling or not);
//! - anything that is not a symlink is never touched; one that has a selected skill's name
//!   blocks that skill's link and is reported in [`SkillSyncReport::blocked`];
//! - selected names that are not present are reported in [`SkillSyncReport::unknown`];
//! - a selected name that is not a valid skill name (`/`, `..`, NUL, control characters, ...)
//!   is refused with [`SkillsError::InvalidName`] before anything is changed.
//!
//! Links point to `link_target_root` (the path inside the container), which need not exist on
//! the host; `available_root` is where the host lists what exists.

use crate::config::Skills;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The longest skill name accepted, in bytes (a common file-name limit).
pub const SKILL_NAME_MAX_BYTES: usize = 255;

/// Checks that `name` can be a skill's folder name and a link's name: not empty, at most
/// [`SKILL_NAME_MAX_BYTES`] bytes, not starting with `.` (which also excludes `.` and `..`), and
/// without `/`, `\`, `..`, NUL or other control characters. Returns the broken rule.
pub fn validate_skill_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > SKILL_NAME_MAX_BYTES {
        return Err("is longer than 255 bytes");
    }
    if name.starts_with('.') {
        return Err("starts with '.'");
    }
    if name.contains("..") {
        return Err("contains '..'");
    }
    if name.contains(['/', '\\']) {
        return Err("contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return Err("contains NUL or a control character");
    }
    Ok(())
}

/// What [`sync_skills`] did. Every list is sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkillSyncReport {
    /// Links created.
    pub created: Vec<String>,
    /// Links that pointed elsewhere and now point to the skill.
    pub repointed: Vec<String>,
    /// Links removed because their skill is not selected (or not present).
    pub removed: Vec<String>,
    /// Links already right, left as they were.
    pub kept: Vec<String>,
    /// Selected names with no skill folder in `available_root`; no link exists for them.
    pub unknown: Vec<String>,
    /// Selected skills whose name is taken by something that is not a symlink (a file or a
    /// folder); it was left alone, so the skill has no link.
    pub blocked: Vec<String>,
}

/// A skill sync that could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillsError {
    /// The links folder is a link or a file, not a real folder: nothing was changed.
    #[error("{path}: the skill-links folder is a link or a file, not a folder; nothing changed")]
    NotAFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A selected name is not a valid skill name; nothing was changed.
    #[error("skill name {name:?} is refused: it {reason}")]
    InvalidName {
        /// The name as selected.
        name: String,
        /// The broken rule (see [`validate_skill_name`]).
        reason: &'static str,
    },
    /// A filesystem call failed.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What was being done, e.g. `list skills in`, `create link`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SkillsError + 'a {
    move |source| SkillsError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The skills present in `available_root`: sub-folders (or symlinks to folders) with a valid
/// skill name, sorted. A missing `available_root` is an error, so that a misconfigured host
/// does not strip every group of its links.
pub fn available_skills(available_root: &Path) -> Result<BTreeSet<String>, SkillsError> {
    let op = "list skills in";
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(available_root).map_err(io(available_root, op))? {
        let entry = entry.map_err(io(available_root, op))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_skill_name(&name).is_err() {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                found.insert(name);
            }
            Ok(_) => {}
            // A dangling symlink is not a skill.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, "inspect skill")(e)),
        }
    }
    Ok(found)
}

/// Brings `skills_dir` (a group's `.claude-shared/skills`, created if missing) to exactly one
/// symlink `<name> -> <link_target_root>/<name>` per selected skill present in
/// `available_root`. See the module documentation for the rules.
pub fn sync_skills(
    skills_dir: &Path,
    available_root: &Path,
    link_target_root: &Path,
    selection: &Skills,
) -> Result<SkillSyncReport, SkillsError> {
    if let Skills::Named(names) = selection {
        for name in names {
            validate_skill_name(name).map_err(|reason| SkillsError::InvalidName {
                name: name.clone(),
                reason,
            })?;
        }
    }
    let available = available_skills(available_root)?;
    let mut report = SkillSyncReport::default();
    let wanted: BTreeSet<String> = match selection {
        Skills::All => available,
        Skills::Named(names) => {
            let mut wanted = BTreeSet::new();
            for name in names {
                if available.contains(name) {
                    wanted.insert(name.clone());
                } else {
                    report.unknown.push(name.clone());
                }
            }
            wanted
        }
    };

    // The links folder must be a real folder: a link in its place would send the removals and
    // creations below wherever it points.
    match std::fs::symlink_metadata(skills_dir) {
        Ok(m) if !m.is_dir() => {
            return Err(SkillsError::NotAFolder {
                path: skills_dir.to_path_buf(),
            })
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(skills_dir).map_err(io(skills_dir, "create skills folder"))?
        }
    }
    let mut seen = BTreeSet::new();
    let list = "list links in";
    for entry in std::fs::read_dir(skills_dir).map_err(io(skills_dir, list))? {
        let entry = entry.map_err(io(skills_dir, list))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io(&path, "inspect"))?;
        let name = entry.file_name();
        let wanted_name = name.to_str().filter(|n| wanted.contains(*n));
        if !file_type.is_symlink() {
            if let Some(n) = wanted_name {
                seen.insert(n.to_owned());
                report.blocked.push(n.to_owned());
            }
            continue;
        }
        let Some(n) = wanted_name else {
            std::fs::remove_file(&path).map_err(io(&path, "remove link"))?;
            report.removed.push(name.to_string_lossy().into_owned());
            continue;
        };
        seen.insert(n.to_owned());
        let target = link_target_root.join(n);
        let current = std::fs::read_link(&path).map_err(io(&path, "read link"))?;
        if current == target {
            report.kept.push(n.to_owned());
        } else {
            std::fs::remove_file(&path).map_err(io(&path, "remove link"))?;
            symlink(&target, &path)?;
            report.repointed.push(n.to_owned());
        }
    }
    for n in wanted.difference(&seen) {
        symlink(&link_target_root.join(n), &skills_dir.join(n))?;
        report.created.push(n.clone());
    }
    for list in [
        &mut report.created,
        &mut report.repointed,
        &mut report.removed,
        &mut report.kept,
        &mut report.unknown,
        &mut report.blocked,
    ] {
        list.sort();
        list.dedup();
    }
    Ok(report)
}

fn symlink(target: &Path, link: &Path) -> Result<(), SkillsError> {
    std::os::unix::fs::symlink(target, link).map_err(io(link, "create link"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        for ok in ["pdf", "agent-browser", "a.b", "x_1", "ünïcode", "a b"] {
            assert_eq!(validate_skill_name(ok), Ok(()), "{ok:?}");
        }
        let long = "a".repeat(SKILL_NAME_MAX_BYTES + 1);
        let bad: &[(&str, &str)] = &[
            ("", "is empty"),
            (".", "starts with '.'"),
            ("..", "starts with '.'"),
            (".hidden", "starts with '.'"),
            ("a..b", "contains '..'"),
            ("../etc", "starts with '.'"),
            ("a/b", "contains a path separator"),
            ("/abs", "contains a path separator"),
            ("a\\b", "contains a path separator"),
            ("a\0b", "contains NUL or a control character"),
            ("a\nb", "contains NUL or a control character"),
            ("a\u{7f}", "contains NUL or a control character"),
            ("a\u{9b}", "contains NUL or a control character"),
            (&long, "is longer than 255 bytes"),
        ];
        for (name, why) in bad {
            assert_eq!(validate_skill_name(name), Err(*why), "{name:?}");
        }
        assert_eq!(
            validate_skill_name(&"a".repeat(SKILL_NAME_MAX_BYTES)),
            Ok(())
        );
    }

    proptest::proptest! {
        #[test]
        fn a_valid_name_is_one_plain_path_component(name in "\\PC{0,20}") {
            if validate_skill_name(&name).is_ok() {
                let p = Path::new("/root").join(&name);
                proptest::prop_assert_eq!(p.parent(), Some(Path::new("/root")));
                proptest::prop_assert_eq!(p.file_name().and_then(|f| f.to_str()), Some(name.as_str()));
            }
        }
    }
}
