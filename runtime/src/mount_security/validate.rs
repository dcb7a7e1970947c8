//! Checking `additionalMounts` against the allowlist: [`Validator`] and [`validate`], whose
//! only output a [`MountPlan`](crate::mount_plan::MountPlan) accepts is a [`ValidatedMount`].

use super::allowlist::{MountAllowlist, DEFAULT_ALLOWLIST_RELATIVE};
use super::report::{MountValidation, MountWarning, RejectReason, RejectedMount};
use crate::config::AdditionalMount;
use crate::mount_plan::{check_host_path, Access, ContainerPath, MountKind, EXTRA_ROOT};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// An additional mount that passed [`validate`]. Only validation makes one; it mounts the
/// canonical real path that was checked, not the path as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedMount {
    real_path: PathBuf,
    requested: PathBuf,
    target: ContainerPath,
    access: Access,
    kind: MountKind,
    root: PathBuf,
}

impl ValidatedMount {
    /// The host path mounted: canonical, every symlink resolved.
    pub fn host_path(&self) -> &Path {
        &self.real_path
    }

    /// The host path as configured in `container.json`.
    pub fn requested_host_path(&self) -> &Path {
        &self.requested
    }

    /// Where it appears: `/workspace/extra/<name>`.
    pub fn target(&self) -> &ContainerPath {
        &self.target
    }

    /// Read-write only when asked for and granted by its root.
    pub fn access(&self) -> Access {
        self.access
    }

    /// A file or a folder.
    pub fn kind(&self) -> MountKind {
        self.kind
    }

    /// The real path of the allowed root that admitted it.
    pub fn allowed_root(&self) -> &Path {
        &self.root
    }
}

/// Validates additional mounts: see the [module documentation](super) for the rules.
#[derive(Debug, Clone)]
#[must_use]
pub struct Validator {
    home: Option<PathBuf>,
    allowlist_path: Option<PathBuf>,
    protected: Vec<PathBuf>,
}

impl Default for Validator {
    fn default() -> Self {
        Validator::new()
    }
}

impl Validator {
    /// `~` is the process's `$HOME`, and the allowlist is expected at
    /// [`MountAllowlist::default_path`].
    pub fn new() -> Self {
        Validator::with_home(super::home_from_env())
    }

    /// `~` is `home` (`None`: a `~` path is refused), and the allowlist is expected at
    /// `<home>/.config/sessionbus/mount-allowlist.json`. Reads no environment.
    pub fn with_home(home: Option<PathBuf>) -> Self {
        let allowlist_path = home.as_ref().map(|h| h.join(DEFAULT_ALLOWLIST_RELATIVE));
        let protected = allowlist_path
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        Validator {
            home,
            allowlist_path,
            protected,
        }
    }

    /// The allowlist was loaded from (or is expected at) `path` instead: its folder is
    /// protected, and messages name it.
    pub fn allowlist_at(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if let Some(parent) = path.parent() {
            self.protected.push(parent.to_path_buf());
        }
        self.allowlist_path = Some(path);
        self
    }

    /// No mount may contain `path` or lie inside it (for example the host's data dir, which
    /// holds every group's sessions). Resolved at validation when it exists.
    pub fn protect(mut self, path: impl Into<PathBuf>) -> Self {
        self.protected.push(path.into());
        self
    }

    /// Checks each of `mounts` against `allowlist` (`None`: refuse them all).
    pub fn validate(
        &self,
        allowlist: Option<&MountAllowlist>,
        mounts: &[AdditionalMount],
    ) -> MountValidation {
        let mut out = MountValidation::default();
        if mounts.is_empty() {
            return out;
        }
        let Some(allowlist) = allowlist else {
            for m in mounts {
                out.rejected.push(RejectedMount {
                    mount: m.clone(),
                    reason: RejectReason::NoAllowlist {
                        expected_at: self.allowlist_path.clone(),
                    },
                });
            }
            warn(
                &mut out.warnings,
                MountWarning::NoAllowlist {
                    expected_at: self.allowlist_path.clone(),
                    rejected: mounts.len(),
                },
            );
            return out;
        };
        let roots = self.resolve_roots(allowlist, &mut out.warnings);
        let protected: Vec<PathBuf> = self
            .protected
            .iter()
            .map(|p| resolve_existing_prefix(p))
            .collect();
        for m in mounts {
            match self.check(allowlist, &roots, &protected, &out.accepted, m) {
                Ok((accepted, warning)) => {
                    if let Some(w) = warning {
                        warn(&mut out.warnings, w);
                    }
                    out.accepted.push(accepted);
                }
                Err(reason) => {
                    let rejected = RejectedMount {
                        mount: m.clone(),
                        reason,
                    };
                    tracing::warn!("{rejected}");
                    out.rejected.push(rejected);
                }
            }
        }
        out
    }

    /// The roots' real paths with their read-write flag; unresolvable ones are warned about.
    fn resolve_roots(
        &self,
        allowlist: &MountAllowlist,
        warnings: &mut Vec<MountWarning>,
    ) -> Vec<(PathBuf, bool)> {
        let mut roots = Vec::new();
        for root in &allowlist.allowed_roots {
            let unavailable = |message: String| MountWarning::RootUnavailable {
                root: root.path.clone(),
                message,
            };
            let expanded = match self.expand(&root.path) {
                Ok(p) => p,
                Err(reason) => {
                    warn(warnings, unavailable(reason.to_string()));
                    continue;
                }
            };
            match std::fs::canonicalize(&expanded) {
                Ok(real) => roots.push((real, root.allow_read_write)),
                Err(e) => warn(warnings, unavailable(e.to_string())),
            }
        }
        roots
    }

    /// `~` and `~/...` from the home folder; anything else must be absolute.
    fn expand(&self, path: &Path) -> Result<PathBuf, RejectReason> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Err(RejectReason::HostPathHasNul);
        }
        if bytes == b"~" || bytes.starts_with(b"~/") {
            let home = self.home.as_ref().ok_or(RejectReason::HomeUnknown)?;
            let rest = path.strip_prefix("~").unwrap_or(Path::new(""));
            return Ok(home.join(rest));
        }
        if path.is_absolute() {
            Ok(path.to_path_buf())
        } else {
            Err(RejectReason::NotAbsolute)
        }
    }

    fn check(
        &self,
        allowlist: &MountAllowlist,
        roots: &[(PathBuf, bool)],
        protected: &[PathBuf],
        accepted: &[ValidatedMount],
        m: &AdditionalMount,
    ) -> Result<(ValidatedMount, Option<MountWarning>), RejectReason> {
        // What needs no filesystem first.
        let given = self.expand(&m.host_path)?;
        let target = container_target(m, &given)?;
        let real = match std::fs::canonicalize(&given) {
            Ok(real) => real,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(RejectReason::Missing),
            Err(e) => {
                return Err(RejectReason::Unresolvable {
                    message: e.to_string(),
                })
            }
        };
        check_host_path(&real).map_err(|reason| RejectReason::UnusableRealPath {
            real_path: real.clone(),
            reason,
        })?;
        for path in [&real, &given] {
            if let Some(pattern) = allowlist
                .effective_blocked_patterns()
                .find(|p| contains_ignoring_ascii_case(path, p))
            {
                return Err(RejectReason::Blocked {
                    pattern: pattern.to_owned(),
                    path: path.clone(),
                });
            }
        }
        if let Some(p) = protected
            .iter()
            .find(|p| p.starts_with(&real) || real.starts_with(p))
        {
            return Err(RejectReason::Protected {
                real_path: real,
                protected: p.clone(),
            });
        }
        let (root, root_rw) =
            best_root(roots, &real).ok_or_else(|| RejectReason::NotUnderAllowedRoot {
                real_path: real.clone(),
            })?;
        let kind = kind_of(&real)?;
        for a in accepted {
            if a.target == target {
                return Err(RejectReason::DuplicateContainerPath { target });
            }
            if a.target.starts_with(&target) || target.starts_with(&a.target) {
                return Err(RejectReason::NestedContainerPath {
                    target,
                    other: a.target.clone(),
                });
            }
        }
        let (access, warning) = match (m.readonly, root_rw) {
            (true, _) => (Access::ReadOnly, None),
            (false, true) => (Access::ReadWrite, None),
            (false, false) => (
                Access::ReadOnly,
                Some(MountWarning::DowngradedToReadOnly {
                    host_path: m.host_path.clone(),
                    root: root.clone(),
                }),
            ),
        };
        let mount = ValidatedMount {
            real_path: real,
            requested: m.host_path.clone(),
            target,
            access,
            kind,
            root,
        };
        Ok((mount, warning))
    }
}

/// Validates with [`Validator::new`] (the process's `$HOME`, the default allowlist path).
pub fn validate(allowlist: Option<&MountAllowlist>, mounts: &[AdditionalMount]) -> MountValidation {
    Validator::new().validate(allowlist, mounts)
}

fn warn(warnings: &mut Vec<MountWarning>, w: MountWarning) {
    tracing::warn!("{w}");
    warnings.push(w);
}

/// `/workspace/extra/<p>`, `<p>` being the configured container path or the host path's base
/// name.
fn container_target(m: &AdditionalMount, given: &Path) -> Result<ContainerPath, RejectReason> {
    let invalid = |path: String, reason| RejectReason::InvalidContainerPath { path, reason };
    let name = match &m.container_path {
        Some(p) => p.clone(),
        None => match given.components().next_back() {
            Some(Component::Normal(n)) => n
                .to_str()
                .ok_or_else(|| invalid(n.to_string_lossy().into_owned(), "is not UTF-8"))?
                .to_owned(),
            _ => {
                return Err(invalid(
                    String::new(),
                    "is empty (the host path has no base name: set containerPath)",
                ))
            }
        },
    };
    if name.is_empty() {
        return Err(invalid(name, "is empty"));
    }
    if name.starts_with('/') {
        return Err(invalid(
            name,
            "starts with '/' (it is relative to /workspace/extra)",
        ));
    }
    EXTRA_ROOT.join(&name).map_err(|e| invalid(name, e.reason))
}

/// The deepest root containing `real` (a narrower root's read-only rule wins over a wider
/// root's read-write); among equal roots, read-write only if all of them allow it.
fn best_root(roots: &[(PathBuf, bool)], real: &Path) -> Option<(PathBuf, bool)> {
    let mut best: Option<(PathBuf, bool)> = None;
    for (root, rw) in roots.iter().filter(|(root, _)| real.starts_with(root)) {
        best = match best {
            Some((b, b_rw)) if &b == root => Some((b, b_rw && *rw)),
            Some((b, b_rw)) if b.components().count() >= root.components().count() => {
                Some((b, b_rw))
            }
            _ => Some((root.clone(), *rw)),
        };
    }
    best
}

fn kind_of(real: &Path) -> Result<MountKind, RejectReason> {
    let meta = std::fs::metadata(real).map_err(|e| RejectReason::Unresolvable {
        message: e.to_string(),
    })?;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        return Ok(MountKind::Dir);
    } else if t.is_file() {
        return Ok(MountKind::File);
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(RejectReason::NotFileOrDir {
        real_path: real.to_path_buf(),
        kind,
    })
}

/// `path` with its longest existing ancestor resolved: a protected path need not exist yet
/// (the allowlist's folder before it is created), but a symlink above it must not hide it.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Whether `pattern` occurs in `path`, ignoring ASCII case. An empty pattern matches.
fn contains_ignoring_ascii_case(path: &Path, pattern: &str) -> bool {
    let hay = path.as_os_str().as_bytes();
    let needle = pattern.as_bytes();
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_anywhere_ignoring_case() {
        let p = Path::new("/home/u/.SSH/keys");
        assert!(contains_ignoring_ascii_case(p, ".ssh"));
        assert!(contains_ignoring_ascii_case(p, ""));
        assert!(!contains_ignoring_ascii_case(p, ".aws"));
        assert!(!contains_ignoring_ascii_case(Path::new("/a"), "/a/b"));
    }

    #[test]
    fn protected_paths_resolve_through_existing_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("home")).unwrap();
        std::os::unix::fs::symlink(real.join("home"), real.join("link")).unwrap();
        assert_eq!(
            resolve_existing_prefix(&real.join("link/.config/sessionbus")),
            real.join("home/.config/sessionbus")
        );
        assert_eq!(
            resolve_existing_prefix(Path::new("relative/x")),
            Path::new("relative/x")
        );
    }

    #[test]
    fn the_deepest_root_decides() {
        let roots = [
            (PathBuf::from("/data"), true),
            (PathBuf::from("/data/archive"), false),
            (PathBuf::from("/other"), true),
            (PathBuf::from("/other"), false),
        ];
        let best = |p: &str| best_root(&roots, Path::new(p));
        assert_eq!(best("/data/x"), Some((PathBuf::from("/data"), true)));
        assert_eq!(
            best("/data/archive/x"),
            Some((PathBuf::from("/data/archive"), false))
        );
        assert_eq!(best("/other/x"), Some((PathBuf::from("/other"), false)));
        assert_eq!(best("/data2"), None);
        assert_eq!(best("/data"), Some((PathBuf::from("/data"), true)));
    }

    #[test]
    fn container_targets() {
        let m = |host: &str, ctr: Option<&str>| AdditionalMount {
            host_path: host.into(),
            container_path: ctr.map(Into::into),
            readonly: true,
            extra: Default::default(),
        };
        let target = |host: &str, ctr: Option<&str>| {
            container_target(&m(host, ctr), Path::new(host)).map(|t| t.to_string())
        };
        assert_eq!(
            target("/srv/data", None),
            Ok("/workspace/extra/data".into())
        );
        assert_eq!(
            target("/srv/data", Some("d/e")),
            Ok("/workspace/extra/d/e".into())
        );
        for (host, ctr) in [
            ("/", None),
            ("/srv/..", None),
            ("/srv", Some("")),
            ("/srv", Some("/etc")),
            ("/srv", Some("..")),
            ("/srv", Some("a/../../b")),
            ("/srv", Some("a:b")),
            ("/srv", Some("a\0b")),
            ("/srv", Some("a,b")),
            ("/srv/a:b", None),
        ] {
            assert!(
                matches!(
                    container_target(&m(host, ctr), Path::new(host)),
                    Err(RejectReason::InvalidContainerPath { .. })
                ),
                "{host:?} {ctr:?}"
            );
        }
    }
}
