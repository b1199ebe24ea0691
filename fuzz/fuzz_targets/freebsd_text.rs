//! Fuzz target: the FreeBSD text parsers jailtx keeps (`mount -p`, fstab(5),
//! `jls --libxo=json`, its own jail.conf lines) never panic, and a `mount -p`
//! line printed as putfsent() prints it reads back as the names it holds.
#![no_main]

use jailtx::host::freebsd::{parse_fstab, parse_jls, parse_mount_p};
use jailtx::host::freebsd_conf::parse_conf;
use jailtx::host::freebsd_mnt::putfsent_pad;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_mount_p(text);
    let _ = parse_fstab(text);
    let _ = parse_jls(text);
    let _ = parse_conf(text, "ns");

    // Two names from the input: a device shorter than 24 bytes (so tabs
    // pad it) and a mount point, either with spaces inside, no tab, no
    // control character, no blank at either end; a device starting with
    // `#` would make a comment line, which `mount -p` readers skip.
    let Some((src, dst)) = text.split_once('\0') else {
        return;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && !s.chars().any(|c| c.is_control())
            && !s.starts_with(' ')
            && !s.ends_with(' ')
    };
    if !plain(src)
        || !plain(dst)
        || src.len() >= 24
        || src.starts_with('#')
        || !dst.starts_with('/')
    {
        return;
    }
    let line = format!(
        "{src}{}{dst}{}nullfs\tro\t\t0 0\n",
        putfsent_pad(src.len()),
        putfsent_pad(dst.len())
    );
    let m = parse_mount_p(&line);
    assert_eq!(m.len(), 1, "{line:?}");
    assert_eq!(m[0].src.to_str(), Some(src), "{line:?}");
    assert_eq!(m[0].dst.to_str(), Some(dst), "{line:?}");
    assert_eq!(
        (m[0].fstype.as_str(), m[0].options.as_str()),
        ("nullfs", "ro")
    );
});
