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
/// container rows (`messages_out`) are odd. A `Seq` is always positive: it can only be made by
/// [`Seq::new`] (or `TryFrom<i64>`, also used when deserializing), which refuses zero and
/// negative numbers, and by the allocators, which keep the parity of the side they allocate
/// for ([`Seq::next_host`], [`Seq::next_container`], [`Seq::following`]). "No seq" (a legacy
/// row written before seqs existed, a cursor before the first row) is `Option<Seq>`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Seq(i64);

/// A number that cannot be a [`Seq`], or a seq of the wrong side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeqError {
    /// Seqs start at 1.
    #[error("{0} is not a seq: seqs are positive")]
    NotPositive(i64),
    /// The number has the other side's parity.
    #[error("{seq} is not a {wanted:?} seq: host seqs are even, container seqs odd")]
    WrongSide {
        /// The number given.
        seq: i64,
        /// The side it was meant for.
        wanted: SeqOwner,
    },
    /// No seq of this parity is left above the file's largest.
    #[error("no seq is left above {0}")]
    Exhausted(i64),
}

/// Which side a [`Seq`] belongs to, by its parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOwner {
    /// Even: a host row.
    Host,
    /// Odd: a container row.
    Container,
}

impl Seq {
    /// The seq `n`; refuses zero and negative numbers.
    pub const fn new(n: i64) -> Result<Seq, SeqError> {
        if n > 0 {
            Ok(Seq(n))
        } else {
            Err(SeqError::NotPositive(n))
        }
    }

    /// The seq `n` of a row written by `side`; refuses the other side's parity.
    pub fn of(side: SeqOwner, n: i64) -> Result<Seq, SeqError> {
        let seq = Seq::new(n)?;
        if seq.owner() == side {
            Ok(seq)
        } else {
            Err(SeqError::WrongSide {
                seq: n,
                wanted: side,
            })
        }
    }

    /// The number.
    pub const fn get(self) -> i64 {
        self.0
    }

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
    pub fn next_host(max: Option<Seq>) -> Result<Seq, SeqError> {
        let m = max.map_or(0, Seq::get);
        m.checked_add(2 - m.rem_euclid(2))
            .map(Seq)
            .ok_or(SeqError::Exhausted(m))
    }

    /// The smallest odd seq strictly above `max` (the container's next seq); `None` gives 1.
    pub fn next_container(max: Option<Seq>) -> Result<Seq, SeqError> {
        let m = max.map_or(0, Seq::get);
        m.checked_add(1 + m.rem_euclid(2))
            .map(Seq)
            .ok_or(SeqError::Exhausted(m))
    }

    /// The next seq of the same side (two above).
    pub fn following(self) -> Result<Seq, SeqError> {
        self.0
            .checked_add(2)
            .map(Seq)
            .ok_or(SeqError::Exhausted(self.0))
    }
}

impl TryFrom<i64> for Seq {
    type Error = SeqError;
    fn try_from(n: i64) -> Result<Seq, SeqError> {
        Seq::new(n)
    }
}

impl From<Seq> for i64 {
    fn from(s: Seq) -> i64 {
        s.0
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

    fn seq(n: i64) -> Seq {
        Seq::new(n).unwrap()
    }

    #[test]
    fn next_seqs_keep_parity_and_grow() {
        assert_eq!(Seq::next_host(None), Ok(seq(2)));
        assert_eq!(Seq::next_host(Some(seq(2))), Ok(seq(4)));
        assert_eq!(Seq::next_host(Some(seq(7))), Ok(seq(8)));
        assert_eq!(Seq::next_container(None), Ok(seq(1)));
        assert_eq!(Seq::next_container(Some(seq(1))), Ok(seq(3)));
        assert_eq!(Seq::next_container(Some(seq(8))), Ok(seq(9)));
        assert_eq!(seq(3).following(), Ok(seq(5)));
    }

    #[test]
    fn seqs_cannot_be_made_wrong() {
        assert_eq!(Seq::new(0), Err(SeqError::NotPositive(0)));
        assert_eq!(Seq::new(-4), Err(SeqError::NotPositive(-4)));
        assert_eq!(
            Seq::of(SeqOwner::Host, 3),
            Err(SeqError::WrongSide {
                seq: 3,
                wanted: SeqOwner::Host
            })
        );
        assert_eq!(Seq::of(SeqOwner::Container, 3), Ok(seq(3)));
        assert!(serde_json::from_str::<Seq>("0").is_err());
        assert_eq!(serde_json::from_str::<Seq>("7").unwrap(), seq(7));
        assert_eq!(serde_json::to_string(&seq(7)).unwrap(), "7");
        // The top of the range is an error, not an overflow.
        assert_eq!(
            Seq::next_host(Some(seq(i64::MAX - 1))),
            Err(SeqError::Exhausted(i64::MAX - 1))
        );
        assert!(Seq::next_container(Some(seq(i64::MAX))).is_err());
        assert!(seq(i64::MAX).following().is_err());
    }

    proptest::proptest! {
        #[test]
        fn next_is_smallest_above_with_parity(m in 1i64..1_000_000_000) {
            let h = Seq::next_host(Some(seq(m))).unwrap();
            let c = Seq::next_container(Some(seq(m))).unwrap();
            proptest::prop_assert!(h.0 > m && h.0 <= m + 2 && h.owner() == SeqOwner::Host);
            proptest::prop_assert!(c.0 > m && c.0 <= m + 2 && c.owner() == SeqOwner::Container);
        }
    }
}
