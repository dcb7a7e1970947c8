//! Finding the session folders of a data dir: `DATA/v2-sessions/<agent_group_id>/<session_id>/`.
//!
//! The data dir, `v2-sessions/` and each agent group's folder are the host's; only their
//! listings are read here (entry types from the listing itself, never followed). A symbolic
//! link where a group or session folder belongs is reported and not followed.

use std::path::{Path, PathBuf};

/// The folder of a data dir that holds `<agent_group_id>/<session_id>/` session folders.
pub const SESSIONS_DIR: &str = "v2-sessions";

/// Why a data dir could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The data dir does not exist.
    #[error(
        "data dir {0} does not exist (pass --data-dir DIR, the folder holding {SESSIONS_DIR}/)"
    )]
    DataDirMissing(PathBuf),
    /// The data dir is not a directory.
    #[error("data dir {0} is not a directory")]
    DataDirNotADirectory(PathBuf),
    /// The data dir has no `v2-sessions` folder.
    #[error(
        "{0} has no {SESSIONS_DIR}/ folder: is it the data dir? (expected \
         DIR/{SESSIONS_DIR}/<agent_group_id>/<session_id>/)"
    )]
    NoSessionsDir(PathBuf),
    /// Listing the data dir or its `v2-sessions` folder failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// What was being done (`read`, `list`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One thing found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A session folder (a real folder).
    Session(PathBuf),
    /// A symbolic link where a group or session folder belongs: not followed.
    Link(PathBuf),
    /// An agent group folder that could not be listed.
    Unlisted {
        /// The group folder.
        path: PathBuf,
        /// The OS error, in words.
        error: String,
    },
}

/// Every session folder of `data_dir`, groups and sessions sorted by name. A group folder
/// that cannot be listed is a [`Found::Unlisted`] entry; the others are still scanned.
pub fn scan_data_dir(data_dir: &Path) -> Result<Vec<Found>, ScanError> {
    let io = |path: &Path, op| {
        let path = path.to_path_buf();
        move |source| ScanError::Io { path, op, source }
    };
    match std::fs::metadata(data_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ScanError::DataDirNotADirectory(data_dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ScanError::DataDirMissing(data_dir.to_path_buf()))
        }
        Err(e) => return Err(io(data_dir, "read")(e)),
    }
    let root = data_dir.join(SESSIONS_DIR);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ScanError::NoSessionsDir(data_dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ScanError::NoSessionsDir(data_dir.to_path_buf()))
        }
        Err(e) => return Err(io(&root, "read")(e)),
    }
    let mut out = Vec::new();
    for group in sub_dirs(&root).map_err(io(&root, "list"))? {
        match group {
            Found::Session(g) => match sub_dirs(&g) {
                Ok(sessions) => out.extend(sessions),
                Err(e) => out.push(Found::Unlisted {
                    path: g,
                    error: e.to_string(),
                }),
            },
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Sub-folders ([`Found::Session`]) and symlinks ([`Found::Link`]) of `dir`, sorted by name;
/// plain files are left out.
fn sub_dirs(dir: &Path) -> std::io::Result<Vec<Found>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            out.push(Found::Session(entry.path()));
        } else if ft.is_symlink() {
            out.push(Found::Link(entry.path()));
        }
    }
    out.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    Ok(out)
}

/// The path a found entry is about.
pub fn path_of(f: &Found) -> &Path {
    match f {
        Found::Session(p) | Found::Link(p) | Found::Unlisted { path: p, .. } => p,
    }
}
