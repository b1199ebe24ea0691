//! Parsing Linux's `/proc/self/mountinfo`, taken as text so tests can feed fixtures.

use std::path::PathBuf;

/// The mount points listed in a mountinfo text, in order (a path can appear
/// more than once when mounts are stacked).
pub fn mount_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 8:1 /home/j/mroot /home/j/ns ro,relatime - ext4 /dev/vda rw
41 40 8:1 /home/js/ns /home/j/ns/s rw,relatime - ext4 /dev/vda rw
42 22 0:5 / /tmp/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_points_and_escapes() {
        let p = mount_points(SAMPLE);
        assert_eq!(p.len(), 4);
        assert_eq!(p[1], PathBuf::from("/home/j/ns"));
        assert_eq!(p[2], PathBuf::from("/home/j/ns/s"));
        assert_eq!(p[3], PathBuf::from("/tmp/with space"));
    }
}
