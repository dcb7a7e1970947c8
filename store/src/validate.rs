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

    proptest::proptest! {
        #[test]
        fn content_check_never_panics(s in ".{0,200}") {
            let _ = check_content(at, "m", &s);
        }
    }
}
