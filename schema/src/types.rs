//! Small domain types shared by every crate: which file, which role, sequence numbers.

use std::fmt;

/// Which of the two session files a handle is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// `inbound.db`: the host writes, the container reads.
    Inbound,
    /// `outbound.db`: the container writes, the host reads.
    Outbound,
}

impl FileKind {
    /// The file's name inside a session folder.
    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Inbound => "inbound.db",
            FileKind::Outbound => "outbound.db",
        }
    }

    /// The role that is the file's only writer.
    pub fn writer(self) -> Role {
        match self {
            FileKind::Inbound => Role::Host,
            FileKind::Outbound => Role::Container,
        }
    }

    /// The other file of the pair.
    pub fn other(self) -> FileKind {
        match self {
            FileKind::Inbound => FileKind::Outbound,
            FileKind::Outbound => FileKind::Inbound,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// Who is acting on a file; carried by every error so that logs say which side failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The long-lived host process (and host-side CLI tools).
    Host,
    /// The sandboxed container of one session.
    Container,
    /// An operator tool such as `sessionbus migrate` or `sessionbus inspect`.
    Operator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Host => "host",
            Role::Container => "container",
            Role::Operator => "operator",
        })
    }
}

/// A message's sequence number: the id the agent sees ("edit message 5").
///
/// Unique across both files of a session. Host rows (`messages_in`, `host_replies`) are even,
/// container rows (`messages_out`) are odd.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub i64);

/// Which side a [`Seq`] belongs to, by its parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOwner {
    /// Even: a host row.
    Host,
    /// Odd: a container row.
    Container,
}

impl Seq {
    /// The side whose rows carry this parity.
    pub fn owner(self) -> SeqOwner {
        if self.0.rem_euclid(2) == 0 {
            SeqOwner::Host
        } else {
            SeqOwner::Container
        }
    }

    /// The smallest even seq strictly above `max` (the host's next seq); `max` of `None` means
    /// no rows yet and gives 2.
    pub fn next_host(max: Option<Seq>) -> Seq {
        let m = max.map_or(0, |s| s.0.max(0));
        Seq(m + 2 - m.rem_euclid(2))
    }

    /// The smallest odd seq strictly above `max` (the container's next seq); `None` gives 1.
    pub fn next_container(max: Option<Seq>) -> Seq {
        let m = max.map_or(0, |s| s.0.max(0));
        Seq(m + 1 + m.rem_euclid(2))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_seqs_keep_parity_and_grow() {
        assert_eq!(Seq::next_host(None), Seq(2));
        assert_eq!(Seq::next_host(Some(Seq(2))), Seq(4));
        assert_eq!(Seq::next_host(Some(Seq(7))), Seq(8));
        assert_eq!(Seq::next_container(None), Seq(1));
        assert_eq!(Seq::next_container(Some(Seq(1))), Seq(3));
        assert_eq!(Seq::next_container(Some(Seq(8))), Seq(9));
        assert_eq!(Seq::next_container(Some(Seq(-5))), Seq(1));
    }

    proptest::proptest! {
        #[test]
        fn next_is_smallest_above_with_parity(m in 0i64..1_000_000_000) {
            let h = Seq::next_host(Some(Seq(m)));
            let c = Seq::next_container(Some(Seq(m)));
            proptest::prop_assert!(h.0 > m && h.0 <= m + 2 && h.owner() == SeqOwner::Host);
            proptest::prop_assert!(c.0 > m && c.0 <= m + 2 && c.owner() == SeqOwner::Container);
        }
    }
}
