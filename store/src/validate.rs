//! Checks on what callers and peers hand us, before anything is written.

use crate::error::StoreError;
use sessionbus_schema::At;

/// Largest message content accepted, in bytes (1 MiB). Attachments travel as files in
/// `inbox/` and `outbox/`, never inside the content.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Longest other text field the host reads from the container's file (kind, address, times,
/// recurrence), in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Checks an id that may become a folder name (`inbox/<id>/`): not empty, not too long, no
/// `/`, `\`, NUL or control characters, and not `.` or `..` (nor containing `..`).
pub fn check_id(at: impl FnOnce() -> At, id: &str) -> Result<(), StoreError> {
    match id_problem(id) {
        Some(reason) => Err(StoreError::InvalidId {
            at: at(),
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// True when `id` passes [`check_id`].
pub fn is_valid_id(id: &str) -> bool {
    id_problem(id).is_none()
}

/// The rule `id` breaks, if any.
fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_ID_BYTES {
        Some("it is longer than 256 bytes")
    } else if id.contains('/') || id.contains('\\') {
        Some("it contains a path separator")
    } else if id.contains("..") || id == "." {
        Some("it contains a parent-folder reference")
    } else if id.chars().any(|c| c.is_control()) {
        Some("it contains NUL or a control character")
    } else {
        None
    }
}

/// The separator between a long id's kept prefix and its hash in [`derived_id`]. Not a dot, so
/// that it never forms `..` with a prefix ending in one.
const DERIVED_MARK: char = '~';

/// Hex digits of the hash in a shortened [`derived_id`] (128 bits).
const DERIVED_HASH_HEX: usize = 32;

/// The id of a row derived from another row's id: `{base}{suffix}` (e.g. `m1-cleared` for the
/// reply to `/clear` message `m1`, `m1-denied` for the host's denial), valid whatever the
/// length of `base`.
///
/// When `{base}{suffix}` fits in [`MAX_ID_BYTES`] (and is a valid id), it is the result. When it
/// does not, the result is a prefix of `base` (cut at a character boundary), `~`, the 128-bit
/// FNV-1a hash of the *whole* `base` in hex, then `suffix`, at most [`MAX_ID_BYTES`] long. So
/// the result is deterministic (a retried `/clear` derives the same reply id, and the reply's
/// commit stays idempotent), stable across builds and platforms (FNV-1a is fixed by its
/// definition, unlike std's hasher), and differs for different long ids sharing a prefix.
///
/// For a valid `base` and a short plain `suffix` (letters, digits, `-`, `_`; at most 64 bytes)
/// the result is always a valid id ([`is_valid_id`]). FNV-1a is not a cryptographic hash: the
/// bases are ids the host accepted from chat platforms, not ids chosen to collide.
///
/// ```
/// use sessionbus_store::validate::{derived_id, is_valid_id, MAX_ID_BYTES};
///
/// assert_eq!(derived_id("m1", "-cleared"), "m1-cleared");
/// let long = "x".repeat(300);
/// let d = derived_id(&long, "-cleared");
/// assert!(is_valid_id(&d) && d.len() <= MAX_ID_BYTES && d.ends_with("-cleared"));
/// assert_eq!(d, derived_id(&long, "-cleared"));
/// assert_ne!(d, derived_id(&format!("{long}y"), "-cleared"));
/// ```
pub fn derived_id(base: &str, suffix: &str) -> String {
    let plain = format!("{base}{suffix}");
    if plain.len() <= MAX_ID_BYTES && (is_valid_id(&plain) || !is_valid_id(base)) {
        // Short enough; or `base` itself is invalid, and shortening would hide that from the
        // write that refuses it.
        return plain;
    }
    let room = MAX_ID_BYTES
        .saturating_sub(suffix.len())
        .saturating_sub(DERIVED_MARK.len_utf8() + DERIVED_HASH_HEX);
    let mut cut = room.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = base.get(..cut).unwrap_or_default();
    format!(
        "{prefix}{DERIVED_MARK}{:0width$x}{suffix}",
        fnv1a_128(base.as_bytes()),
        width = DERIVED_HASH_HEX
    )
}

/// The 128-bit FNV-1a hash (offset basis and prime from the FNV specification).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// Checks that `content` is JSON within the size limit.
pub fn check_content(at: impl Fn() -> At, id: &str, content: &str) -> Result<(), StoreError> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(StoreError::ContentTooLarge {
            at: at(),
            id: id.to_owned(),
            size: content.len(),
            limit: MAX_CONTENT_BYTES,
        });
    }
    // Parsed into a Value, not skipped: a number out of f64's range passes a skipping parser
    // but no reader of the content could use it (found by fuzzing).
    serde_json::from_str::<serde_json::Value>(content).map_err(|e| StoreError::InvalidContent {
        at: at(),
        id: id.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionbus_schema::Role;

    fn at() -> At {
        At::new("x", Role::Host, "test")
    }

    #[test]
    fn ids_that_could_escape_a_folder_are_refused() {
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            ".",
            "a\0b",
            "a\nb",
            "a\\b",
            &"x".repeat(257),
        ] {
            assert!(check_id(at, bad).is_err(), "{bad:?}");
        }
        for good in ["msg-1", "1712345678.000100", "Ab_9:x@y", "ünïcode"] {
            assert!(check_id(at, good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn content_must_be_json_within_the_limit() {
        assert!(check_content(at, "m", r#"{"text":"hi"}"#).is_ok());
        assert!(matches!(
            check_content(at, "m", "not json"),
            Err(StoreError::InvalidContent { .. })
        ));
        assert!(matches!(
            check_content(
                at,
                "m",
                "6666666666666666662E436666666666666666349197369905426666"
            ),
            Err(StoreError::InvalidContent { .. })
        ));
        let huge = format!("\"{}\"", "a".repeat(MAX_CONTENT_BYTES));
        assert!(matches!(
            check_content(at, "m", &huge),
            Err(StoreError::ContentTooLarge { .. })
        ));
    }

    #[test]
    fn fnv1a_128_matches_the_reference_vectors() {
        // Pinned: derived ids must not change between builds (a retried `/clear` must derive
        // the id its first attempt wrote). Values of FNV-1a 128 as published.
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        assert_eq!(
            fnv1a_128(b"foobar"),
            0x343e_1662_793c_64bf_6f0d_3597_ba44_6f18
        );
    }

    #[test]
    fn derived_ids_are_valid_deterministic_and_distinct_at_every_length() {
        for suffix in ["-cleared", "-denied"] {
            for len in [1, 200, 248, 249, 250, 256, 300, 4096] {
                for fill in ["x", "é", "ab."] {
                    let base: String = fill.repeat(len).chars().take(len).collect();
                    if !is_valid_id(&base) {
                        continue;
                    }
                    let d = derived_id(&base, suffix);
                    assert!(is_valid_id(&d), "{len} {fill}: {d:?}");
                    assert!(d.ends_with(suffix));
                    assert_eq!(d, derived_id(&base, suffix));
                    // A different long id with the same prefix derives a different id.
                    let other = format!("{base}z");
                    assert_ne!(d, derived_id(&other, suffix), "{len} {fill}");
                    if base.len() + suffix.len() <= MAX_ID_BYTES {
                        assert_eq!(d, format!("{base}{suffix}"));
                    } else {
                        assert!(d.contains(DERIVED_MARK), "{d}");
                    }
                }
            }
        }
        // A prefix ending in a dot never meets the suffix's or the mark's neighbour as `..`.
        let dotted = format!("{}.", "a".repeat(260));
        assert!(is_valid_id(&derived_id(&dotted, "-cleared")));
        // A base that ends in a dot with a suffix that starts with one: shortened, still valid.
        assert!(is_valid_id(&derived_id("m.", ".x")));
    }

    proptest::proptest! {
        #[test]
        fn derived_ids_of_valid_ids_are_valid(base in "[a-zA-Z0-9_.:@é-]{1,400}") {
            proptest::prop_assume!(is_valid_id(&base));
            let d = derived_id(&base, "-cleared");
            proptest::prop_assert!(is_valid_id(&d), "{:?}", d);
        }

        #[test]
        fn content_check_never_panics(s in ".{0,200}") {
            let _ = check_content(at, "m", &s);
        }
    }
}
