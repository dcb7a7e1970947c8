//! The command gate never panics; text not starting with `/` always passes; the admin check
//! is consulted only for admin commands.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessionbus_runtime::gate::{classify, GateDecision, ADMIN_COMMANDS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let asked = std::cell::Cell::new(false);
    let decision = classify(text, || {
        asked.set(true);
        data.len() % 2 == 0
    });
    if !text.trim_start().starts_with('/') {
        assert_eq!(decision, GateDecision::Pass);
        assert!(!asked.get());
    }
    if let GateDecision::Deny { command, .. } = &decision {
        assert!(ADMIN_COMMANDS.contains(&command.as_str()));
    }
});
