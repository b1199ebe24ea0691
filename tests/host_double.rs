//! The recording host double driven by the engine: the calls a plan of mounts
//! and a jail start makes, in order, and what is asked to undo them when the
//! Nth call fails (SPEC: a failing step rolls back in reverse, exit 1).

mod support;

use std::path::{Path, PathBuf};

use jailtx::engine::{Action, Engine, EngineError, Plan};
use jailtx::host::recording::{Call, RecordingHost};
use jailtx::host::{Host, JailSpec};
use jailtx::journal::{MemDiskHandle, MemStorage};
use support::plans::mem_engine;

fn jail() -> JailSpec {
    JailSpec {
        name: "ns".into(),
        path: PathBuf::from("/base/j/ns"),
        hostname: "ns.example.org".into(),
        ip: "127.0.0.17".into(),
        exec_start: "/bin/sh /etc/rc".into(),
        exec_stop: "/bin/sh /etc/rc.shutdown".into(),
        stop_timeout_secs: 10,
    }
}

/// `jailtx start ns` in miniature: template read-only, the jail's own part
/// read-write on `s`, then the jail.
fn start_plan() -> Plan {
    let mut p = Plan::new("start", "start ns");
    p.push(
        "mount-root-ns",
        Action::Mount {
            src: "/base/j/mroot".into(),
            dst: "/base/j/ns".into(),
            read_only: true,
        },
    );
    p.push(
        "mount-s-ns",
        Action::Mount {
            src: "/base/js/ns".into(),
            dst: "/base/j/ns/s".into(),
            read_only: false,
        },
    );
    p.push("start-ns", Action::StartJail { jail: jail() });
    p
}

fn forward() -> Vec<Call> {
    vec![
        Call::Mount {
            src: "/base/j/mroot".into(),
            dst: "/base/j/ns".into(),
            read_only: true,
        },
        Call::Mount {
            src: "/base/js/ns".into(),
            dst: "/base/j/ns/s".into(),
            read_only: false,
        },
        Call::StartJail("ns".into()),
    ]
}

fn engine(host: &RecordingHost) -> Engine<MemStorage> {
    mem_engine(&MemDiskHandle::new(), Box::new(host.clone())).expect("open engine")
}

#[test]
fn a_plan_asks_the_host_in_plan_order() {
    let host = RecordingHost::new();
    engine(&host).run(start_plan()).expect("run");
    assert_eq!(host.calls(), forward());
    assert!(host.is_mounted(Path::new("/base/j/ns")).unwrap());
    assert!(host.is_mounted(Path::new("/base/j/ns/s")).unwrap());
    let running = host.running().unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].name.as_str(), running[0].path.as_path()),
        ("ns", Path::new("/base/j/ns"))
    );
    // Run again: every step finds its effect there and asks for nothing new
    // that changes the model (a start of a running jail is a no-op).
    engine(&host).run(start_plan()).expect("second run");
    assert_eq!(host.running().unwrap().len(), 1);
}

#[test]
fn a_failing_call_is_undone_in_reverse_and_nothing_is_left() {
    for n in 1..=3 {
        let host = RecordingHost::new();
        host.fail_call(n);
        let err = engine(&host)
            .run(start_plan())
            .expect_err("the Nth call fails");
        assert!(
            matches!(err, EngineError::RolledBack { .. }),
            "call {n}: {err}"
        );
        let calls = host.calls();
        // The forward calls up to the failing one, in plan order...
        assert_eq!(calls[..n], forward()[..n], "call {n}");
        // ...then only undo calls, newest first, for every step that has an
        // intent, the failed one too (it may have half happened; the host's
        // operations are idempotent, so undoing what never happened is a
        // no-op): a stop for the start, an unmount per mount.
        let mut want = Vec::new();
        for c in forward()[..n].iter().rev() {
            want.push(match c {
                Call::Mount { dst, .. } => Call::Unmount(dst.clone()),
                Call::StartJail(name) => Call::StopJail(name.clone()),
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(calls[n..], want, "call {n}: {calls:?}");
        assert!(
            !host.is_mounted(Path::new("/base/j/ns")).unwrap(),
            "call {n}"
        );
        assert!(
            !host.is_mounted(Path::new("/base/j/ns/s")).unwrap(),
            "call {n}"
        );
        assert!(host.running().unwrap().is_empty(), "call {n}");
    }
}
