//! Deciding where change notification can be trusted, from the filesystem type (`statfs`
//! `f_type`) of the folder: inotify reports what happens through the local kernel, so it
//! sees the other side's writes on a local filesystem (also through Linux bind mounts, which
//! share inodes), and misses them where the other side writes on another machine or through a
//! userspace server (FUSE, which includes bindfs and virtiofs; NFS; 9p; SMB; cluster
//! filesystems). There a watcher polls: it sleeps until its timeout, as before.

use super::{PollReason, WakeError};
use sessionbus_schema::Role;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A filesystem type known to deliver inotify events for every writer on this machine.
const LOCAL: &[(i64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x5265_4973, "reiserfs"),
    (0x3153_464A, "jfs"),
    (0x794C_7630, "overlayfs"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
    (0x7366_746E, "ntfs3"),
    (0x4244, "hfs"),
    (0x482B, "hfsplus"),
];

/// A filesystem type where writers elsewhere change files without local inotify events.
const REMOTE: &[(i64, &str)] = &[
    (0x6573_5546, "fuse (bindfs, virtiofs, sshfs, gcsfuse...)"),
    (0x6969, "nfs"),
    (0x0102_1997, "9p"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x517B, "smb"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "kafs"),
    (0x7375_7245, "coda"),
    (0x0BD0_0BD0, "lustre"),
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
    (0x564C, "ncp"),
    (0x6165_676C, "pstore"),
];

/// How a folder's filesystem was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FsKind {
    /// inotify sees every writer on this machine.
    Local,
    /// Writers elsewhere are not seen: poll.
    Remote {
        /// `f_type`.
        magic: i64,
        /// Its usual name.
        name: &'static str,
    },
    /// Not in either list: poll, to be safe.
    Unknown {
        /// `f_type`.
        magic: i64,
    },
}

impl FsKind {
    /// Judges a `statfs` `f_type`.
    pub(super) fn of_magic(magic: i64) -> FsKind {
        if LOCAL.iter().any(|&(m, _)| m == magic) {
            FsKind::Local
        } else if let Some(&(_, name)) = REMOTE.iter().find(|&&(m, _)| m == magic) {
            FsKind::Remote { magic, name }
        } else {
            FsKind::Unknown { magic }
        }
    }

    /// Why a watcher on such a filesystem polls, or `None` when it may use inotify.
    pub(super) fn poll_reason(self) -> Option<PollReason> {
        match self {
            FsKind::Local => None,
            FsKind::Remote { magic, name } => Some(PollReason::RemoteFilesystem { magic, name }),
            FsKind::Unknown { magic } => Some(PollReason::UnknownFilesystem { magic }),
        }
    }
}

/// The filesystem type of `dir` (`statfs(2)`).
pub(super) fn fs_kind(role: Role, dir: &Path) -> Result<FsKind, WakeError> {
    let fail = |errno: i32| WakeError::Os {
        role,
        op: "read the filesystem type of",
        path: dir.to_path_buf(),
        errno,
    };
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| fail(libc::EINVAL))?;
    // SAFETY: zeroed is a valid `statfs` (plain integers), filled in by the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(fail(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ));
    }
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let magic = i64::from(st.f_type as i64) & 0xFFFF_FFFF;
    Ok(FsKind::of_magic(magic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_judged() {
        assert_eq!(FsKind::of_magic(0xEF53), FsKind::Local);
        assert_eq!(FsKind::of_magic(0x0102_1994), FsKind::Local);
        assert!(matches!(
            FsKind::of_magic(0x6573_5546),
            FsKind::Remote { name, .. } if name.starts_with("fuse")
        ));
        assert!(matches!(
            FsKind::of_magic(0x6969),
            FsKind::Remote { name: "nfs", .. }
        ));
        assert_eq!(FsKind::of_magic(0x1234), FsKind::Unknown { magic: 0x1234 });
        assert!(FsKind::Local.poll_reason().is_none());
        assert!(FsKind::of_magic(0x0102_1997).poll_reason().is_some());
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let e = fs_kind(Role::Container, Path::new("/no/such/folder/here")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/no/such/folder/here"), "{text}");
        assert!(text.contains("container"), "{text}");
    }
}
