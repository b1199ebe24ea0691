//! What the commands print: tables and lines for people on stdout, or exactly
//! one JSON document on stdout with `--json`. Logs go to stderr.

use crate::cli::stdout::{out, outln};
use serde_json::json;

use crate::engine::{Direction, Plan, RecoverMode, Report};
use crate::error::Error;
use crate::journal::{Summary, TxState};

fn print_json(v: &serde_json::Value) {
    outln!("{v}");
}

pub fn error(json: bool, e: &Error, code: u8) {
    // Attention follows a document already printed (which says it all).
    if json && !matches!(e, Error::Attention(_)) {
        print_json(&json!({ "error": e.to_string(), "exit_code": code }));
    }
    eprintln!("jailtx: {e}");
}

/// A side remark: stderr, so that stdout stays one document.
pub fn note(_json: bool, msg: &str) {
    eprintln!("jailtx: {msg}");
}

pub fn plan(json: bool, plan: &Plan) {
    if json {
        print_json(&json!({ "dry_run": true, "plan": plan }));
    } else {
        out!("{plan}");
    }
}

pub fn nothing_to_do(json: bool, plan: &Plan) {
    if json {
        print_json(&json!({ "op": plan.op, "changed": false }));
    } else {
        outln!("{}: nothing to do", plan.op);
    }
}

pub fn report_line(r: &Report) -> String {
    let line = format!(
        "transaction {} ({}): {}, {} of {} steps run in {} ms",
        r.tx,
        r.op,
        r.outcome.as_str(),
        r.executed,
        r.steps,
        r.elapsed_ms
    );
    match r.notes.get("quarantined") {
        Some(q) => {
            format!("{line}; moved aside what a jail put in the way (kept, never followed): {q}")
        }
        None => line,
    }
}

pub fn report(json: bool, r: &Report) {
    if json {
        print_json(&json!({ "changed": true, "report": r }));
        return;
    }
    outln!("{}", report_line(r));
    if let Some(d) = r.notes.get("downtime_ms") {
        outln!("downtime window: {d} ms (first stop to last start and health check)");
    }
    if let (Some(max), Some(jail), Some(all)) = (
        r.notes.get("max_jail_downtime_ms"),
        r.notes.get("max_jail_downtime_jail"),
        r.notes.get("jail_downtime_ms"),
    ) {
        outln!("downtime per jail (its stop to its start): longest {max} ms ({jail}); {all}");
    }
}

/// `recover`; `m` is the `/etc` merge that follows a recovered upgrade.
pub fn recovered(json: bool, r: Option<&Report>, m: Option<&EtcMerged>) {
    match (json, r) {
        (true, r) => match m {
            Some(m) => print_json(&json!({ "recovered": r, "etc_merge": m.json() })),
            None => print_json(&json!({ "recovered": r })),
        },
        (false, Some(r)) => {
            outln!("recovered {}", report_line(r));
            if let Some(m) = m {
                m.print();
            }
        }
        (false, None) => outln!("nothing to recover"),
    }
}

/// `recover --dry-run`: what the same `recover` (with `--rollback` when
/// `mode` says so) would do with the pending transaction.
pub fn pending(json: bool, p: Option<&TxState>, mode: RecoverMode) {
    let desc = p.map(|p| {
        let will = match mode.direction(p.status()) {
            Direction::Forward => "resume",
            Direction::Backward => "roll back",
        };
        json!({
            "tx": p.tx(),
            "op": p.begin.plan.op,
            "summary": p.begin.plan.summary,
            "committed": p.committed,
            "rolling_back": p.abort.is_some(),
            "steps": p.begin.plan.steps.len(),
            "steps_done": p.done.iter().filter(|d| **d).count(),
            "will": will,
            // A damaged last frame may have been this step's intent: the
            // step may have run with nothing durable saying so, and recover
            // re-runs it (or --rollback undoes it) whether or not it did.
            "maybe_ran": p
                .intent_maybe_lost()
                .and_then(|i| p.begin.plan.steps.get(i))
                .map(|s| s.name.clone()),
        })
    });
    if json {
        print_json(&json!({ "dry_run": true, "pending": desc }));
    } else if let Some(d) = desc {
        outln!(
            "transaction {} ({}: {}) is interrupted after {} of {} steps; `jailtx recover` will {}",
            d["tx"],
            d["op"].as_str().unwrap_or(""),
            d["summary"].as_str().unwrap_or(""),
            d["steps_done"],
            d["steps"],
            d["will"].as_str().unwrap_or("")
        );
        if let Some(step) = d["maybe_ran"].as_str() {
            outln!(
                "the journal's last record was damaged and trimmed: step {step} may have run; recover re-runs it, recover --rollback undoes it"
            );
        }
    } else {
        outln!("nothing to recover");
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A template's origin in one line: id, source, signer.
pub fn origin_line(o: &crate::ops::bundle::Origin) -> String {
    let mut line = format!(
        "{} from {}",
        o.template_id.chars().take(12).collect::<String>(),
        o.source
    );
    match (&o.signer_key_id, &o.trusted_comment) {
        (Some(k), Some(c)) => line.push_str(&format!(", signed by key {k} ({})", c.escape_debug())),
        (Some(k), None) => line.push_str(&format!(", signed by key {k}")),
        _ if o.bundle.is_some() => line.push_str(", unsigned"),
        _ => {}
    }
    line
}

pub fn history(json: bool, done: &[Summary], pending: Option<&TxState>) {
    if json {
        let pending = pending.map(|p| {
            json!({ "tx": p.tx(), "op": p.begin.plan.op, "summary": p.begin.plan.summary,
                    "started_ms": p.begin.started_ms, "outcome": "pending" })
        });
        print_json(&json!({ "transactions": done, "pending": pending }));
        return;
    }
    outln!(
        "{:>5}  {:<19}  {:>8}  {:<14}  {:<11}  SUMMARY",
        "TX",
        "STARTED (UTC)",
        "MS",
        "OP",
        "OUTCOME"
    );
    for s in done {
        let mut line = s.summary.clone();
        for (k, v) in &s.notes {
            line.push_str(&format!(" {k}={v}"));
        }
        if let Some(r) = &s.reason {
            line.push_str(&format!(" (reason: {r})"));
        }
        outln!(
            "{:>5}  {:<19}  {:>8}  {:<14}  {:<11}  {}",
            s.tx,
            time(s.started_ms),
            s.ended_ms - s.started_ms,
            s.op,
            s.outcome.as_str(),
            line
        );
    }
    if let Some(p) = pending {
        outln!(
            "{:>5}  {:<19}  {:>8}  {:<14}  {:<11}  {} (run `jailtx recover`)",
            p.tx(),
            time(p.begin.started_ms),
            "-",
            p.begin.plan.op,
            "pending",
            p.begin.plan.summary
        );
    }
}

/// The exposition on stdout (also under `--dry-run --output`, which
/// writes nothing): as is, or as the `metrics` string of one JSON document.
pub fn metrics(json: bool, text: &str) {
    if json {
        print_json(&json!({ "metrics": text }));
    } else {
        out!("{text}");
    }
}

pub fn metrics_written(json: bool, path: &std::path::Path, bytes: usize) {
    if json {
        print_json(&json!({ "output": path.display().to_string(), "bytes": bytes }));
    }
}

/// `running`: the lock holder's description when the unfinished
/// transaction is being run right now, not interrupted.
pub fn status(
    json: bool,
    rows: &[crate::ops::jail::StatusRow],
    template_id: Option<&str>,
    pending: Option<&TxState>,
    running: Option<&str>,
    origin: Option<&crate::ops::bundle::Origin>,
) {
    let pending_desc = pending.map(|p| {
        json!({
            "tx": p.tx(),
            "op": p.begin.plan.op,
            "summary": p.begin.plan.summary,
            "steps": p.begin.plan.steps.len(),
            "steps_done": p.done.iter().filter(|d| **d).count(),
            "committed": p.committed,
            "rolling_back": p.abort.is_some(),
            "running": running.is_some(),
        })
    });
    if json {
        print_json(&json!({
            "jails": rows,
            "template_id": template_id,
            "pending": pending_desc,
            "template": origin,
        }));
        return;
    }
    if let Some(o) = origin {
        outln!("template: {}", origin_line(o));
    }
    outln!(
        "{:<16} {:>7}  {:<15}  {:<24} {:<8} {:<8} {:<12} PATH",
        "NAME",
        "JID",
        "IP",
        "HOSTNAME",
        "RUNNING",
        "MOUNTED",
        "TEMPLATE"
    );
    for r in rows {
        outln!(
            "{:<16} {:>7}  {:<15}  {:<24} {:<8} {:<8} {:<12} {}",
            r.name,
            r.jid.map(|j| j.to_string()).unwrap_or_else(|| "-".into()),
            r.ip,
            r.hostname,
            if r.running { "yes" } else { "no" },
            if r.mounted { "yes" } else { "no" },
            r.template
                .as_deref()
                .map(|t| &t[..t.len().min(10)])
                .unwrap_or("-"),
            r.path.display()
        );
    }
    if let Some(p) = pending {
        let what = format!(
            "transaction {} ({}: {})",
            p.tx(),
            p.begin.plan.op,
            p.begin.plan.summary
        );
        let (done, steps) = (
            p.done.iter().filter(|d| **d).count(),
            p.begin.plan.steps.len(),
        );
        if running.is_some() {
            outln!("{what} is running: {done} of {steps} steps done");
        } else {
            let run = if p.status().can_roll_back() && p.abort.is_none() {
                "run `jailtx recover` (or `jailtx recover --rollback`)"
            } else {
                "run `jailtx recover` to finish it"
            };
            outln!(
                "{what} is interrupted after {done} of {steps} steps: the jails are as it left them; {run}"
            );
        }
    }
}

/// An `/etc` merge as the commands report it: what it found, the
/// transaction that carried it out, or why it could not run.
#[derive(Debug, Default)]
pub struct EtcMerged {
    pub report: Option<crate::etcmerge::MergeReport>,
    pub tx: Option<Report>,
    pub error: Option<String>,
}

impl EtcMerged {
    /// The merge report with what its transaction moved aside given to
    /// the target it was moved from.
    fn targets(&self) -> Option<crate::etcmerge::MergeReport> {
        let mut r = self.report.clone()?;
        if let Some(q) = self.tx.as_ref().and_then(|t| t.notes.get("quarantined")) {
            r.note_quarantined(q);
        }
        Some(r)
    }

    fn json(&self) -> serde_json::Value {
        let targets = self.targets().map(|r| r.targets);
        json!({ "targets": targets, "report": self.tx, "error": self.error })
    }

    fn print(&self) {
        if let Some(r) = self.targets() {
            out!("{r}");
        }
        match (&self.tx, &self.error) {
            (_, Some(e)) => outln!("etc-merge: {e}"),
            (Some(tx), None) => outln!("{}", report_line(tx)),
            (None, None) => outln!("etc-merge: nothing to change"),
        }
    }

    /// The per-file report of a merge not run yet; `empty`: whether its
    /// plan has no step (none: it could not be planned).
    fn print_planned(&self, empty: Option<bool>) {
        if let Some(r) = &self.report {
            out!("{r}");
        }
        match (&self.error, empty) {
            (Some(e), _) => outln!("etc-merge: {e}"),
            (None, Some(true)) => outln!("etc-merge: nothing to change"),
            _ => {}
        }
    }

    /// Exit 7 (SPEC section 2 plus docs/etc-merge.md) when the operator has
    /// conflicts, refusals or a failed merge to look at.
    pub fn outcome(&self) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(Error::Attention(format!("/etc was not merged: {e}")));
        }
        match &self.report {
            Some(r) if r.needs_operator() => Err(Error::Attention(format!(
                "/etc needs the operator: {}; resolve the *.jailtx-merge proposals and refusals listed",
                r.summary()
            ))),
            _ => Ok(()),
        }
    }
}

/// `rollback --dry-run`: the rollback's plan, then the `/etc` merge back
/// that would follow its commit (per file, and its plan; `merge` is none
/// when it could not be planned, `m.error` says why).
pub fn rollback_plan(json: bool, p: &Plan, m: &EtcMerged, merge: Option<&Plan>) {
    if json {
        let mut etc = m.json();
        etc["plan"] = json!(merge);
        print_json(&json!({ "dry_run": true, "plan": p, "etc_merge": etc }));
        return;
    }
    out!("{p}");
    outln!("then, as its own transaction, /etc merged back:");
    m.print_planned(merge.map(|p| p.is_empty()));
    if let Some(p) = merge.filter(|p| !p.is_empty()) {
        out!("{p}");
    }
}

/// `rollback --backend freebsd --dry-run`: [`rollback_plan`] as FreeBSD
/// commands (the merge's under `etc_merge.transcript` in JSON).
pub fn rollback_transcript(
    json: bool,
    t: &crate::engine::transcript::Transcript,
    m: &EtcMerged,
    merge: Option<&crate::engine::transcript::Transcript>,
) {
    if json {
        let mut v = t.to_json();
        let mut etc = m.json();
        etc["transcript"] = merge.map_or(serde_json::Value::Null, |t| t.to_json());
        v["etc_merge"] = etc;
        print_json(&v);
        return;
    }
    out!("{t}");
    outln!("\n# then, as its own transaction, /etc merged back:");
    m.print_planned(merge.map(|t| t.steps.is_empty()));
    if let Some(t) = merge.filter(|t| !t.steps.is_empty()) {
        out!("{t}");
    }
}

/// `upgrade` or `rollback`: its transaction, then its `/etc` merge.
pub fn upgrade_and_merge(json: bool, r: &Report, m: &EtcMerged) {
    if json {
        print_json(&json!({ "changed": true, "report": r, "etc_merge": m.json() }));
        return;
    }
    report(false, r);
    m.print();
}

/// `etc-merge --backend freebsd --dry-run`: the FreeBSD transcript and the
/// per-file report, as text or one JSON document.
pub fn etc_merge_transcript(json: bool, m: &EtcMerged, t: &crate::engine::transcript::Transcript) {
    if json {
        let mut v = t.to_json();
        v["etc_merge"] = m.json();
        print_json(&v);
        return;
    }
    out!("{t}");
    if let Some(r) = &m.report {
        out!("{r}");
    }
}

/// `etc-merge`, run.
pub fn etc_merge(json: bool, m: &EtcMerged) {
    if json {
        print_json(&json!({ "changed": m.tx.is_some(), "etc_merge": m.json() }));
    } else {
        m.print();
    }
}

/// `etc-merge --dry-run`: per file what would happen, and the plan.
pub fn etc_merge_plan(json: bool, m: &EtcMerged, p: &Plan) {
    if json {
        print_json(&json!({ "dry_run": true, "plan": p, "etc_merge": m.json() }));
        return;
    }
    if let Some(r) = &m.report {
        out!("{r}");
    }
    if p.is_empty() {
        outln!("etc-merge: nothing to change");
    } else {
        out!("{p}");
    }
}
