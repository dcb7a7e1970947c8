//! [`MountAllowlist`]: which host folders additional mounts may come from, read safely from a
//! JSON file the container can never reach.

use serde::{Deserialize, Serialize};
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest allowlist file read at all (1 MiB).
pub const MAX_ALLOWLIST_BYTES: u64 = 1024 * 1024;

/// Where [`MountAllowlist::default_path`] puts the file, under `$HOME`.
pub const DEFAULT_ALLOWLIST_RELATIVE: &str = ".config/sessionbus/mount-allowlist.json";

/// Path fragments that are never mounted, whatever the file says: matched, ignoring ASCII
/// case, as substrings of the mount's real path (and of the path as given).
pub const DEFAULT_BLOCKED_PATTERNS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
];

/// The allowlist for `additionalMounts`, as stored:
///
/// ```json
/// { "allowedRoots": [ { "path": "~/projects", "allowReadWrite": true,
///                       "description": "code the agents work on" },
///                     { "path": "/srv/reference" } ],
///   "blockedPatterns": ["customer-exports"] }
/// ```
///
/// Both fields are required (an empty list is fine). Unknown fields are refused, here and in
/// each root: in a security file a misspelt key must not be ignored silently. A root's
/// `allowReadWrite` defaults to `false`. Root paths are absolute, or start with `~/` (or are
/// `~`) for the host's `$HOME`; they are resolved (symlinks included) when mounts are
/// validated, and a root missing then is skipped with a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountAllowlist {
    /// The folders mounts may come from (each folder and everything under it).
    pub allowed_roots: Vec<AllowedRoot>,
    /// Path fragments to refuse, in addition to [`DEFAULT_BLOCKED_PATTERNS`].
    pub blocked_patterns: Vec<String>,
}

/// One folder additional mounts may come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoot {
    /// The folder: absolute, or `~/...` for the host's `$HOME`.
    pub path: PathBuf,
    /// Whether a mount under it may be read-write when it asks to be (default `false`: every
    /// mount under it is read-only).
    #[serde(default)]
    pub allow_read_write: bool,
    /// What the folder is, for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Why an allowlist file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllowlistError {
    /// The file does not exist (see [`MountAllowlist::load_optional`]).
    #[error("{}: mount allowlist not found", path.display())]
    NotFound {
        /// The path looked up.
        path: PathBuf,
    },
    /// The path is not a regular file; it was not read.
    #[error("{}: mount allowlist is a {kind}, not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `symbolic link`, `directory`, `FIFO`, `socket`, `character device` or
        /// `block device`.
        kind: &'static str,
    },
    /// Someone other than the host's user could change the file.
    #[error("{}: mount allowlist is refused: it {reason}", path.display())]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Why, with the mode or owner.
        reason: String,
    },
    /// The file is over [`MAX_ALLOWLIST_BYTES`]; it was not parsed.
    #[error("{}: mount allowlist is {size} bytes, more than the {limit}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes (at least `limit + 1`).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A filesystem call failed.
    #[error("{}: cannot {op} mount allowlist: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What was being done: `inspect`, `open`, `read`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON (or not UTF-8, or empty).
    #[error("{}: mount allowlist is not valid JSON: {message} (line {line}, column {column})", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A field is missing, unknown or of the wrong type.
    #[error("{}: mount allowlist field {field}: {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field path, e.g. `allowedRoots[0].allowReadWrite` (`.` for the whole file).
        field: String,
        /// What the parser said.
        message: String,
    },
    /// A value is well-typed but unusable.
    #[error("{}: mount allowlist field {field} is refused: it {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field path.
        field: String,
        /// The broken rule.
        reason: &'static str,
    },
}

impl MountAllowlist {
    /// `$HOME/.config/sessionbus/mount-allowlist.json`, or `None` when `$HOME` is unset or
    /// not absolute. The file must live outside every folder a container can reach (mounted
    /// or not): a container able to write it could grant itself any host folder on its next
    /// start. [`super::Validator`] refuses mounts that contain its folder.
    pub fn default_path() -> Option<PathBuf> {
        super::home_from_env().map(|home| home.join(DEFAULT_ALLOWLIST_RELATIVE))
    }

    /// Reads the allowlist at `path`, safely: a symlink, FIFO, folder or device is refused
    /// without blocking on it (the last component is opened with `O_NOFOLLOW | O_NONBLOCK`
    /// and checked with `fstat`; folders above it are trusted), as is a file group- or
    /// world-writable or owned by anyone but root or the host's user, one over
    /// [`MAX_ALLOWLIST_BYTES`], and malformed JSON.
    pub fn load(path: &Path) -> Result<Self, AllowlistError> {
        // Looked at before opening: opening a device can have side effects of its own.
        match std::fs::symlink_metadata(path) {
            Ok(meta) => check_file(path, &meta)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(AllowlistError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(AllowlistError::Read {
                    path: path.to_path_buf(),
                    op: "inspect",
                    source,
                })
            }
        }
        // And again on the descriptor, since the path may have changed in between.
        let (file, meta) = open_checked(path)?;
        let bytes = read_capped(file, meta.len()).map_err(|e| match e {
            Capped::Io(source) => AllowlistError::Read {
                path: path.to_path_buf(),
                op: "read",
                source,
            },
            Capped::TooLarge(size) => AllowlistError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit: MAX_ALLOWLIST_BYTES,
            },
        })?;
        Self::parse(&mut serde_json::Deserializer::from_slice(&bytes), path)
    }

    /// [`MountAllowlist::load`], with a missing file as `Ok(None)` (every additional mount
    /// is then refused by [`super::validate`]).
    pub fn load_optional(path: &Path) -> Result<Option<Self>, AllowlistError> {
        match Self::load(path) {
            Ok(list) => Ok(Some(list)),
            Err(AllowlistError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses `text` as an allowlist; `path_for_messages` only names the source in errors.
    pub fn from_json_str(
        text: &str,
        path_for_messages: impl AsRef<Path>,
    ) -> Result<Self, AllowlistError> {
        let path = path_for_messages.as_ref();
        if text.len() as u64 > MAX_ALLOWLIST_BYTES {
            return Err(AllowlistError::TooLarge {
                path: path.to_path_buf(),
                size: text.len() as u64,
                limit: MAX_ALLOWLIST_BYTES,
            });
        }
        Self::parse(&mut serde_json::Deserializer::from_str(text), path)
    }

    /// The patterns applied: [`DEFAULT_BLOCKED_PATTERNS`], then the file's.
    pub fn effective_blocked_patterns(&self) -> impl Iterator<Item = &str> {
        DEFAULT_BLOCKED_PATTERNS
            .iter()
            .copied()
            .chain(self.blocked_patterns.iter().map(String::as_str))
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        de: &mut serde_json::Deserializer<R>,
        path: &Path,
    ) -> Result<Self, AllowlistError> {
        let list: Self = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => AllowlistError::Field {
                    path: path.to_path_buf(),
                    field,
                    message: inner.to_string(),
                },
                _ => syntax_error(&inner, path),
            }
        })?;
        de.end().map_err(|e| syntax_error(&e, path))?;
        list.check(path)?;
        Ok(list)
    }

    fn check(&self, path: &Path) -> Result<(), AllowlistError> {
        let invalid = |field: String, reason| AllowlistError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        for (i, root) in self.allowed_roots.iter().enumerate() {
            let bytes = root.path.as_os_str().as_bytes();
            let reason = if bytes.is_empty() {
                "is empty"
            } else if bytes.contains(&0) {
                "contains NUL"
            } else if !(bytes.starts_with(b"/") || bytes == b"~" || bytes.starts_with(b"~/")) {
                "is neither absolute nor under '~/'"
            } else {
                continue;
            };
            return Err(invalid(format!("allowedRoots[{i}].path"), reason));
        }
        for (i, pattern) in self.blocked_patterns.iter().enumerate() {
            if pattern.is_empty() {
                return Err(invalid(
                    format!("blockedPatterns[{i}]"),
                    "is empty (it would match every path)",
                ));
            }
        }
        Ok(())
    }
}

/// Opens the last component without following a symlink and without blocking (a FIFO with
/// no writer would block a plain open), then checks the descriptor with `fstat`.
fn open_checked(path: &Path) -> Result<(File, Metadata), AllowlistError> {
    let err = |op| {
        move |source: std::io::Error| AllowlistError::Read {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(AllowlistError::NotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(AllowlistError::NotAFile {
                path: path.to_path_buf(),
                kind: "symbolic link",
            })
        }
        Err(e) => return Err(err("open")(e)),
    };
    let meta = file.metadata().map_err(err("inspect"))?;
    check_file(path, &meta)?;
    Ok((file, meta))
}

fn syntax_error(e: &serde_json::Error, path: &Path) -> AllowlistError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    AllowlistError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
    }
}

/// Refuses anything but a regular file that only root or the host's user can change.
fn check_file(path: &Path, meta: &Metadata) -> Result<(), AllowlistError> {
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("symbolic link")
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else {
        Some("special file")
    };
    if let Some(kind) = kind {
        return Err(AllowlistError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let insecure = |reason| AllowlistError::Insecure {
        path: path.to_path_buf(),
        reason,
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(format!(
            "is writable by group or others (mode {mode:04o})"
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(insecure(format!(
            "belongs to uid {}, neither root nor this process's user ({me})",
            meta.uid()
        )));
    }
    Ok(())
}

enum Capped {
    Io(std::io::Error),
    TooLarge(u64),
}

/// Reads at most [`MAX_ALLOWLIST_BYTES`]; the file may grow after `fstat`, so the read is
/// capped too.
fn read_capped(file: File, size: u64) -> Result<Vec<u8>, Capped> {
    if size > MAX_ALLOWLIST_BYTES {
        return Err(Capped::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_ALLOWLIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Capped::Io)?;
    if bytes.len() as u64 > MAX_ALLOWLIST_BYTES {
        return Err(Capped::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MountAllowlist, AllowlistError> {
        MountAllowlist::from_json_str(text, "/cfg/allow.json")
    }

    #[test]
    fn reads_camel_case_with_defaults_per_root() {
        let list = parse(
            r#"{"allowedRoots": [{"path": "/srv", "allowReadWrite": true, "description": "d"},
                                 {"path": "~/p"}, {"path": "~"}],
                "blockedPatterns": ["secret-stuff"]}"#,
        )
        .unwrap();
        assert_eq!(list.allowed_roots.len(), 3);
        assert!(list.allowed_roots[0].allow_read_write);
        assert_eq!(list.allowed_roots[0].description.as_deref(), Some("d"));
        assert!(!list.allowed_roots[1].allow_read_write);
        let patterns: Vec<&str> = list.effective_blocked_patterns().collect();
        assert_eq!(patterns.len(), DEFAULT_BLOCKED_PATTERNS.len() + 1);
        assert_eq!(patterns.last(), Some(&"secret-stuff"));
        let back = serde_json::to_string(&list).unwrap();
        assert_eq!(parse(&back).unwrap(), list);
    }

    #[test]
    fn missing_unknown_and_mistyped_fields_name_the_field() {
        let cases = [
            (r#"{"allowedRoots": []}"#, "."),
            (r#"{"blockedPatterns": []}"#, "."),
            (
                r#"{"allowedRoots": null, "blockedPatterns": []}"#,
                "allowedRoots",
            ),
            (
                r#"{"allowedRoots": [], "blockedPatterns": [], "extra": 1}"#,
                "extra",
            ),
            (
                r#"{"allowedRoots": [{"path": "/a", "allowReadwrite": true}], "blockedPatterns": []}"#,
                "allowedRoots[0].allowReadwrite",
            ),
            (
                r#"{"allowedRoots": [{"path": "/a", "allowReadWrite": "yes"}], "blockedPatterns": []}"#,
                "allowedRoots[0].allowReadWrite",
            ),
            (
                r#"{"allowedRoots": [], "blockedPatterns": [1]}"#,
                "blockedPatterns[0]",
            ),
            (r#"[]"#, "."),
        ];
        for (text, want) in cases {
            match parse(text) {
                Err(AllowlistError::Field { field, path, .. }) => {
                    assert_eq!(field, want, "{text}");
                    assert_eq!(path, Path::new("/cfg/allow.json"));
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn unusable_values_are_refused() {
        for (text, field) in [
            (
                r#"{"allowedRoots": [{"path": "rel"}], "blockedPatterns": []}"#,
                "allowedRoots[0].path",
            ),
            (
                r#"{"allowedRoots": [{"path": ""}], "blockedPatterns": []}"#,
                "allowedRoots[0].path",
            ),
            (
                r#"{"allowedRoots": [{"path": "~bob/x"}], "blockedPatterns": []}"#,
                "allowedRoots[0].path",
            ),
            (
                r#"{"allowedRoots": [{"path": "/a\u0000b"}], "blockedPatterns": []}"#,
                "allowedRoots[0].path",
            ),
            (
                r#"{"allowedRoots": [], "blockedPatterns": ["x", ""]}"#,
                "blockedPatterns[1]",
            ),
        ] {
            match parse(text) {
                Err(AllowlistError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    /// The checks on the descriptor alone, as when the path changes after the `lstat`.
    #[test]
    fn the_open_itself_neither_blocks_on_a_fifo_nor_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_checked(&f).map(|_| ()));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO blocked");
        assert!(
            matches!(result, Err(AllowlistError::NotAFile { kind: "FIFO", .. })),
            "{result:?}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(matches!(
            open_checked(&link),
            Err(AllowlistError::NotAFile {
                kind: "symbolic link",
                ..
            })
        ));
        assert!(matches!(
            open_checked(dir.path()),
            Err(AllowlistError::NotAFile {
                kind: "directory",
                ..
            })
        ));
    }

    #[test]
    fn malformed_json_is_a_syntax_error() {
        for text in [
            "",
            "{",
            r#"{"allowedRoots": [], "blockedPatterns": []} x"#,
            r#"{"allowedRoots": [,]}"#,
        ] {
            assert!(
                matches!(parse(text), Err(AllowlistError::Syntax { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn oversized_text_is_refused_before_parsing() {
        let text = " ".repeat(MAX_ALLOWLIST_BYTES as usize + 1);
        assert!(matches!(
            parse(&text),
            Err(AllowlistError::TooLarge { size, .. }) if size == MAX_ALLOWLIST_BYTES + 1
        ));
    }
}
