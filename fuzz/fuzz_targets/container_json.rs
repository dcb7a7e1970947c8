//! container.json parsing never panics on any input: it is a config or a clear error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessionbus_runtime::config::ContainerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = ContainerConfig::from_str(text, "fuzz/container.json") {
        assert!(c.max_messages_per_prompt.get() >= 1);
    }
});
