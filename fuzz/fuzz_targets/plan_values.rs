//! Fuzz target: a config and a journaled plan carrying any numbers; every range holds and every deadline derived from them is reachable, never a panic.
//!
//! Input: `len (u16 LE)`, then `len` bytes of config text, then the payload
//! of a Begin record (a plan as the journal stores it). A config that parses
//! holds only values inside the documented ranges; a plan that decodes
//! validates or is refused without panicking; and the time limits the
//! executor derives from any decoded value (stop grace, health timeout)
//! can be added to the clock, as `recover` does with whatever the journal
//! holds.
#![no_main]

use std::path::Path;
use std::time::{Duration, Instant};

use jailtx::config::{self, Config};
use jailtx::engine::Action;
use jailtx::journal::Record;
use jailtx::journal::record::tag;
use libfuzzer_sys::fuzz_target;

/// The longest the executor waits past a stop grace (the init's exit slack).
const SLACK: Duration = Duration::from_secs(2);

fn deadline_is_reachable(d: Duration) {
    let d = d.checked_add(SLACK).expect("a derived duration overflows");
    assert!(
        Instant::now().checked_add(d).is_some(),
        "a deadline {d:?} away is past the clock"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (text, payload) = rest.split_at(len);
    if let Ok(text) = std::str::from_utf8(text)
        && let Ok(cfg) = Config::parse(text, Path::new("fuzz.toml"))
    {
        assert!(config::STOP_TIMEOUT_SECS.contains(&cfg.jail.stop_timeout_secs));
        assert!(config::HEALTH_TIMEOUT_SECS.contains(&cfg.health.timeout_secs));
        assert!(config::KEEP_ARCHIVES.contains(&cfg.keep_archives));
        deadline_is_reachable(config::stop_grace(cfg.jail.stop_timeout_secs));
        deadline_is_reachable(config::health_timeout(cfg.health.timeout_secs));
    }
    let Some(Ok(Record::Begin(begin))) = Record::decode_payload(tag::BEGIN, payload) else {
        return;
    };
    let plan = begin.plan;
    let _ = plan.validate();
    let _ = plan.to_string();
    for action in plan
        .steps
        .iter()
        .map(|s| &s.action)
        .chain(plan.bystanders.iter())
    {
        match action {
            Action::StartJail { jail } | Action::StopJail { jail } => {
                deadline_is_reachable(config::stop_grace(jail.stop_timeout_secs));
            }
            Action::HealthCheck {
                jails,
                timeout_secs,
            } => {
                deadline_is_reachable(config::health_timeout(*timeout_secs));
                for (jail, _) in jails {
                    deadline_is_reachable(config::stop_grace(jail.stop_timeout_secs));
                }
            }
            _ => {}
        }
    }
});
