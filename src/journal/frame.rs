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
/// Owned by the plan layer, which sizes every plan against it.
pub const MAX_PAYLOAD: u32 = crate::plan::MAX_PAYLOAD;
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

/// Bytes read at a time while scanning, and while looking back from the end
/// of file for where its zero tail starts.
const CHUNK: usize = 1 << 16;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Most bytes the search for a sound frame after a damaged one may hash
/// before it gives up and refuses the file (journal-format 7.2). Only a
/// crafted tail of overlapping frame headers comes near it: a torn append
/// hashes a few bytes per candidate, and a small file cannot reach it at all
/// (all its candidates together hash less than half the square of its
/// size: no file under about 22 KiB can reach it).
pub const RESYNC_HASH_BUDGET: u64 = 256 << 20;

/// Where a scan reads its bytes from: a file image in memory, or a file
/// through the journal's [`Storage`](super::Storage) seam.
pub trait Source {
    type Error;
    /// The file's size in bytes.
    fn size(&self) -> Result<u64, Self::Error>;
    /// Fills `buf` from `offset`; callers stay within [`Source::size`].
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
}

impl Source for [u8] {
    type Error = std::convert::Infallible;
    fn size(&self) -> Result<u64, Self::Error> {
        Ok(self.len() as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        buf.copy_from_slice(&self[at..at + buf.len()]);
        Ok(())
    }
}

/// Why a streamed scan stopped: the source failed, or the file is refused.
#[derive(Debug)]
pub enum ScanFailure<E> {
    Read(E),
    Scan(ScanError),
}

impl<E> From<ScanError> for ScanFailure<E> {
    fn from(e: ScanError) -> Self {
        ScanFailure::Scan(e)
    }
}

/// A forward-moving window on a [`Source`]: holds at most one chunk or one
/// whole frame (13 bytes + [`MAX_PAYLOAD`]), whatever the file's size.
struct Window<'a, R: Source + ?Sized> {
    src: &'a R,
    len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a, R: Source + ?Sized> Window<'a, R> {
    /// Bytes `offset..offset + n`, which the caller keeps within the file.
    fn get(&mut self, offset: u64, n: usize) -> Result<&[u8], R::Error> {
        let held = self.start + self.buf.len() as u64;
        if offset < self.start || offset + n as u64 > held {
            let want = (n.max(CHUNK) as u64).min(self.len - offset) as usize;
            self.buf.clear();
            self.buf.resize(want, 0);
            self.src.read_at(offset, &mut self.buf)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// The offset where the file's trailing run of zero bytes starts, looked for
/// backwards from the end and no further back than `from` (`from` itself
/// when every byte from it on is zero). Reads each byte of the zero run once.
fn zero_run_start<R: Source + ?Sized>(src: &R, from: u64, len: u64) -> Result<u64, R::Error> {
    let mut buf = vec![0u8; CHUNK];
    let mut end = len;
    while end > from {
        let n = (end - from).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..n];
        src.read_at(end - n as u64, chunk)?;
        // A comparison with zeros (memcmp) runs at memory speed; the byte
        // search only runs on the one chunk that holds the run's start.
        if *chunk == ZEROS[..n] {
            end -= n as u64;
            continue;
        }
        if let Some(last) = chunk.iter().rposition(|b| *b != 0) {
            return Ok(end - n as u64 + last as u64 + 1);
        }
        end -= n as u64;
    }
    Ok(from)
}

/// Whether a sound frame (whole, checksum good, payload decoding for its
/// tag) starts at an offset `from..nonzero_end` of `rest`, or the search
/// would hash more than [`RESYNC_HASH_BUDGET`] bytes (taken as found: the
/// damage is then refused, never trimmed). No frame can start at or past
/// `nonzero_end`, where every byte to the end of file is zero: its tag
/// would be 0, which no record kind has.
fn sound_frame_from(rest: &[u8], from: usize, nonzero_end: usize) -> bool {
    let mut hashed = 0u64;
    (from..nonzero_end.min(rest.len())).any(|at| {
        let r = &rest[at..];
        if r.len() < FRAME_HEADER_LEN {
            return false;
        }
        let plen = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let extent = FRAME_HEADER_LEN + plen as usize;
        // An unknown tag never decodes, whatever the checksum says: no need
        // to hash its payload.
        if plen > MAX_PAYLOAD || extent > r.len() || Record::decode_payload(r[4], &[]).is_none() {
            return false;
        }
        hashed += extent as u64;
        if hashed > RESYNC_HASH_BUDGET {
            return true;
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

/// Reads a whole file image: [`scan_source`] over bytes in memory.
pub fn scan(bytes: &[u8], magic: [u8; 8]) -> Result<Scan, ScanError> {
    scan_source(bytes, magic).map_err(|e| match e {
        ScanFailure::Scan(e) => e,
        ScanFailure::Read(never) => match never {},
    })
}

/// Reads a file front to back, a frame at a time. A damaged frame is a torn
/// tail (the interrupted last append) only when it must have been the last
/// write: its header is cut short by the end of file, its declared extent
/// reaches the end of file, or every byte from it to the end is zero (the
/// size grew before the data did); and no sound frame starts after it.
/// Anything else is corruption.
///
/// Linear in the file's size, and its memory is bounded by one frame
/// whatever that size: a zero tail is found by one pass back from the end of
/// file (and holds no frame to look for), and the search for a sound frame
/// after damage runs only when the damaged frame's extent reaches the end of
/// file, so over at most one frame's bytes.
pub fn scan_source<R: Source + ?Sized>(
    src: &R,
    magic: [u8; 8],
) -> Result<Scan, ScanFailure<R::Error>> {
    let len = src.size().map_err(ScanFailure::Read)?;
    if len < HEADER_LEN {
        return Err(ScanError::ShortHeader { len }.into());
    }
    let mut w = Window {
        src,
        len,
        buf: Vec::new(),
        start: 0,
    };
    let mut h = [0u8; HEADER_LEN as usize];
    h.copy_from_slice(w.get(0, HEADER_LEN as usize).map_err(ScanFailure::Read)?);
    if h[..8] != magic {
        return Err(ScanError::BadMagic.into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if h[12..16] != blake3::hash(&h[..12]).as_bytes()[..4] {
        return Err(ScanError::BadHeaderChecksum.into());
    }
    if version != FORMAT_VERSION {
        return Err(ScanError::BadVersion { version }.into());
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    while at < len {
        let rest = len - at;
        let torn = |records| Scan {
            records,
            valid_len: at,
            torn_bytes: rest,
        };
        if rest < FRAME_HEADER_LEN as u64 {
            return Ok(torn(records));
        }
        let mut fh = [0u8; FRAME_HEADER_LEN];
        fh.copy_from_slice(w.get(at, FRAME_HEADER_LEN).map_err(ScanFailure::Read)?);
        let plen = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]);
        let tag = fh[4];
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&fh[5..13]);
        let sum = u64::from_le_bytes(sum);
        let extent = FRAME_HEADER_LEN as u64 + u64::from(plen);
        let damage = if plen > MAX_PAYLOAD {
            Some("length beyond the 16 MiB limit")
        } else if extent > rest {
            Some("frame extends past the end of file")
        } else {
            let payload = w
                .get(at + FRAME_HEADER_LEN as u64, plen as usize)
                .map_err(ScanFailure::Read)?;
            (checksum(plen, tag, payload) != sum).then_some("checksum mismatch")
        };
        if let Some(why) = damage {
            if is_torn(&mut w, at, plen).map_err(ScanFailure::Read)? {
                return Ok(torn(records));
            }
            return Err(ScanError::Corrupt { offset: at, why }.into());
        }
        let payload = w
            .get(at + FRAME_HEADER_LEN as u64, plen as usize)
            .map_err(ScanFailure::Read)?;
        match Record::decode_payload(tag, payload) {
            None => {
                return Err(ScanError::Undecodable {
                    offset: at,
                    tag,
                    why: "unknown record type".into(),
                }
                .into());
            }
            Some(Err(e)) => {
                return Err(ScanError::Undecodable {
                    offset: at,
                    tag,
                    why: e.to_string(),
                }
                .into());
            }
            Some(Ok(r)) => records.push((at, r)),
        }
        at += extent;
    }
    Ok(Scan {
        records,
        valid_len: len,
        torn_bytes: 0,
    })
}

/// Whether the damaged frame at `at` (declaring `plen` payload bytes) is the
/// file's interrupted last append: rules 2 and 3 of journal-format 7.2, and
/// no sound frame after it.
fn is_torn<R: Source + ?Sized>(
    w: &mut Window<'_, R>,
    at: u64,
    plen: u32,
) -> Result<bool, R::Error> {
    let rest = w.len - at;
    let zeros = zero_run_start(w.src, at, w.len)?;
    if zeros == at {
        // Every byte from the frame on is zero, so no frame starts there.
        return Ok(true);
    }
    let reaches_eof = plen <= MAX_PAYLOAD && FRAME_HEADER_LEN as u64 + u64::from(plen) >= rest;
    if !reaches_eof {
        return Ok(false);
    }
    // A damaged length can make a frame in the middle look like it runs to
    // the end of file; a whole, sound frame after it proves the damage is
    // not the last write. Searched from the next byte, not past the declared
    // extent: the length itself may be the damaged field. A torn frame whose
    // own payload embeds a sound frame is then refused, not trimmed; that
    // errs towards asking the operator, never towards silently dropping a
    // pending transaction (journal-format, known gaps). The extent reaches
    // the end of file, so `rest` is at most one frame long.
    let bytes = w.get(at, rest as usize)?;
    Ok(!sound_frame_from(bytes, 1, (zeros - at) as usize))
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

    /// A source that counts what is read from it, and the largest read.
    struct Counting {
        bytes: Vec<u8>,
        read: std::cell::Cell<u64>,
        largest: std::cell::Cell<usize>,
    }

    impl Source for Counting {
        type Error = std::convert::Infallible;
        fn size(&self) -> Result<u64, Self::Error> {
            Ok(self.bytes.len() as u64)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
            self.read.set(self.read.get() + buf.len() as u64);
            self.largest.set(self.largest.get().max(buf.len()));
            self.bytes.as_slice().read_at(offset, buf)
        }
    }

    /// Issue 12: a zero tail is read about once, a chunk at a time, and is
    /// recognised without hashing (the old scan hashed every offset of it).
    #[test]
    fn a_zero_tail_is_read_once_and_never_whole() {
        let mut f = file(&two());
        let body = f.len();
        f.resize(body + (8 << 20), 0);
        let c = Counting {
            bytes: f,
            read: Default::default(),
            largest: Default::default(),
        };
        let s = scan_source(&c, JOURNAL_MAGIC).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!((s.valid_len, s.torn_bytes), (body as u64, 8 << 20));
        assert!(
            c.read.get() < (8 << 20) + 4 * CHUNK as u64,
            "{}",
            c.read.get()
        );
        assert!(c.largest.get() <= CHUNK);
    }

    /// Rule 2 with zeros after the written part of the frame: torn, and the
    /// zeros are not searched.
    #[test]
    fn a_torn_frame_followed_by_zeros_is_torn() {
        let whole = file(&two());
        let first_end = file(&two()[..1]).len();
        let mut f = whole[..first_end + 5].to_vec();
        f.resize(whole.len() + 1000, 0);
        // The declared extent no longer reaches EOF: only rule 3 would
        // apply, and the written header bytes are not zero.
        assert!(matches!(
            scan(&f, JOURNAL_MAGIC),
            Err(ScanError::Corrupt { .. })
        ));
        f.truncate(whole.len());
        let s = scan(&f, JOURNAL_MAGIC).unwrap();
        assert_eq!((s.records.len(), s.valid_len), (1, first_end as u64));
    }

    /// A crafted tail of overlapping plausible frame headers stops the
    /// search at its hashing budget and is refused (journal-format 7.2,
    /// "Cost"), instead of hashing 256 KiB for every fifth byte.
    #[test]
    fn a_crafted_resync_tail_is_refused_within_the_budget() {
        let mut f = file(&two());
        let at = f.len();
        let rest: usize = 1 << 20;
        // The damaged frame declares an extent that reaches EOF (rule 2) ...
        let plen = (rest - FRAME_HEADER_LEN) as u32;
        f.extend(plen.to_le_bytes());
        f.push(tag_of_commit());
        f.extend([0u8; 8]);
        // ... and every fifth byte after it starts a 256 KiB candidate.
        let pattern = [0x00, 0x00, 0x04, 0x00, tag_of_commit()];
        while f.len() < at + rest {
            f.extend(pattern);
        }
        f.truncate(at + rest);
        assert!(matches!(
            scan(&f, JOURNAL_MAGIC),
            Err(ScanError::Corrupt { offset, .. }) if offset == at as u64
        ));
    }

    fn tag_of_commit() -> u8 {
        Record::Commit(Commit { tx: 1 }).tag()
    }
}
