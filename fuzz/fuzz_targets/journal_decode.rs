//! Fuzz target: arbitrary bytes through `frame::scan` (both magics) and `state::fold`, raw and re-framed with sound checksums; must error, never panic.
#![no_main]

use std::path::Path;

use jailtx::engine::summary_of;
use jailtx::journal::frame::{self, HEADER_LEN, Scan, ScanError};
use jailtx::journal::state::fold;
use jailtx::journal::{Commit, HISTORY_MAGIC, JOURNAL_MAGIC, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for magic in [JOURNAL_MAGIC, HISTORY_MAGIC] {
        if let Ok(scan) = frame::scan(data, magic) {
            check_scan(data, magic, &scan);
            check_fold(&scan);
        }
    }
    // Random bytes almost never carry a sound 64-bit checksum, so the raw pass
    // rarely reaches the payload decoders and `fold`. The same input, read as
    // `tag, len (u16 LE), payload` chunks and framed with correct checksums,
    // does.
    let image = reframe(data);
    match frame::scan(&image, JOURNAL_MAGIC) {
        Ok(scan) => {
            assert_eq!(scan.torn_bytes, 0, "sound frames read as a torn tail");
            check_scan(&image, JOURNAL_MAGIC, &scan);
            check_fold(&scan);
        }
        Err(ScanError::Undecodable { .. }) => {}
        Err(e) => panic!("sound frames refused as damage: {e}"),
    }
});

/// A journal whose frames hold the chunks of `data` as payloads, each with the
/// checksum a writer would compute. Tags are taken modulo 14, so unknown tags
/// (0, 12, 13) come up too.
fn reframe(data: &[u8]) -> Vec<u8> {
    let mut out = frame::header(JOURNAL_MAGIC).to_vec();
    let mut rest = data;
    while let [tag, lo, hi, tail @ ..] = rest {
        let tag = tag % 14;
        let want = usize::from(u16::from_le_bytes([*lo, *hi]));
        let (payload, next) = tail.split_at(want.min(tail.len()));
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_le_bytes());
        out.push(tag);
        out.extend_from_slice(&frame::checksum(len, tag, payload).to_le_bytes());
        out.extend_from_slice(payload);
        rest = next;
    }
    out
}

/// The invariants `Log::open` relies on when it trims and appends.
fn check_scan(data: &[u8], magic: [u8; 8], scan: &Scan) {
    let len = data.len() as u64;
    assert_eq!(
        scan.valid_len + scan.torn_bytes,
        len,
        "extents do not add up"
    );
    assert!(scan.valid_len >= HEADER_LEN, "valid_len inside the header");
    let mut next = HEADER_LEN;
    for (offset, _) in &scan.records {
        assert!(
            *offset >= next && *offset < scan.valid_len,
            "record offset {offset} out of order"
        );
        next = offset + 1;
    }

    // Trimming the torn tail must not change what the file says.
    let valid_len = usize::try_from(scan.valid_len).unwrap_or(data.len());
    let trimmed = &data[..valid_len];
    match frame::scan(trimmed, magic) {
        Ok(again) => {
            assert_eq!(again.records, scan.records, "trimming changed the records");
            assert_eq!(again.torn_bytes, 0, "a trimmed file still has a torn tail");
        }
        Err(e) => panic!("the trimmed file no longer scans: {e}"),
    }

    // An append after the trim (the next write `Log` makes) is read back whole.
    let tx = scan.records.last().map_or(1, |(_, r)| r.tx());
    let extra = Record::Commit(Commit { tx });
    let Ok(frame_bytes) = frame::encode(&extra) else {
        panic!("a commit record does not encode");
    };
    let mut appended = trimmed.to_vec();
    appended.extend_from_slice(&frame_bytes);
    match frame::scan(&appended, magic) {
        Ok(again) => {
            assert_eq!(
                again.records.len(),
                scan.records.len() + 1,
                "append lost records"
            );
            assert_eq!(again.records.last().map(|(_, r)| r), Some(&extra));
        }
        Err(e) => panic!("an append after the trim does not scan: {e}"),
    }

    // Every decoded record re-encodes, and the re-encoded file decodes to the
    // same records (byte equality is not required: postcard reads
    // non-minimal varints that it never writes).
    let mut image = frame::header(magic).to_vec();
    for (_, record) in &scan.records {
        match frame::encode(record) {
            Ok(bytes) => image.extend_from_slice(&bytes),
            Err(e) => panic!("a decoded record does not re-encode: {e}"),
        }
    }
    match frame::scan(&image, magic) {
        Ok(again) => {
            let a: Vec<_> = again.records.iter().map(|(_, r)| r).collect();
            let b: Vec<_> = scan.records.iter().map(|(_, r)| r).collect();
            assert_eq!(a, b, "re-encoding changed the records");
        }
        Err(e) => panic!("the re-encoded file does not scan: {e}"),
    }
}

/// Folding must refuse or succeed; the folded state must answer every question.
fn check_fold(scan: &Scan) {
    let Ok(txs) = fold(Path::new("fuzz"), &scan.records) else {
        return;
    };
    for tx in &txs {
        let status = tx.status();
        let _ = (status.can_resume(), status.can_roll_back());
        assert!(tx.first_not_done() <= tx.begin.plan.steps.len());
        let _ = summary_of(tx);
        let _ = tx.begin.plan.to_string();
        let _ = tx.begin.plan.validate();
    }
}
