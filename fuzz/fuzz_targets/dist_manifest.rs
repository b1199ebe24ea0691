//! Fuzz target: arbitrary bytes through the FreeBSD release MANIFEST parser; must error, never panic, and what it accepts must print back (as make-manifest.sh prints) to text that parses the same.
#![no_main]

use jailtx::world::distmanifest::{DistEntry, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = parse(data) else {
        return;
    };
    let text: String = entries.iter().map(line).collect();
    assert_eq!(parse(text.as_bytes()).as_ref(), Ok(&entries), "{text:?}");
    for e in &entries {
        // A listed name is a file name, looked up as one.
        assert!(!e.name.is_empty() && !e.name.contains('/'), "{e:?}");
        assert!(e.name != "." && e.name != "..", "{e:?}");
        assert_eq!(
            entries.iter().filter(|x| x.name == e.name).count(),
            1,
            "{e:?} listed once"
        );
    }
});

fn line(e: &DistEntry) -> String {
    let hex: String = e.sha256.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}\t{hex}\t{}\t{}\t\"{}\"\t{}\n",
        e.name,
        e.entries,
        e.dist,
        e.description,
        if e.default { "on" } else { "off" }
    )
}
