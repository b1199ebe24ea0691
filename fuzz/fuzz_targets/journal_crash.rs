//! Fuzz target: appends, resets and restarts on a simulated disk that loses power at a chosen sync and tears the last write; the reopened journal must hold exactly the records a model says are durable.
#![no_main]

use std::path::Path;

use jailtx::journal::{Abort, Commit, JOURNAL_MAGIC, Log, MemDiskHandle, MemStorage, Record, Scan};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "journal";

// Input: [cut, tear, (op, arg)*]. `cut`: the sync at which the power goes
// (1-based; a high value may never be reached). `tear`: how much of the write in
// flight lands (see `reboot_image`). Ops: 0, 1 append a record of a size set by
// `arg`; 2 reset to a bare header; 3 restart the process without a crash.
fuzz_target!(|data: &[u8]| {
    let [cut, tear, ops @ ..] = data else {
        return;
    };
    let disk = MemDiskHandle::new();
    disk.cut_power_at_sync(u64::from(*cut) + 1);
    let path = Path::new(NAME);
    // The records that an acknowledged append made durable and no acknowledged
    // reset has removed since.
    let mut model: Vec<Record> = Vec::new();
    let mut log = Log::open(disk.file(NAME), path, JOURNAL_MAGIC)
        .ok()
        .map(|(log, _)| log);
    // The write that the power loss interrupted: it may or may not have
    // reached the disk.
    let mut in_flight = InFlight::Nothing;
    let mut tx = 0u64;
    for op in ops.chunks(2) {
        let Some(current) = log.as_mut() else { break };
        let (kind, arg) = (op[0] % 4, op.get(1).copied().unwrap_or(0));
        let result = match kind {
            0 | 1 => {
                tx += 1;
                let record = make_record(kind, arg, tx);
                in_flight = InFlight::Append(record.clone());
                current.append(&record).map(|()| {
                    model.push(record);
                    in_flight = InFlight::Nothing;
                })
            }
            2 => {
                in_flight = InFlight::Reset;
                current.reset().map(|()| {
                    model.clear();
                    in_flight = InFlight::Nothing;
                })
            }
            _ => {
                // A restart (no power loss): every write is visible, and the
                // log reopens on exactly the acknowledged records.
                log = None;
                match Log::open(disk.file(NAME), path, JOURNAL_MAGIC) {
                    Ok((reopened, scan)) => {
                        assert_eq!(records(&scan), model, "a restart changed the journal");
                        log = Some(reopened);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            assert!(disk.is_cut(), "an I/O error with the power on: {e}");
            break;
        }
    }
    reboot(&disk, &model, in_flight, *tear);
});

/// The write in progress when the power went.
enum InFlight {
    Nothing,
    /// This record may have landed whole (then it is recovered), or in part.
    Append(Record),
    /// The truncation may have landed (then the journal is empty).
    Reset,
}

fn make_record(kind: u8, arg: u8, tx: u64) -> Record {
    if kind == 0 {
        Record::Commit(Commit { tx })
    } else {
        // Sizes from a few bytes to past a 4 KiB page.
        Record::Abort(Abort {
            tx,
            step: Some(u32::from(arg)),
            reason: "r".repeat(usize::from(arg) * 19),
        })
    }
}

fn records(scan: &Scan) -> Vec<Record> {
    scan.records.iter().map(|(_, r)| r.clone()).collect()
}

/// What the disk may hold after the power loss: the durable image plus part of
/// the write that was in flight (the header of a new file, or an append),
/// written front to back, with the rest of its extent either missing or
/// zero-filled (the size landed, the data did not); or, for a truncation in
/// flight, either size. Not modelled (section 15 of journal-format/README.md,
/// gaps 1 and 3): an append whose later blocks landed before its earlier ones,
/// and a new file's header landing in part with the rest of it zero-filled.
fn reboot_image(disk: &MemDiskHandle, tear: u8) -> Vec<u8> {
    let durable = disk.durable(NAME);
    let live = disk.live(NAME);
    if live.len() < durable.len() && durable.starts_with(&live) && tear % 2 == 1 {
        return live;
    }
    if live.len() <= durable.len() || !live.starts_with(&durable) {
        return durable;
    }
    let extra = &live[durable.len()..];
    let landed = extra.len() * usize::from(tear % 64) / 63;
    if durable.is_empty() {
        // The header of a new file: a prefix of it, or zeros.
        return match tear / 64 {
            0 => extra[..landed].to_vec(),
            _ => vec![0; landed],
        };
    }
    let mut image = durable.clone();
    image.extend_from_slice(&extra[..landed]);
    match tear / 64 {
        0 => {}
        1 => image.resize(live.len(), 0),
        2 => image.resize(durable.len() + landed.max(1), 0),
        _ => image.resize(live.len() - usize::from(landed > 0), 0),
    }
    image
}

fn reboot(disk: &MemDiskHandle, model: &[Record], in_flight: InFlight, tear: u8) {
    let image = reboot_image(disk, tear);
    let after = MemDiskHandle::from_images(&[(NAME, image.clone())]);
    let path = Path::new(NAME);
    let (mut log, scan) = match Log::open(after.file(NAME), path, JOURNAL_MAGIC) {
        Ok(opened) => opened,
        Err(e) => panic!("the journal does not reopen after a power loss: {e}\n{image:02x?}"),
    };
    let mut model = model.to_vec();
    let got = records(&scan);
    match in_flight {
        // Only the interrupted append may show up, and only whole.
        InFlight::Append(record) if got.len() == model.len() + 1 => model.push(record),
        InFlight::Reset if got.is_empty() => model.clear(),
        _ => {}
    }
    assert_eq!(got, model, "recovered records differ from the durable ones");
    // The next append after recovery lands after the durable records.
    let next = Record::Commit(Commit { tx: u64::MAX });
    if let Err(e) = log.append(&next) {
        panic!("append after recovery: {e}");
    }
    let storage: MemStorage = after.file(NAME);
    match Log::open(storage, path, JOURNAL_MAGIC) {
        Ok((_, scan)) => {
            let mut want = model.to_vec();
            want.push(next);
            assert_eq!(
                records(&scan),
                want,
                "the first append after recovery was lost"
            );
        }
        Err(e) => panic!("the journal does not reopen after recovery: {e}"),
    }
}
