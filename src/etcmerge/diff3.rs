//! Line-wise diff (Myers, with git's group sliding) and three-way merge, byte-exact with `git merge-file` on clean merges.
//!
//! Lines keep their `\n`, so a last line without one differs from the same
//! text with one, as in git. The diff is a minimal edit script (Myers'
//! linear-space middle-snake search) over the lines each file shares with
//! the other; lines found only in one file are changes from the start. Each
//! run of changed lines is then slid as far down as the file allows, or back
//! up to line up with a change in the other file: the normal form git's
//! xdiff gives, so that both tools cut the same hunks.
//!
//! The merge follows diff3: changes of one side that no change of the other
//! overlaps or touches are taken; where both sides changed the same or
//! adjacent base lines, identical results are taken once and anything else
//! is a conflict.

use std::collections::HashMap;

/// The lines of `text`, each with its `\n` (the last may lack it).
pub fn lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|b| *b == b'\n').collect()
}

/// Base lines `a0..a1` became other lines `b0..b1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hunk {
    pub a0: usize,
    pub a1: usize,
    pub b0: usize,
    pub b1: usize,
}

/// The hunks turning `a` into `b`, in order, never touching each other.
pub fn diff<'a>(a: &[&'a [u8]], b: &[&'a [u8]]) -> Vec<Hunk> {
    let mut ids: HashMap<&'a [u8], u32> = HashMap::new();
    let mut xa = Vec::with_capacity(a.len());
    let mut xb = Vec::with_capacity(b.len());
    for (src, dst) in [(a, &mut xa), (b, &mut xb)] {
        for l in src {
            let n = ids.len() as u32;
            dst.push(*ids.entry(l).or_insert(n));
        }
    }
    let (mut ca, mut cb) = changes(&xa, &xb);
    compact(&xa, &mut ca, &cb);
    compact(&xb, &mut cb, &ca);
    hunks(&ca, &cb)
}

/// Which lines of `a` are deleted and which of `b` inserted, minimally.
fn changes(a: &[u32], b: &[u32]) -> (Vec<bool>, Vec<bool>) {
    let mut ca = vec![false; a.len()];
    let mut cb = vec![false; b.len()];
    let mut count_a: HashMap<u32, usize> = HashMap::new();
    let mut count_b: HashMap<u32, usize> = HashMap::new();
    for x in a {
        *count_a.entry(*x).or_default() += 1;
    }
    for x in b {
        *count_b.entry(*x).or_default() += 1;
    }
    // Common ends are never changes; inside them, a line the other file
    // lacks altogether is a change without any search.
    let mut lo = 0;
    while lo < a.len() && lo < b.len() && a[lo] == b[lo] {
        lo += 1;
    }
    let (mut ea, mut eb) = (a.len(), b.len());
    while ea > lo && eb > lo && a[ea - 1] == b[eb - 1] {
        ea -= 1;
        eb -= 1;
    }
    let mut ka = Vec::new();
    for (i, x) in a.iter().enumerate().take(ea).skip(lo) {
        if count_b.contains_key(x) {
            ka.push(i);
        } else {
            ca[i] = true;
        }
    }
    let mut kb = Vec::new();
    for (j, x) in b.iter().enumerate().take(eb).skip(lo) {
        if count_a.contains_key(x) {
            kb.push(j);
        } else {
            cb[j] = true;
        }
    }
    let sa: Vec<u32> = ka.iter().map(|&i| a[i]).collect();
    let sb: Vec<u32> = kb.iter().map(|&j| b[j]).collect();
    let mut da = vec![false; sa.len()];
    let mut db = vec![false; sb.len()];
    let mut m = Myers::new(sa.len() + sb.len());
    m.compare(&sa, 0, sa.len(), &sb, 0, sb.len(), &mut da, &mut db);
    for (k, &i) in ka.iter().enumerate() {
        ca[i] |= da[k];
    }
    for (k, &j) in kb.iter().enumerate() {
        cb[j] |= db[k];
    }
    (ca, cb)
}

/// Myers' O(ND) search in linear space: the middle snake, then both halves.
struct Myers {
    fwd: Vec<isize>,
    bwd: Vec<isize>,
    off: isize,
}

impl Myers {
    fn new(n: usize) -> Myers {
        let size = 2 * n + 3;
        Myers {
            fwd: vec![0; size],
            bwd: vec![0; size],
            off: n as isize + 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compare(
        &mut self,
        a: &[u32],
        mut a0: usize,
        mut a1: usize,
        b: &[u32],
        mut b0: usize,
        mut b1: usize,
        da: &mut [bool],
        db: &mut [bool],
    ) {
        while a0 < a1 && b0 < b1 && a[a0] == b[b0] {
            a0 += 1;
            b0 += 1;
        }
        while a1 > a0 && b1 > b0 && a[a1 - 1] == b[b1 - 1] {
            a1 -= 1;
            b1 -= 1;
        }
        if a0 == a1 {
            db[b0..b1].iter_mut().for_each(|c| *c = true);
            return;
        }
        if b0 == b1 {
            da[a0..a1].iter_mut().for_each(|c| *c = true);
            return;
        }
        let (x, y) = self.middle(a, a0, a1, b, b0, b1);
        self.compare(a, a0, x, b, b0, y, da, db);
        self.compare(a, x, a1, b, y, b1, da, db);
    }

    /// A point (x, y) on an optimal path from (a0, b0) to (a1, b1) that
    /// splits it into two strictly smaller problems.
    fn middle(
        &mut self,
        a: &[u32],
        a0: usize,
        a1: usize,
        b: &[u32],
        b0: usize,
        b1: usize,
    ) -> (usize, usize) {
        let (a0, a1, b0, b1) = (a0 as isize, a1 as isize, b0 as isize, b1 as isize);
        // Diagonal k = x - y; forward paths start on k = a0 - b0, backward on a1 - b1.
        let fmid = a0 - b0;
        let bmid = a1 - b1;
        let odd = (fmid - bmid) & 1 != 0;
        let off = self.off;
        let idx = |k: isize| (k + off) as usize;
        self.fwd[idx(fmid)] = a0;
        self.bwd[idx(bmid)] = a1;
        let (mut fmin, mut fmax, mut bmin, mut bmax) = (fmid, fmid, bmid, bmid);
        let (kmin, kmax) = (a0 - b1, a1 - b0);
        loop {
            // Forward: one more edit on every reachable diagonal.
            if fmin > kmin {
                fmin -= 1;
                self.fwd[idx(fmin - 1)] = -1;
            } else {
                fmin += 1;
            }
            if fmax < kmax {
                fmax += 1;
                self.fwd[idx(fmax + 1)] = -1;
            } else {
                fmax -= 1;
            }
            let mut k = fmax;
            while k >= fmin {
                let lo = self.fwd[idx(k - 1)];
                let hi = self.fwd[idx(k + 1)];
                let mut x = if lo >= hi { lo + 1 } else { hi };
                let mut y = x - k;
                while x < a1 && y < b1 && a[x as usize] == b[y as usize] {
                    x += 1;
                    y += 1;
                }
                self.fwd[idx(k)] = x;
                if odd && bmin <= k && k <= bmax && self.bwd[idx(k)] <= x {
                    return (x as usize, y as usize);
                }
                k -= 2;
            }
            // Backward.
            if bmin > kmin {
                bmin -= 1;
                self.bwd[idx(bmin - 1)] = isize::MAX;
            } else {
                bmin += 1;
            }
            if bmax < kmax {
                bmax += 1;
                self.bwd[idx(bmax + 1)] = isize::MAX;
            } else {
                bmax -= 1;
            }
            let mut k = bmax;
            while k >= bmin {
                let lo = self.bwd[idx(k - 1)];
                let hi = self.bwd[idx(k + 1)];
                let mut x = if lo < hi { lo } else { hi - 1 };
                let mut y = x - k;
                while x > a0 && y > b0 && a[x as usize - 1] == b[y as usize - 1] {
                    x -= 1;
                    y -= 1;
                }
                self.bwd[idx(k)] = x;
                if !odd && fmin <= k && k <= fmax && x <= self.fwd[idx(k)] {
                    return (x as usize, y as usize);
                }
                k -= 2;
            }
        }
    }
}

/// A run of changed lines `s..e` (possibly empty) at one point of a file.
#[derive(Debug, Clone, Copy)]
struct Group {
    s: usize,
    e: usize,
}

impl Group {
    fn first(c: &[bool]) -> Group {
        let mut e = 0;
        while e < c.len() && c[e] {
            e += 1;
        }
        Group { s: 0, e }
    }

    /// The group after the next unchanged line; false at the end.
    fn next(&mut self, c: &[bool]) -> bool {
        if self.e >= c.len() {
            return false;
        }
        self.s = self.e + 1;
        self.e = self.s;
        while self.e < c.len() && c[self.e] {
            self.e += 1;
        }
        true
    }

    /// The group before the previous unchanged line; false at the start.
    fn prev(&mut self, c: &[bool]) -> bool {
        if self.s == 0 {
            return false;
        }
        self.e = self.s - 1;
        self.s = self.e;
        while self.s > 0 && c[self.s - 1] {
            self.s -= 1;
        }
        true
    }

    fn slide_up(&mut self, x: &[u32], c: &mut [bool]) -> bool {
        if self.s == 0 || self.s == self.e || x[self.s - 1] != x[self.e - 1] {
            return false;
        }
        self.s -= 1;
        self.e -= 1;
        c[self.s] = true;
        c[self.e] = false;
        while self.s > 0 && c[self.s - 1] {
            self.s -= 1;
        }
        true
    }

    fn slide_down(&mut self, x: &[u32], c: &mut [bool]) -> bool {
        if self.e >= x.len() || self.s == self.e || x[self.s] != x[self.e] {
            return false;
        }
        c[self.s] = false;
        c[self.e] = true;
        self.s += 1;
        self.e += 1;
        while self.e < x.len() && c[self.e] {
            self.e += 1;
        }
        true
    }
}

/// Moves each run of changed lines of `x` to its normal position: as low as
/// the file allows, unless a position next to a change of the other file
/// (`co`) was passed on the way, then the lowest such one.
fn compact(x: &[u32], c: &mut [bool], co: &[bool]) {
    let mut g = Group::first(c);
    let mut go = Group::first(co);
    loop {
        if g.e > g.s {
            let mut earliest_end;
            let mut end_matching_other;
            loop {
                let size = g.e - g.s;
                while g.slide_up(x, c) {
                    go.prev(co);
                }
                earliest_end = g.e;
                end_matching_other = (go.e > go.s).then_some(g.e);
                while g.slide_down(x, c) {
                    go.next(co);
                    if go.e > go.s {
                        end_matching_other = Some(g.e);
                    }
                }
                if size == g.e - g.s {
                    break;
                }
            }
            if g.e != earliest_end && end_matching_other.is_some() {
                while go.e == go.s {
                    if !g.slide_up(x, c) {
                        break;
                    }
                    go.prev(co);
                }
            }
        }
        if !g.next(c) {
            break;
        }
        go.next(co);
    }
}

fn hunks(ca: &[bool], cb: &[bool]) -> Vec<Hunk> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < ca.len() || j < cb.len() {
        if (i < ca.len() && ca[i]) || (j < cb.len() && cb[j]) {
            let (a0, b0) = (i, j);
            while i < ca.len() && ca[i] {
                i += 1;
            }
            while j < cb.len() && cb[j] {
                j += 1;
            }
            out.push(Hunk {
                a0,
                a1: i,
                b0,
                b1: j,
            });
        } else {
            i += 1;
            j += 1;
        }
    }
    out
}

/// The outcome of a three-way merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// No conflict: the merged file.
    Clean(Vec<u8>),
    /// The proposal with `conflicts` marked regions (diff3 style, with the base).
    Conflict { text: Vec<u8>, conflicts: usize },
}

/// The names written on the conflict markers.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub ours: &'a str,
    pub base: &'a str,
    pub theirs: &'a str,
}

/// Merges the changes `base` -> `ours` and `base` -> `theirs`.
pub fn merge(base: &[u8], ours: &[u8], theirs: &[u8], labels: Labels) -> Merged {
    merge_with(base, ours, theirs, labels, false)
}

/// [`merge`], except that where both sides only inserted lines at the same
/// place (each side's region is one pure insertion, so neither changed or
/// removed a line there) both are taken, ours first and then theirs' lines
/// ours does not insert too, instead of a conflict. For files whose lines
/// form a set (`strategy::Strategy::Union`).
pub fn merge_union(base: &[u8], ours: &[u8], theirs: &[u8], labels: Labels) -> Merged {
    merge_with(base, ours, theirs, labels, true)
}

fn merge_with(base: &[u8], ours: &[u8], theirs: &[u8], labels: Labels, union: bool) -> Merged {
    let lb = lines(base);
    let lo = lines(ours);
    let lt = lines(theirs);
    let ho = diff(&lb, &lo);
    let ht = diff(&lb, &lt);
    let mut out: Vec<u8> = Vec::new();
    let mut conflicts = 0;
    let (mut io, mut it) = (0, 0);
    let mut pos = 0; // base lines before this are written
    while io < ho.len() || it < ht.len() {
        // A cluster: a hunk, then every hunk of the other side that overlaps
        // or touches one already in it (git's rule: touching is a clash).
        let (first_o, first_t) = (io, it);
        let seed_ours = match (ho.get(io), ht.get(it)) {
            (Some(o), Some(t)) => o.a0 <= t.a0,
            (o, _) => o.is_some(),
        };
        let (mut end_o, mut end_t): (Option<usize>, Option<usize>) = (None, None);
        if seed_ours {
            end_o = Some(ho[io].a1);
            io += 1;
        } else {
            end_t = Some(ht[it].a1);
            it += 1;
        }
        loop {
            let mut grew = false;
            if let (Some(h), Some(e)) = (ho.get(io), end_t)
                && h.a0 <= e
            {
                end_o = Some(end_o.unwrap_or(0).max(h.a1));
                io += 1;
                grew = true;
            }
            if let (Some(h), Some(e)) = (ht.get(it), end_o)
                && h.a0 <= e
            {
                end_t = Some(end_t.unwrap_or(0).max(h.a1));
                it += 1;
                grew = true;
            }
            if !grew {
                break;
            }
        }
        let os = &ho[first_o..io];
        let ts = &ht[first_t..it];
        let start = os.iter().chain(ts).map(|h| h.a0).min().unwrap_or(pos);
        let end = os.iter().chain(ts).map(|h| h.a1).max().unwrap_or(pos);
        for l in &lb[pos..start] {
            out.extend_from_slice(l);
        }
        pos = end;
        let side = |hs: &[Hunk], lines: &[&[u8]]| -> Vec<u8> {
            let (f, l) = (hs[0], hs[hs.len() - 1]);
            let b0 = f.b0 - (f.a0 - start);
            let b1 = l.b1 + (end - l.a1);
            lines[b0..b1].concat()
        };
        let base_text = || lb[start..end].concat();
        match (os.is_empty(), ts.is_empty()) {
            (false, true) => out.extend(side(os, &lo)),
            (true, false) => out.extend(side(ts, &lt)),
            _ => {
                let o = side(os, &lo);
                let t = side(ts, &lt);
                let inserts = |hs: &[Hunk]| hs.iter().all(|h| h.a0 == h.a1);
                if o == t {
                    out.extend(o);
                } else if union && inserts(os) && inserts(ts) && o.ends_with(b"\n") {
                    // A last line without `\n` would run into theirs' first.
                    let mine = lines(&o);
                    let extra: Vec<&[u8]> = lines(&t)
                        .into_iter()
                        .filter(|l| !mine.contains(l))
                        .collect();
                    out.extend_from_slice(&o);
                    out.extend(extra.concat());
                } else {
                    conflicts += 1;
                    conflict(&mut out, &o, &base_text(), &t, labels);
                }
            }
        }
    }
    for l in &lb[pos..] {
        out.extend_from_slice(l);
    }
    if conflicts == 0 {
        Merged::Clean(out)
    } else {
        Merged::Conflict {
            text: out,
            conflicts,
        }
    }
}

/// Writes one conflict region, diff3 style (ours, base, theirs).
pub(crate) fn conflict(out: &mut Vec<u8>, ours: &[u8], base: &[u8], theirs: &[u8], labels: Labels) {
    let mut section = |marker: &str, label: &str, text: &[u8]| {
        out.extend_from_slice(marker.as_bytes());
        if !label.is_empty() {
            out.push(b' ');
            out.extend_from_slice(label.as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(text);
        if !text.is_empty() && !text.ends_with(b"\n") {
            out.push(b'\n');
        }
    };
    section("<<<<<<<", labels.ours, ours);
    section("|||||||", labels.base, base);
    section("=======", "", theirs);
    out.extend_from_slice(b">>>>>>> ");
    out.extend_from_slice(labels.theirs.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Labels = Labels {
        ours: "ours",
        base: "base",
        theirs: "theirs",
    };

    fn m(b: &str, o: &str, t: &str) -> Merged {
        merge(b.as_bytes(), o.as_bytes(), t.as_bytes(), L)
    }

    fn clean(s: &str) -> Merged {
        Merged::Clean(s.as_bytes().to_vec())
    }

    #[test]
    fn changes_apart_merge_cleanly() {
        assert_eq!(
            m("a\nb\nc\nd\n", "A\nb\nc\nd\n", "a\nb\nc\nD\n"),
            clean("A\nb\nc\nD\n")
        );
        assert_eq!(m("a\n", "a\nb\n", "a\n"), clean("a\nb\n"));
        assert_eq!(m("a\nb\n", "a\nb\n", "b\n"), clean("b\n"));
    }

    #[test]
    fn the_same_change_on_both_sides_is_taken_once() {
        assert_eq!(m("a\nb\nc\n", "a\nX\nc\n", "a\nX\nc\n"), clean("a\nX\nc\n"));
    }

    #[test]
    fn touching_changes_clash_as_in_git() {
        let Merged::Conflict { text, conflicts } = m("a\nb\nc\n", "A\nb\nc\n", "a\nB\nc\n") else {
            panic!("adjacent lines changed on both sides must clash");
        };
        assert_eq!(conflicts, 1);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "<<<<<<< ours\nA\nb\n||||||| base\na\nb\n=======\na\nB\n>>>>>>> theirs\nc\n"
        );
    }

    #[test]
    fn a_last_line_without_newline_gets_its_markers_on_their_own_lines() {
        let Merged::Conflict { text, .. } = m("a", "b", "c") else {
            panic!("clash expected");
        };
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "<<<<<<< ours\nb\n||||||| base\na\n=======\nc\n>>>>>>> theirs\n"
        );
        assert_eq!(m("x\na", "x\na\n", "x\na"), clean("x\na\n"));
    }

    #[test]
    fn both_added_differently_with_no_base_clashes() {
        assert!(matches!(m("", "a\n", "b\n"), Merged::Conflict { .. }));
        assert_eq!(m("", "a\n", "a\n"), clean("a\n"));
    }

    #[test]
    fn union_takes_both_insertions_at_one_place_and_nothing_else() {
        let u =
            |b: &str, o: &str, t: &str| merge_union(b.as_bytes(), o.as_bytes(), t.as_bytes(), L);
        assert_eq!(u("a\n", "a\nB\n", "a\nC\n"), clean("a\nB\nC\n"));
        assert_eq!(u("a\n", "a\nB\nX\n", "a\nX\nC\n"), clean("a\nB\nX\nC\n"));
        assert!(matches!(
            m("a\n", "a\nB\n", "a\nC\n"),
            Merged::Conflict { .. }
        ));
        // A changed or removed line where the other side inserts still clashes.
        assert!(matches!(
            u("a\nb\n", "a\nB\n", "a\nC\nb\n"),
            Merged::Conflict { .. }
        ));
        assert!(matches!(
            u("a\nb\n", "a\n", "a\nC\nb\n"),
            Merged::Conflict { .. }
        ));
        assert!(matches!(
            u("a\n", "a\nB", "a\nC\n"),
            Merged::Conflict { .. }
        ));
    }

    #[test]
    fn diff_slides_changes_down_like_git() {
        // Deleting one of two equal lines: git reports the lower one.
        let a = lines(b"x\na\na\ny\n");
        let b = lines(b"x\na\ny\n");
        assert_eq!(
            diff(&a, &b),
            vec![Hunk {
                a0: 2,
                a1: 3,
                b0: 2,
                b1: 2
            }]
        );
    }
}
