//! Fuzz target: arbitrary UTF-8 through `Config::parse`; must return a config or an error, never panic.
#![no_main]

use std::path::Path;

use jailtx::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(config) = Config::parse(text, path) else {
        return;
    };
    // A config that parsed is written back as TOML and reads the same.
    let Ok(again) = toml::to_string(&config) else {
        panic!("a parsed config does not serialize");
    };
    match Config::parse(&again, path) {
        Ok(back) => assert_eq!(back, config, "config changed through a TOML round trip"),
        Err(e) => panic!("a serialized config does not parse: {e}\n{again}"),
    }
});
