//! A bound on the container's schema before SQLite parses it.
//!
//! SQLite reads and parses every entry of `sqlite_schema` when a connection prepares its first
//! statement, so the entry cap of [`super::shape`] can refuse a file only after paying for that
//! parse: 20,000 planted tables cost the host about 200 ms per open. The schema's B-tree is
//! rooted at page 1, so its size can be judged from the raw file first: a root that is an
//! interior page with more than [`MAX_SCHEMA_PAGES`] children, or whose right-most child is
//! itself an interior page (a tree three levels deep, hundreds of pages), is refused without
//! SQLite seeing it. Every real file of either implementation keeps its schema in a few pages.
//! Anything this check cannot read or does not recognise (a short file, a page being written)
//! is left to SQLite and the entry cap.

use std::os::fd::{AsRawFd, OwnedFd};

/// Pages at the first level of the schema's B-tree accepted (32 pages of 4 KiB hold over a hundred
/// kilobytes of `CREATE` statements; this project's schema needs a few).
pub const MAX_SCHEMA_PAGES: u32 = 32;

/// SQLite's page type byte of an interior table B-tree page.
const INTERIOR_TABLE: u8 = 0x05;

/// Reads up to `buf.len()` bytes at `offset`; the count read.
fn pread_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0usize;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        let at = i64::try_from(offset.saturating_add(n as u64)).unwrap_or(i64::MAX);
        // SAFETY: `rest` is a writable buffer of its length; `fd` is open.
        let k = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        if k < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if k == 0 {
            break;
        }
        n += usize::try_from(k).unwrap_or(0);
    }
    Ok(n)
}

/// Why the schema of the database open at `fd` is too large to hand to SQLite, or `None`.
pub(crate) fn too_large(fd: &OwnedFd) -> std::io::Result<Option<String>> {
    // The file header (100 bytes) and page 1's B-tree header (12 bytes for an interior page).
    let mut head = [0u8; 112];
    if pread_at(fd, &mut head, 0)? < head.len() {
        return Ok(None);
    }
    let raw_size = u32::from(u16::from_be_bytes([head[16], head[17]]));
    let page_size = if raw_size == 1 { 65_536 } else { raw_size };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Ok(None);
    }
    if head[100] != INTERIOR_TABLE {
        return Ok(None);
    }
    let children = u32::from(u16::from_be_bytes([head[103], head[104]])) + 1;
    if children > MAX_SCHEMA_PAGES {
        return Ok(Some(format!(
            "the schema spans more than {MAX_SCHEMA_PAGES} pages ({children} at the first level \
             of its B-tree); refused before SQLite parses it"
        )));
    }
    let right = u32::from_be_bytes([head[108], head[109], head[110], head[111]]);
    if right >= 2 {
        let mut kind = [0u8; 1];
        let offset = u64::from(right - 1) * u64::from(page_size);
        if pread_at(fd, &mut kind, offset)? == 1 && kind[0] == INTERIOR_TABLE {
            return Ok(Some(
                "the schema's B-tree is more than two levels deep (hundreds of pages); refused \
                 before SQLite parses it"
                    .into(),
            ));
        }
    }
    Ok(None)
}
