//! The keyed merge of account databases (`passwd`, `group`, …): records keyed by name, merged record by record.
//!
//! A line that is not blank, not a `#` comment and holds a `:` is a record;
//! its key is the text before the first `:`. Per key, with base B, ours O
//! and theirs T (a missing record is "none"):
//!
//! | case | result |
//! | --- | --- |
//! | O = T | O |
//! | O = B (the admin left it) | T (the world's change, addition or removal) |
//! | T = B (the world left it) | O |
//! | only the member list differs, on both sides (`group`) | members merged as sets |
//! | anything else | conflict for that record: O stays |
//!
//! A record taking a new ID from T (added, or its ID changed, by the new
//! world) whose ID another record of the result holds, and T does not give
//! that other record the same ID, is a conflict too (O stays: the new
//! record is not added): a second account with the admin's UID would be a
//! silent alias of it. Two records sharing an ID in O already (`root` and
//! `toor`) or in T are left as they are.
//!
//! The output is O's lines in O's order (comments and blank lines kept),
//! each record replaced or dropped as decided; a record only T has goes
//! before the record that follows it in T and is in the output, else at the
//! end (before a trailing run of NIS `+`/`-` lines). T's and B's comments
//! are not carried over. Every line ends with `\n`. A side naming one key
//! twice cannot be merged by key: the caller merges it line-wise.
//!
//! The merge is idempotent: merging its own result again with the same B
//! and T gives the result back.

use std::collections::{BTreeSet, HashMap};

use super::diff3::{self, Labels};
use super::strategy::Account;

/// A record both sides changed, or whose ID clashes: left as the admin has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConflict {
    pub name: String,
    pub why: String,
}

/// The outcome of a keyed merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// `text` is the merge, every conflicting record as the admin has it;
    /// with conflicts, `proposal` is the same file with each of them marked
    /// (diff3 style) for the admin to resolve.
    Merged {
        text: Vec<u8>,
        conflicts: Vec<RecordConflict>,
        proposal: Option<Vec<u8>>,
    },
    /// Not readable as records keyed by name (why): merge line-wise.
    Unkeyed(String),
}

enum Line<'a> {
    Other(&'a [u8]),
    Record { name: &'a [u8] },
}

struct Side<'a> {
    lines: Vec<Line<'a>>,
    by_name: HashMap<&'a [u8], &'a [u8]>,
}

impl<'a> Side<'a> {
    fn parse(text: &'a [u8], which: &str) -> Result<Side<'a>, String> {
        let mut lines = Vec::new();
        let mut by_name = HashMap::new();
        for raw in diff3::lines(text) {
            let l = raw.strip_suffix(b"\n").unwrap_or(raw);
            let blank = l.iter().all(u8::is_ascii_whitespace);
            let colon = l.iter().position(|b| *b == b':');
            match colon {
                Some(at) if !blank && !l.starts_with(b"#") => {
                    let name = &l[..at];
                    if by_name.insert(name, l).is_some() {
                        return Err(format!(
                            "{which} names {:?} twice",
                            String::from_utf8_lossy(name)
                        ));
                    }
                    lines.push(Line::Record { name });
                }
                _ => lines.push(Line::Other(l)),
            }
        }
        Ok(Side { lines, by_name })
    }

    /// The names of its records, in file order.
    fn names(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.lines.iter().filter_map(|l| match l {
            Line::Record { name, .. } => Some(*name),
            Line::Other(_) => None,
        })
    }
}

fn field(record: &[u8], i: usize) -> Option<&[u8]> {
    record
        .split(|b| *b == b':')
        .nth(i)
        .filter(|f| !f.is_empty())
}

/// The record with the member lists of all three merged as sets, when the
/// member list is all that differs on either side: a member is in unless
/// one side removed it; ours' order, then the new world's additions.
fn merge_members(f: usize, b: &[u8], o: &[u8], t: &[u8]) -> Option<Vec<u8>> {
    let split =
        |r: &[u8]| -> Vec<Vec<u8>> { r.split(|c| *c == b':').map(<[u8]>::to_vec).collect() };
    let (fb, fo, ft) = (split(b), split(o), split(t));
    if fb.len() != fo.len() || fb.len() != ft.len() || fb.len() <= f {
        return None;
    }
    let others_same = (0..fb.len())
        .filter(|i| *i != f)
        .all(|i| fb[i] == fo[i] && fb[i] == ft[i]);
    if !others_same {
        return None;
    }
    let set = |x: &[u8]| -> Vec<Vec<u8>> {
        x.split(|c| *c == b',')
            .filter(|m| !m.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (mb, mo, mt) = (set(&fb[f]), set(&fo[f]), set(&ft[f]));
    let mut members: Vec<Vec<u8>> = mo
        .iter()
        .filter(|m| !mb.contains(m) || mt.contains(m))
        .cloned()
        .collect();
    for m in &mt {
        if !mb.contains(m) && !members.contains(m) {
            members.push(m.clone());
        }
    }
    let mut fields = fo;
    fields[f] = members.join(&b","[..]);
    Some(fields.join(&b":"[..]))
}

/// Merges the account database `account` record by record; see the module.
pub fn merge(base: &[u8], ours: &[u8], theirs: &[u8], account: Account, labels: Labels) -> Keyed {
    let sides = (
        Side::parse(base, "the old world's file"),
        Side::parse(ours, "this file"),
        Side::parse(theirs, "the new world's file"),
    );
    let (b, o, t) = match sides {
        (Ok(b), Ok(o), Ok(t)) => (b, o, t),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Keyed::Unkeyed(e),
    };
    let mut names: Vec<&[u8]> = o.names().collect();
    names.extend(t.names().filter(|n| !o.by_name.contains_key(n)));
    names.extend(
        b.names()
            .filter(|n| !o.by_name.contains_key(n) && !t.by_name.contains_key(n)),
    );
    // Per name: the record the result has (none: dropped).
    let mut result: HashMap<&[u8], Option<Vec<u8>>> = HashMap::new();
    let mut conflicts: Vec<(&[u8], String)> = Vec::new();
    for n in &names {
        let (rb, ro, rt) = (
            b.by_name.get(n).copied(),
            o.by_name.get(n).copied(),
            t.by_name.get(n).copied(),
        );
        let r = if ro == rt || rt == rb {
            ro.map(<[u8]>::to_vec)
        } else if ro == rb {
            rt.map(<[u8]>::to_vec)
        } else if let (Some(f), Some(rb), Some(ro), Some(rt)) =
            (account.members_field(), rb, ro, rt)
            && let Some(m) = merge_members(f, rb, ro, rt)
        {
            Some(m)
        } else {
            let why = match (rb, ro, rt) {
                (None, _, _) => "added here and by the new world, differently",
                (_, None, _) => "removed here, changed by the new world: not restored",
                (_, _, None) => "changed here, removed by the new world: kept",
                _ => "changed here and by the new world",
            };
            conflicts.push((n, why.to_owned()));
            ro.map(<[u8]>::to_vec)
        };
        result.insert(n, r);
    }
    if let Some(idf) = account.id_field() {
        id_clashes(&names, &o, &t, idf, account, &mut result, &mut conflicts);
    }
    let conflicted: BTreeSet<&[u8]> = conflicts.iter().map(|(n, _)| *n).collect();
    let text = render(&o, &t, &b, &result, &BTreeSet::new(), labels);
    let proposal =
        (!conflicts.is_empty()).then(|| render(&o, &t, &b, &result, &conflicted, labels));
    Keyed::Merged {
        text,
        conflicts: conflicts
            .into_iter()
            .map(|(n, why)| RecordConflict {
                name: String::from_utf8_lossy(n).into_owned(),
                why,
            })
            .collect(),
        proposal,
    }
}

/// Turns every record that would take a new ID from the new world onto an
/// ID another record of the result holds (and the new world does not give
/// that one too) into a conflict, ours kept; again until none is left,
/// since keeping ours can free or take an ID in turn.
fn id_clashes<'a>(
    names: &[&'a [u8]],
    o: &Side<'a>,
    t: &Side<'a>,
    idf: usize,
    account: Account,
    result: &mut HashMap<&'a [u8], Option<Vec<u8>>>,
    conflicts: &mut Vec<(&'a [u8], String)>,
) {
    loop {
        let mut holders: HashMap<Vec<u8>, Vec<&[u8]>> = HashMap::new();
        for n in names {
            if let Some(Some(r)) = result.get(n)
                && let Some(id) = field(r, idf)
            {
                holders.entry(id.to_vec()).or_default().push(n);
            }
        }
        let clash = names.iter().find_map(|n| {
            let r = result.get(n)?.as_deref()?;
            let id = field(r, idf)?;
            let from_theirs = t.by_name.get(n).and_then(|x| field(x, idf)) == Some(id);
            let new_here = o.by_name.get(n).and_then(|x| field(x, idf)) != Some(id);
            if !(from_theirs && new_here) {
                return None;
            }
            let other = holders
                .get(id)?
                .iter()
                .find(|m| **m != *n && t.by_name.get(*m).and_then(|x| field(x, idf)) != Some(id))?;
            Some((*n, id.to_vec(), *other))
        });
        let Some((n, id, other)) = clash else {
            return;
        };
        let what = if o.by_name.contains_key(n) {
            "not changed"
        } else {
            "not added"
        };
        conflicts.push((
            n,
            format!(
                "the new world gives it {} {}, which {} has here: {what}",
                account.id_name(),
                String::from_utf8_lossy(&id),
                String::from_utf8_lossy(other)
            ),
        ));
        result.insert(n, o.by_name.get(n).map(|r| r.to_vec()));
    }
}

/// The merged file: ours' lines with each record as `result` has it, the
/// new world's new records placed by their neighbours. Records in `marked`
/// are written as diff3 conflict regions instead (for the proposal).
fn render(
    o: &Side,
    t: &Side,
    b: &Side,
    result: &HashMap<&[u8], Option<Vec<u8>>>,
    marked: &BTreeSet<&[u8]>,
    labels: Labels,
) -> Vec<u8> {
    let kept = |n: &[u8]| o.by_name.contains_key(n) && matches!(result.get(n), Some(Some(_)));
    // Records placed by their position in theirs: new ones, and (marked)
    // ones the admin does not have.
    let placed = |n: &[u8]| {
        !o.by_name.contains_key(n) && (matches!(result.get(n), Some(Some(_))) || marked.contains(n))
    };
    let theirs: Vec<&[u8]> = t.names().collect();
    let mut before: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
    let mut at_end: Vec<&[u8]> = Vec::new();
    for (i, n) in theirs.iter().enumerate() {
        if !placed(n) {
            continue;
        }
        match theirs[i + 1..].iter().find(|m| kept(m)) {
            Some(anchor) => before.entry(anchor).or_default().push(n),
            None => at_end.push(n),
        }
    }
    // The end is before a trailing run of NIS compat lines (`+…`, `-…`),
    // which must stay last.
    let records: Vec<usize> = (0..o.lines.len())
        .filter(|i| matches!(o.lines[*i], Line::Record { .. }))
        .collect();
    let nis = |i: &usize| matches!(o.lines[*i], Line::Record { name, .. } if name.starts_with(b"+") || name.starts_with(b"-"));
    let tail = records.iter().rposition(|i| !nis(i)).map_or(0, |p| p + 1);
    let end = records.get(tail).copied().unwrap_or(o.lines.len());
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, n: &[u8]| {
        if marked.contains(n) {
            let side = |s: &Side| {
                s.by_name
                    .get(n)
                    .map(|r| [*r, b"\n"].concat())
                    .unwrap_or_default()
            };
            diff3::conflict(out, &side(o), &side(b), &side(t), labels);
        } else if let Some(Some(r)) = result.get(n) {
            out.extend_from_slice(r);
            out.push(b'\n');
        }
    };
    for (i, line) in o.lines.iter().enumerate() {
        if i == end {
            for n in &at_end {
                put(&mut out, n);
            }
        }
        match line {
            Line::Other(l) => {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            Line::Record { name, .. } => {
                for n in before.get(name).into_iter().flatten() {
                    put(&mut out, n);
                }
                put(&mut out, name);
            }
        }
    }
    if end == o.lines.len() {
        for n in &at_end {
            put(&mut out, n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Labels = Labels {
        ours: "ours",
        base: "base",
        theirs: "theirs",
    };

    fn m(b: &str, o: &str, t: &str, a: Account) -> (String, Vec<String>, Option<String>) {
        match merge(b.as_bytes(), o.as_bytes(), t.as_bytes(), a, L) {
            Keyed::Merged {
                text,
                conflicts,
                proposal,
            } => (
                String::from_utf8(text).unwrap(),
                conflicts.into_iter().map(|c| c.name).collect(),
                proposal.map(|p| String::from_utf8(p).unwrap()),
            ),
            Keyed::Unkeyed(why) => panic!("unkeyed: {why}"),
        }
    }

    const BASE: &str =
        "# $FreeBSD$\nroot:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/sbin/nologin\n";

    #[test]
    fn both_appending_different_users_keeps_both_admins_first() {
        let o = format!("{BASE}alice:x:1001:1001::/home/alice:/bin/sh\n");
        let t = format!("{BASE}_tss:x:601:601::/:/sbin/nologin\n");
        let (text, c, p) = m(BASE, &o, &t, Account::Passwd);
        assert_eq!(
            text,
            format!("{o}_tss:x:601:601::/:/sbin/nologin\n"),
            "{text}"
        );
        assert!(c.is_empty() && p.is_none());
    }

    #[test]
    fn a_new_record_goes_before_its_neighbour_in_the_new_world() {
        let o = "root:x:0:0::/:/bin/sh\nalice:x:1001:1001::/:/bin/sh\nnobody:x:65534:65534::/:/x\n";
        let b = "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/x\n";
        let t = "root:x:0:0::/:/bin/sh\n_a:x:5:5::/:/x\nnobody:x:65534:65534::/:/x\n+:::::::::\n";
        let (text, ..) = m(b, o, t, Account::Passwd);
        assert_eq!(
            text,
            "root:x:0:0::/:/bin/sh\nalice:x:1001:1001::/:/bin/sh\n_a:x:5:5::/:/x\nnobody:x:65534:65534::/:/x\n+:::::::::\n"
        );
        // At the end, but before the admin's trailing NIS lines.
        let o2 = format!("{b}+@staff:::::::::\n");
        let t2 = format!("{b}_b:x:6:6::/:/x\n");
        let (text, ..) = m(b, &o2, &t2, Account::Passwd);
        assert_eq!(text, format!("{b}_b:x:6:6::/:/x\n+@staff:::::::::\n"));
    }

    #[test]
    fn a_uid_the_admin_uses_is_a_conflict_not_a_duplicate() {
        let o = format!("{BASE}alice:x:601:601::/home/alice:/bin/sh\n");
        let t = format!("{BASE}_tss:x:601:601::/:/sbin/nologin\n");
        let (text, c, p) = m(BASE, &o, &t, Account::Passwd);
        assert_eq!(text, o, "the new record is not added");
        assert_eq!(c, ["_tss"]);
        let p = p.unwrap();
        assert!(
            p.contains("alice:x:601")
                && p.contains("=======\n_tss:x:601:601::/:/sbin/nologin\n>>>>>>> theirs\n"),
            "{p}"
        );
        // root and toor sharing UID 0 in ours is the admin's business.
        let o = format!("{BASE}toor:x:0:0::/root:/bin/sh\n");
        let t = BASE.replace("/bin/sh", "/bin/csh");
        let (text, c, _) = m(BASE, &o, &t, Account::Passwd);
        assert!(c.is_empty(), "{c:?}");
        assert!(text.starts_with("# $FreeBSD$\nroot:x:0:0:root:/root:/bin/csh\n"));
    }

    #[test]
    fn one_record_changed_both_ways_conflicts_alone() {
        let o = BASE.replace("root:/root:/bin/sh", "root:/root:/bin/tcsh");
        let t = format!(
            "{}_tss:x:601:601::/:/sbin/nologin\n",
            BASE.replace("root:/root:/bin/sh", "root:/root:/bin/csh")
        );
        let (text, c, p) = m(BASE, &o, &t, Account::Passwd);
        assert_eq!(c, ["root"]);
        assert_eq!(text, format!("{o}_tss:x:601:601::/:/sbin/nologin\n"));
        assert!(
            p.unwrap()
                .contains("<<<<<<< ours\nroot:x:0:0:root:/root:/bin/tcsh\n")
        );
    }

    #[test]
    fn group_members_merge_as_sets() {
        let b = "wheel:*:0:root,bob\nstaff:*:20:\n";
        let o = "wheel:*:0:root,alice\nstaff:*:20:\n";
        let t = "wheel:*:0:root,bob,_tss\nstaff:*:20:\n";
        let (text, c, _) = m(b, o, t, Account::Group);
        assert!(c.is_empty());
        assert_eq!(text, "wheel:*:0:root,alice,_tss\nstaff:*:20:\n");
        // Idempotent.
        let (again, ..) = m(b, &text, t, Account::Group);
        assert_eq!(again, text);
        // Another field changed too: a conflict.
        let (_, c, _) = m(
            b,
            o,
            "wheel:*:10:root,bob,_tss\nstaff:*:20:\n",
            Account::Group,
        );
        assert_eq!(c, ["wheel"]);
    }

    #[test]
    fn a_name_twice_is_not_keyed() {
        let r = merge(b"a:1\n", b"a:1\na:2\n", b"a:1\n", Account::Passwd, L);
        assert!(matches!(r, Keyed::Unkeyed(_)), "{r:?}");
    }
}
