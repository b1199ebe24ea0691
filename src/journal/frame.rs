//! Byte framing: the file header and the length/tag/checksum frame around each
//! record, and the scan that tells a torn tail from corruption.
//!
//! See `journal-format/README.md` for the byte tables and the argument for the
//! torn-tail rule implemented in [`scan`].

use super::record::Record;

/// Bytes of the file header.
pub const HEADER_LEN: u64 = 16;
/// Bytes of a frame header (length, tag, checksum).
pub const FRAME_HEADER_LEN: usize = 13;
/// Largest payload a frame may carry; larger declared lengths are damage.
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

pub const JOURNAL_MAGIC: [u8; 8] = *b"JAILTXJ\0";
pub const HISTORY_MAGIC: [u8; 8] = *b"JAILTXH\0";

/// The 16-byte file header for a file with `magic`.
pub fn header(magic: [u8; 8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&magic);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // bytes 10..12 are reserved and zero
    let sum = blake3::hash(&h[..12]);
    h[12..16].copy_from_slice(&sum.as_bytes()[..4]);
    h
}

/// The frame checksum: the first 8 bytes (LE u64) of BLAKE3 over the length
/// field, the tag and the payload, so a damaged length or tag fails it too.
pub fn checksum(len: u32, tag: u8, payload: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&[tag]);
    h.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

/// One record framed for appending.
pub fn encode(record: &Record) -> Result<Vec<u8>, postcard::Error> {
    let payload = record.encode_payload()?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD)
        .ok_or(postcard::Error::SerializeBufferFull)?;
    let tag = record.tag();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(&checksum(len, tag, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Why a file cannot be read. Offsets are byte offsets into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    ShortHeader {
        len: u64,
    },
    BadMagic,
    BadVersion {
        version: u16,
    },
    BadHeaderChecksum,
    /// A damaged frame that is not the file's last write.
    Corrupt {
        offset: u64,
        why: &'static str,
    },
    /// A frame whose checksum holds but whose payload does not decode: written
    /// by a different (newer?) jailtx, never by a torn write.
    Undecodable {
        offset: u64,
        tag: u8,
        why: String,
    },
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::ShortHeader { len } => {
                write!(f, "file is {len} bytes, shorter than its 16-byte header")
            }
            ScanError::BadMagic => write!(f, "not a jailtx file of this kind (bad magic)"),
            ScanError::BadVersion { version } => write!(
                f,
                "format version {version} is not {FORMAT_VERSION}; use the jailtx that wrote it"
            ),
            ScanError::BadHeaderChecksum => write!(f, "header checksum mismatch"),
            ScanError::Corrupt { offset, why } => {
                write!(f, "corrupt record at offset {offset}: {why}")
            }
            ScanError::Undecodable { offset, tag, why } => {
                write!(
                    f,
                    "record at offset {offset} (type {tag}) does not decode: {why}"
                )
            }
        }
    }
}

/// Whether a whole frame with a good checksum and a known tag starts at or
/// after offset `from` of `rest`. Only run on damage, over at most one
/// transaction's journal.
fn valid_frame_from(rest: &[u8], from: usize) -> bool {
    (from..rest.len()).any(|at| {
        let r = &rest[at..];
        if r.len() < FRAME_HEADER_LEN {
            return false;
        }
        let plen = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let extent = FRAME_HEADER_LEN + plen as usize;
        if plen > MAX_PAYLOAD || extent > r.len() {
            return false;
        }
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&r[5..13]);
        let payload = &r[FRAME_HEADER_LEN..extent];
        checksum(plen, r[4], payload) == u64::from_le_bytes(sum)
            && matches!(Record::decode_payload(r[4], payload), Some(Ok(_)))
    })
}

/// The records of a file, where they end, and the torn tail if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Each record with the offset of its frame.
    pub records: Vec<(u64, Record)>,
    /// The end of the last whole record: where the next append goes.
    pub valid_len: u64,
    /// Bytes after `valid_len`: an unfinished final write, to be trimmed.
    pub torn_bytes: u64,
}

/// Reads a whole file image. A damaged frame is a torn tail (the interrupted
/// last append) only when it must have been the last write: its header is cut
/// short by the end of file, its declared extent reaches the end of file, or
/// every byte from it to the end is zero (the size grew before the data did).
/// Anything else is corruption.
pub fn scan(bytes: &[u8], magic: [u8; 8]) -> Result<Scan, ScanError> {
    let len = bytes.len() as u64;
    if len < HEADER_LEN {
        return Err(ScanError::ShortHeader { len });
    }
    if bytes[..8] != magic {
        return Err(ScanError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if bytes[12..16] != blake3::hash(&bytes[..12]).as_bytes()[..4] {
        return Err(ScanError::BadHeaderChecksum);
    }
    if version != FORMAT_VERSION {
        return Err(ScanError::BadVersion { version });
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let offset = at as u64;
        let torn = || Scan {
            records: Vec::new(),
            valid_len: offset,
            torn_bytes: len - offset,
        };
        let zero_tail = rest.iter().all(|b| *b == 0);
        if rest.len() < FRAME_HEADER_LEN {
            return Ok(Scan { records, ..torn() });
        }
        let plen = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let tag = rest[4];
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&rest[5..13]);
        let sum = u64::from_le_bytes(sum);
        let extent = FRAME_HEADER_LEN as u64 + u64::from(plen);
        let damage = if plen > MAX_PAYLOAD {
            Some("length beyond the 16 MiB limit")
        } else if extent > rest.len() as u64 {
            Some("frame extends past the end of file")
        } else if checksum(plen, tag, &rest[FRAME_HEADER_LEN..extent as usize]) != sum {
            Some("checksum mismatch")
        } else {
            None
        };
        if let Some(why) = damage {
            let reaches_eof = plen <= MAX_PAYLOAD && extent >= rest.len() as u64;
            // A damaged length can make a frame in the middle look like it
            // runs to the end of file; a whole, valid frame after it proves
            // the damage is not the last write.
            // Searched from the next byte, not past the declared extent: the
            // length itself may be the damaged field. A torn frame whose own
            // payload embeds a valid frame is then refused, not trimmed; that
            // errs towards asking the operator, never towards silently
            // dropping a pending transaction (journal-format, known gaps).
            if (reaches_eof || zero_tail) && !valid_frame_from(rest, 1) {
                return Ok(Scan { records, ..torn() });
            }
            return Err(ScanError::Corrupt { offset, why });
        }
        let payload = &rest[FRAME_HEADER_LEN..extent as usize];
        match Record::decode_payload(tag, payload) {
            None => {
                return Err(ScanError::Undecodable {
                    offset,
                    tag,
                    why: "unknown record type".into(),
                });
            }
            Some(Err(e)) => {
                return Err(ScanError::Undecodable {
                    offset,
                    tag,
                    why: e.to_string(),
                });
            }
            Some(Ok(r)) => records.push((offset, r)),
        }
        at += extent as usize;
    }
    Ok(Scan {
        records,
        valid_len: len,
        torn_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{Commit, StepMark};

    fn file(records: &[Record]) -> Vec<u8> {
        let mut out = header(JOURNAL_MAGIC).to_vec();
        for r in records {
            out.extend(encode(r).unwrap());
        }
        out
    }

    fn two() -> Vec<Record> {
        vec![
            Record::StepIntent(StepMark { tx: 1, step: 0 }),
            Record::Commit(Commit { tx: 1 }),
        ]
    }

    #[test]
    fn round_trip() {
        let s = scan(&file(&two()), JOURNAL_MAGIC).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[1].1, two()[1]);
        assert_eq!(s.torn_bytes, 0);
    }

    #[test]
    fn every_truncation_of_the_last_frame_is_a_torn_tail() {
        let whole = file(&two());
        let first_end = file(&two()[..1]).len();
        for cut in first_end..whole.len() {
            let s = scan(&whole[..cut], JOURNAL_MAGIC).unwrap();
            assert_eq!(s.records.len(), 1, "cut at {cut}");
            assert_eq!(s.valid_len, first_end as u64);
            assert_eq!(s.torn_bytes, (cut - first_end) as u64);
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut f = file(&two());
        f.extend([0u8; 100]);
        let s = scan(&f, JOURNAL_MAGIC).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.torn_bytes, 100);
    }

    #[test]
    fn flipped_bit_before_the_last_frame_is_corruption() {
        let mut f = file(&two());
        let at = HEADER_LEN as usize + FRAME_HEADER_LEN; // first payload byte
        f[at] ^= 1;
        assert_eq!(
            scan(&f, JOURNAL_MAGIC),
            Err(ScanError::Corrupt {
                offset: HEADER_LEN,
                why: "checksum mismatch"
            })
        );
    }

    #[test]
    fn header_damage_is_refused() {
        let mut f = file(&two());
        f[9] = 7;
        assert_eq!(scan(&f, JOURNAL_MAGIC), Err(ScanError::BadHeaderChecksum));
        assert_eq!(scan(&file(&[]), HISTORY_MAGIC), Err(ScanError::BadMagic));
        assert_eq!(
            scan(&[1, 2], JOURNAL_MAGIC),
            Err(ScanError::ShortHeader { len: 2 })
        );
    }

    #[test]
    fn unknown_tag_with_good_checksum_is_refused() {
        let mut f = header(JOURNAL_MAGIC).to_vec();
        f.extend(1u32.to_le_bytes());
        f.push(200);
        f.extend(checksum(1, 200, &[0]).to_le_bytes());
        f.push(0);
        assert!(matches!(
            scan(&f, JOURNAL_MAGIC),
            Err(ScanError::Undecodable { tag: 200, .. })
        ));
    }
}
