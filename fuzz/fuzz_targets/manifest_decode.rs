//! Fuzz target: arbitrary bytes through `Manifest::decode`, raw and sealed with a sound header and checksum; must error, never panic, and round-trip what it accepts.
#![no_main]

use jailtx::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        check(&m);
    }
    // Raw bytes almost never carry a sound BLAKE3 checksum. Read the input as
    // `content length (u16 LE), content, stat cache` and seal it the way the
    // writer does (layout in src/manifest/format.rs), so the postcard and
    // invariant layers see arbitrary sections.
    if let Ok(m) = Manifest::decode(&seal(data)) {
        check(&m);
    }
});

fn seal(data: &[u8]) -> Vec<u8> {
    let (c_len, body) = match data {
        [lo, hi, body @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), body),
        _ => (0, data),
    };
    let (content, stats) = body.split_at(c_len.min(body.len()));
    let mut out = b"JTXMANIF".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(content.len() as u64).to_le_bytes());
    out.extend_from_slice(content);
    out.extend_from_slice(&(stats.len() as u64).to_le_bytes());
    out.extend_from_slice(stats);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// What a decoded manifest promises: every entry is found at its own index,
/// hard links resolve, and encoding it again decodes to the same manifest.
fn check(m: &Manifest) {
    for (i, e) in m.entries.iter().enumerate() {
        assert_eq!(
            m.find(&e.path),
            Some(i),
            "entry {i} is not found by its path"
        );
        let _ = m.resolve(i);
    }
    let _ = (m.id(), m.file_bytes());
    match m.encode() {
        Ok(bytes) => match Manifest::decode(&bytes) {
            Ok(again) => assert_eq!(&again, m, "a re-encoded manifest decodes differently"),
            Err(e) => panic!("a re-encoded manifest does not decode: {e}"),
        },
        Err(e) => panic!("a decoded manifest does not encode: {e}"),
    }
}
