//! The host's command gate (docs/format.md §9.4): what happens to a chat message whose text is
//! a slash command, before anything is written to `messages_in`.
//!
//! - text starting with `/` is a command; its first word, lower-cased, names it;
//! - filtered commands ([`FILTERED_COMMANDS`]) are dropped silently;
//! - admin commands ([`ADMIN_COMMANDS`]) pass for an admin and are denied otherwise, with
//!   [`denial_text`] sent back to the same chat and thread;
//! - anything else passes.
//!
//! Edge cases, decided here (the older implementation leaves them open); each errs towards
//! gating, since a command the agent's CLI would still recognise must not slip past:
//!
//! - leading whitespace (spaces, tabs, newlines) is ignored: `"  /clear"` is `/clear`;
//! - case is ignored: `/CLEAR` is `/clear`;
//! - a chat platform's bot suffix is ignored: `/clear@my_bot` is `/clear` (Telegram style);
//! - the command word ends at the first whitespace: `/clear now` and `/clear\nplease` are
//!   `/clear`;
//! - empty text, whitespace only, and a lone `/` (or `/` followed by whitespace, or `/@bot`)
//!   pass: they name no command;
//! - the command reported in [`GateDecision::Filter`] and [`GateDecision::Deny`] (and quoted in
//!   the denial) is the normalised form: lower case, without the bot suffix.
//!
//! ```
//! use sessionbus_runtime::gate::{classify, GateDecision};
//!
//! assert_eq!(classify("hello", || unreachable!()), GateDecision::Pass);
//! assert_eq!(classify("/login", || unreachable!()), GateDecision::Filter { command: "/login".into() });
//! assert_eq!(classify("/clear", || true), GateDecision::Pass);
//! assert_eq!(
//!     classify("/Clear", || false),
//!     GateDecision::Deny {
//!         command: "/clear".into(),
//!         reply_text: "Permission denied: /clear requires admin access.".into(),
//!     },
//! );
//! ```

/// Commands dropped silently: they never reach the agent, and nothing is replied.
pub const FILTERED_COMMANDS: &[&str] = &[
    "/help",
    "/login",
    "/logout",
    "/doctor",
    "/config",
    "/remote-control",
];

/// Commands only an admin may send; anyone else gets [`denial_text`].
pub const ADMIN_COMMANDS: &[&str] = &["/clear", "/compact", "/context", "/cost", "/files"];

/// What the host does with one chat message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// Write the message to `messages_in` as usual.
    Pass,
    /// Drop it silently (a filtered command).
    Filter {
        /// The normalised command, e.g. `/login`.
        command: String,
    },
    /// Drop it and send `reply_text` back to the same chat and thread.
    Deny {
        /// The normalised command, e.g. `/clear`.
        command: String,
        /// The reply: `Permission denied: <command> requires admin access.`
        reply_text: String,
    },
}

/// The reply sent when a non-admin sends an admin command.
pub fn denial_text(command: &str) -> String {
    format!("Permission denied: {command} requires admin access.")
}

/// The normalised command named by `text`, if it is one: the first word after leading
/// whitespace, lower-cased, without an `@bot` suffix. `None` for text that does not start with
/// `/` (after whitespace) or whose command word is a bare `/`.
pub fn command_of(text: &str) -> Option<String> {
    let rest = text.trim_start();
    if !rest.starts_with('/') {
        return None;
    }
    let word = rest.split(char::is_whitespace).next().unwrap_or(rest);
    let word = word.split('@').next().unwrap_or(word);
    if word == "/" {
        return None;
    }
    Some(word.to_lowercase())
}

/// Classifies one message's text. `is_admin` is called at most once, and only for an admin
/// command (so a costly lookup of the sender's role is skipped for ordinary text).
pub fn classify(text: &str, is_admin: impl FnOnce() -> bool) -> GateDecision {
    let Some(command) = command_of(text) else {
        return GateDecision::Pass;
    };
    if FILTERED_COMMANDS.contains(&command.as_str()) {
        return GateDecision::Filter { command };
    }
    if ADMIN_COMMANDS.contains(&command.as_str()) && !is_admin() {
        let reply_text = denial_text(&command);
        return GateDecision::Deny {
            command,
            reply_text,
        };
    }
    GateDecision::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Classifies with a counting admin check; returns the decision and how often it was asked.
    fn run(text: &str, admin: bool) -> (GateDecision, u32) {
        let calls = Cell::new(0);
        let d = classify(text, || {
            calls.set(calls.get() + 1);
            admin
        });
        (d, calls.get())
    }

    fn filter(c: &str) -> GateDecision {
        GateDecision::Filter { command: c.into() }
    }

    fn deny(c: &str) -> GateDecision {
        GateDecision::Deny {
            command: c.into(),
            reply_text: format!("Permission denied: {c} requires admin access."),
        }
    }

    #[test]
    fn table() {
        use GateDecision::Pass;
        // (text, admin?, decision, admin-check calls)
        let cases: &[(&str, bool, GateDecision, u32)] = &[
            ("hello", false, Pass, 0),
            ("", false, Pass, 0),
            ("   ", false, Pass, 0),
            ("/", false, Pass, 0),
            ("/ clear", false, Pass, 0),
            ("/@bot", false, Pass, 0),
            ("please /clear", false, Pass, 0),
            ("//clear", false, Pass, 0),
            ("/clearly", false, Pass, 0),
            ("/unknown", false, Pass, 0),
            ("/model opus", false, Pass, 0),
            ("/help", false, filter("/help"), 0),
            ("/help", true, filter("/help"), 0),
            ("/login", false, filter("/login"), 0),
            ("/logout", false, filter("/logout"), 0),
            ("/doctor", false, filter("/doctor"), 0),
            ("/config set x", false, filter("/config"), 0),
            ("/remote-control", false, filter("/remote-control"), 0),
            ("/HELP", false, filter("/help"), 0),
            ("/help@my_bot", false, filter("/help"), 0),
            ("/clear", false, deny("/clear"), 1),
            ("/clear", true, Pass, 1),
            ("/compact", false, deny("/compact"), 1),
            ("/context", false, deny("/context"), 1),
            ("/cost", false, deny("/cost"), 1),
            ("/files", false, deny("/files"), 1),
            ("/files", true, Pass, 1),
            ("/CLEAR", false, deny("/clear"), 1),
            ("/Compact now please", false, deny("/compact"), 1),
            ("  \n\t/clear", false, deny("/clear"), 1),
            ("/clear\nand more", false, deny("/clear"), 1),
            ("/clear@my_bot", false, deny("/clear"), 1),
            ("/clear@my_bot", true, Pass, 1),
            ("/CoSt@Bot extra", false, deny("/cost"), 1),
        ];
        for (text, admin, want, want_calls) in cases {
            let (got, calls) = run(text, *admin);
            assert_eq!(&got, want, "{text:?} admin={admin}");
            assert_eq!(calls, *want_calls, "admin checks for {text:?}");
        }
    }

    #[test]
    fn denial_text_is_exact() {
        assert_eq!(
            denial_text("/clear"),
            "Permission denied: /clear requires admin access."
        );
    }

    #[test]
    fn command_of_normalises() {
        assert_eq!(command_of(" /Clear@Bot x").as_deref(), Some("/clear"));
        assert_eq!(command_of("/model").as_deref(), Some("/model"));
        assert_eq!(command_of("x /clear"), None);
        assert_eq!(command_of("/"), None);
        assert_eq!(command_of(""), None);
    }

    #[test]
    fn the_lists_do_not_overlap_and_are_normalised() {
        for c in FILTERED_COMMANDS.iter().chain(ADMIN_COMMANDS) {
            assert_eq!(command_of(c).as_deref(), Some(*c));
        }
        for c in FILTERED_COMMANDS {
            assert!(!ADMIN_COMMANDS.contains(c), "{c}");
        }
    }

    proptest::proptest! {
        #[test]
        fn classification_never_panics(text in "\\PC{0,60}", admin: bool) {
            let _ = run(&text, admin);
        }

        #[test]
        fn text_not_starting_with_slash_always_passes(text in "\\PC{0,60}", admin: bool) {
            proptest::prop_assume!(!text.trim_start().starts_with('/'));
            proptest::prop_assert_eq!(run(&text, admin), (GateDecision::Pass, 0));
        }

        #[test]
        fn admin_commands_with_any_arguments_are_gated(
            idx in 0..ADMIN_COMMANDS.len(),
            args in "(\\s\\PC{0,30})?",
            admin: bool,
        ) {
            let text = format!("{}{}", ADMIN_COMMANDS[idx].to_uppercase(), args);
            let (d, calls) = run(&text, admin);
            proptest::prop_assert_eq!(calls, 1);
            if admin {
                proptest::prop_assert_eq!(d, GateDecision::Pass);
            } else {
                proptest::prop_assert_eq!(d, deny(ADMIN_COMMANDS[idx]));
            }
        }

        #[test]
        fn only_admin_commands_consult_the_admin_check(text in "/\\PC{0,30}") {
            let (d, calls) = run(&text, false);
            let is_admin_cmd = command_of(&text)
                .is_some_and(|c| ADMIN_COMMANDS.contains(&c.as_str()));
            proptest::prop_assert_eq!(calls, u32::from(is_admin_cmd));
            proptest::prop_assert_eq!(matches!(d, GateDecision::Deny { .. }), is_admin_cmd);
        }
    }
}
