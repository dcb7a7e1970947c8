//! The timestamp parser never panics, and what it accepts survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessionbus_schema::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Timestamp::parse(text) {
        let iso = t.to_iso();
        let back = Timestamp::parse(&iso).expect("own ISO output must parse");
        assert_eq!(back.unix_millis(), t.unix_millis(), "{text:?} -> {iso}");
        let _ = Timestamp::parse(&t.to_sqlite()).expect("own SQLite output must parse");
    }
});
