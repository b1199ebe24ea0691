//! The Prometheus text exposition format (version 0.0.4): metric families with HELP and TYPE, samples, escaping.

use std::fmt::Write;

/// The metric types jailtx emits: everything it publishes is a value read
/// from the state at the time of the run, so no counters (a count taken
/// from the rotating history could go down, which a counter must not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Gauge,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Gauge => "gauge",
        }
    }
}

/// A sample's value, written exactly: an integer, or a decimal fixed by its
/// producer (seconds from milliseconds, so no binary rounding shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Decimal(String),
}

impl Value {
    /// Milliseconds since the epoch (or any millisecond count) as seconds,
    /// exactly: `1700000000123` -> `1700000000.123`.
    pub fn seconds_from_ms(ms: i64) -> Value {
        let sign = if ms < 0 { "-" } else { "" };
        let abs = ms.unsigned_abs();
        Value::Decimal(format!("{sign}{}.{:03}", abs / 1000, abs % 1000))
    }

    /// A millisecond figure as jailtx's notes write it (`12.345`) as
    /// seconds; `None` when it is not a finite, non-negative number.
    pub fn seconds_from_ms_text(ms: &str) -> Option<Value> {
        let v: f64 = ms.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then(|| Value::Decimal(format!("{:.6}", v / 1000.0)))
    }

    pub fn flag(on: bool) -> Value {
        Value::Int(i64::from(on))
    }
}

/// A label value as the format wants it between double quotes: backslash,
/// double quote and newline escaped, everything else as is (UTF-8).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One sample of a family: its labels (name, value) and its value.
pub type Sample = (Vec<(&'static str, String)>, Value);

/// The text of one exposition, built family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Appends family `name` with its HELP and TYPE lines and `samples`; a
    /// family without samples is left out whole (a HELP with nothing under
    /// it says nothing to a reader).
    pub fn family(&mut self, name: &str, ty: Type, help: &str, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", ty.as_str());
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(self.text, "{{{}}}", inner.join(","));
            }
            let _ = match value {
                Value::Int(i) => writeln!(self.text, " {i}"),
                Value::Decimal(d) => writeln!(self.text, " {d}"),
            };
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, value: Value) {
        self.family(name, Type::Gauge, help, vec![(Vec::new(), value)]);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain-name_1"), "plain-name_1");
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(
            Value::seconds_from_ms(1_700_000_000_123),
            Value::Decimal("1700000000.123".into())
        );
        assert_eq!(Value::seconds_from_ms(5), Value::Decimal("0.005".into()));
        assert_eq!(
            Value::seconds_from_ms(-1500),
            Value::Decimal("-1.500".into())
        );
        assert_eq!(
            Value::seconds_from_ms_text("123.456"),
            Some(Value::Decimal("0.123456".into()))
        );
        assert_eq!(Value::seconds_from_ms_text("NaN"), None);
        assert_eq!(Value::seconds_from_ms_text("-1"), None);
        assert_eq!(Value::seconds_from_ms_text("soon"), None);
    }

    #[test]
    fn families_have_help_type_and_samples_and_empty_ones_are_left_out() {
        let mut e = Exposition::default();
        e.family("jailtx_empty", Type::Gauge, "Nothing.", Vec::new());
        e.family(
            "jailtx_jail_running",
            Type::Gauge,
            "Whether the jail runs.\nOne line.",
            vec![
                (vec![("jail", "ns".into())], Value::flag(true)),
                (vec![("jail", "w\"x".into())], Value::flag(false)),
            ],
        );
        e.single("jailtx_transaction_pending", "Pending.", Value::Int(0));
        assert_eq!(
            e.into_text(),
            "# HELP jailtx_jail_running Whether the jail runs.\\nOne line.\n\
             # TYPE jailtx_jail_running gauge\n\
             jailtx_jail_running{jail=\"ns\"} 1\n\
             jailtx_jail_running{jail=\"w\\\"x\"} 0\n\
             # HELP jailtx_transaction_pending Pending.\n\
             # TYPE jailtx_transaction_pending gauge\n\
             jailtx_transaction_pending 0\n"
        );
    }
}
