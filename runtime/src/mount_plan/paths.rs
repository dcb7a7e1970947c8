//! The two kinds of path a mount joins: [`ContainerPath`] (where it appears inside the
//! container, a type that can only hold a valid target) and the host path behind it (a plain
//! [`Path`], checked by [`check_host_path`] when a plan is built).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest path accepted, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// An absolute, normalised path inside the container, safe to hand to `docker` and `bwrap`:
/// it starts with `/`, is not `/` itself, has no empty, `.` or `..` component and no trailing
/// `/`, and holds no NUL or other control character, no `:` (docker's `-v` splits on it) and
/// no `,` (docker's `--mount` splits on it). At most [`MAX_PATH_BYTES`] bytes.
///
/// ```
/// use sessionbus_runtime::mount_plan::ContainerPath;
///
/// let p = ContainerPath::new("/workspace/extra/data").unwrap();
/// assert!(p.starts_with(&ContainerPath::new("/workspace").unwrap()));
/// assert!(ContainerPath::new("/workspace/../etc").is_err());
/// assert!(ContainerPath::new("workspace").is_err());
/// assert!(ContainerPath::new("/a:b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPath(Cow<'static, str>);

/// A container path that was refused, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container path {path:?} is refused: it {reason}")]
#[non_exhaustive]
pub struct ContainerPathError {
    /// The path as given.
    pub path: String,
    /// The broken rule, e.g. `contains a '..' component`.
    pub reason: &'static str,
}

impl ContainerPath {
    /// Checks `path` against the rules of [`ContainerPath`].
    pub fn new(path: impl Into<String>) -> Result<Self, ContainerPathError> {
        let path = path.into();
        match check_container_bytes(path.as_bytes()) {
            Ok(()) => Ok(ContainerPath(Cow::Owned(path))),
            Err(reason) => Err(ContainerPathError { path, reason }),
        }
    }

    /// A constant path. Only used in `const` items, where a path breaking the rules stops the
    /// build instead of panicking at run time.
    #[allow(clippy::panic)] // const items only: a bad constant stops the build
    pub(crate) const fn from_static(path: &'static str) -> Self {
        match check_container_bytes(path.as_bytes()) {
            Ok(()) => ContainerPath(Cow::Borrowed(path)),
            Err(_) => panic!("invalid container path constant"),
        }
    }

    /// `self/relative`: `relative` must be a relative path whose result is again a valid
    /// container path (no leading `/`, no `..`, and so on).
    pub fn join(&self, relative: &str) -> Result<Self, ContainerPathError> {
        let joined = format!("{}/{relative}", self.0);
        if relative.starts_with('/') {
            return Err(ContainerPathError {
                path: joined,
                reason: "joins an absolute path (it must be relative)",
            });
        }
        ContainerPath::new(joined)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a [`Path`].
    pub fn as_path(&self) -> &Path {
        Path::new(self.as_str())
    }

    /// True when `ancestor` is this path or one of its parents, compared by components
    /// (`/workspace2` does not start with `/workspace`).
    pub fn starts_with(&self, ancestor: &ContainerPath) -> bool {
        self.as_path().starts_with(ancestor.as_path())
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<Path> for ContainerPath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl AsRef<OsStr> for ContainerPath {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(self.as_str())
    }
}

impl TryFrom<String> for ContainerPath {
    type Error = ContainerPathError;
    fn try_from(path: String) -> Result<Self, Self::Error> {
        ContainerPath::new(path)
    }
}

impl TryFrom<&str> for ContainerPath {
    type Error = ContainerPathError;
    fn try_from(path: &str) -> Result<Self, Self::Error> {
        ContainerPath::new(path)
    }
}

impl std::str::FromStr for ContainerPath {
    type Err = ContainerPathError;
    fn from_str(path: &str) -> Result<Self, Self::Err> {
        ContainerPath::new(path)
    }
}

/// Checks a host path a plan will emit as given: absolute, normalised (no empty, `.` or `..`
/// component, no trailing `/`; `/` itself is allowed), at most [`MAX_PATH_BYTES`] bytes, and
/// free of NUL, other control characters, `,` and `"` (docker's `--mount` value is a CSV
/// record). Symlinks are not looked at here: the caller hands canonical paths. Returns the
/// broken rule.
pub(crate) fn check_host_path(path: &Path) -> Result<(), &'static str> {
    let bytes = path.as_os_str().as_bytes();
    if bytes == b"/" {
        return Ok(());
    }
    check_absolute(bytes, b",\"")
}

const fn check_container_bytes(bytes: &[u8]) -> Result<(), &'static str> {
    if let [b'/'] = bytes {
        return Err("is the container's root");
    }
    check_absolute(bytes, b":,")
}

/// The rules shared by both kinds of path; `forbidden` are the extra bytes refused.
const fn check_absolute(bytes: &[u8], forbidden: &[u8]) -> Result<(), &'static str> {
    if bytes.len() > MAX_PATH_BYTES {
        return Err("is longer than 4095 bytes");
    }
    let mut rest = match bytes {
        [] => return Err("is empty"),
        [b'/', rest @ ..] => rest,
        _ => return Err("is not absolute (it must start with '/')"),
    };
    // The current component: its length, and whether it is made of dots only.
    let mut len = 0usize;
    let mut dots = true;
    loop {
        let (c, tail) = match rest {
            [c, tail @ ..] => (*c, tail),
            [] => (b'/', rest),
        };
        if c == b'/' {
            if len == 0 {
                return Err("has an empty component ('//' or a trailing '/')");
            }
            if dots && len <= 2 {
                return Err("has a '.' or '..' component");
            }
            if rest.is_empty() {
                return Ok(());
            }
            len = 0;
            dots = true;
        } else {
            if c == 0 || c < 0x20 || c == 0x7f {
                return Err("contains NUL or a control character");
            }
            if contains(forbidden, c) {
                return Err(match c {
                    b':' => "contains ':' (docker's -v splits on it)",
                    b',' => "contains ',' (docker's --mount splits on it)",
                    _ => "contains '\"' (docker's --mount quotes with it)",
                });
            }
            len += 1;
            dots = dots && c == b'.';
        }
        rest = tail;
    }
}

const fn contains(set: &[u8], c: u8) -> bool {
    let mut rest = set;
    while let [first, tail @ ..] = rest {
        if *first == c {
            return true;
        }
        rest = tail;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_path_rules() {
        for ok in [
            "/workspace",
            "/workspace/extra/a b",
            "/home/node/.claude",
            "/a/...",
            "/a/.b",
            "/ünï",
        ] {
            assert_eq!(ContainerPath::new(ok).map(|p| p.to_string()), Ok(ok.into()));
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let bad: &[(&str, &str)] = &[
            ("", "is empty"),
            ("/", "is the container's root"),
            ("workspace", "is not absolute (it must start with '/')"),
            ("./x", "is not absolute (it must start with '/')"),
            ("//x", "has an empty component ('//' or a trailing '/')"),
            ("/x//y", "has an empty component ('//' or a trailing '/')"),
            ("/x/", "has an empty component ('//' or a trailing '/')"),
            ("/x/./y", "has a '.' or '..' component"),
            ("/x/..", "has a '.' or '..' component"),
            ("/..", "has a '.' or '..' component"),
            ("/x/../y", "has a '.' or '..' component"),
            ("/a:b", "contains ':' (docker's -v splits on it)"),
            ("/a,b", "contains ',' (docker's --mount splits on it)"),
            ("/a\0b", "contains NUL or a control character"),
            ("/a\nb", "contains NUL or a control character"),
            ("/a\u{7f}", "contains NUL or a control character"),
            (&long, "is longer than 4095 bytes"),
        ];
        for (path, why) in bad {
            assert_eq!(
                ContainerPath::new(*path).map_err(|e| e.reason),
                Err(*why),
                "{path:?}"
            );
        }
    }

    #[test]
    fn join_and_starts_with_work_by_component() {
        let ws = ContainerPath::from_static("/workspace");
        let x = ws.join("extra/data").unwrap();
        assert_eq!(x.as_str(), "/workspace/extra/data");
        assert!(x.starts_with(&ws) && ws.starts_with(&ws));
        assert!(!ContainerPath::from_static("/workspace2").starts_with(&ws));
        assert!(!ws.starts_with(&x));
        for bad in ["/etc", "", "../x", "a/../../x", "a:b", "a/"] {
            assert!(ws.join(bad).is_err(), "{bad:?}");
        }
        let err = ws.join("/etc").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn host_path_rules() {
        for ok in ["/", "/srv/a:b", "/a/.b", "/tmp/x y"] {
            assert_eq!(check_host_path(Path::new(ok)), Ok(()), "{ok:?}");
        }
        for bad in [
            "", "rel", "./x", "/a/../b", "/a/./b", "/a/", "//a", "/a,b", "/a\"b", "/a\0b", "/a\tb",
        ] {
            assert!(check_host_path(Path::new(bad)).is_err(), "{bad:?}");
        }
        let non_utf8 = OsStr::from_bytes(b"/srv/\xff");
        assert_eq!(check_host_path(Path::new(non_utf8)), Ok(()));
    }
}
