#!/usr/bin/env python3
"""jtxref: a second, independent reader of the jailtx journal format, version 1.

Written from journal-format/README.md alone (Python 3 standard library and
the BLAKE3 of blake3.py). The payload layouts are not restated here: they are
read at start-up from the spec's own tables (section 5's record kinds,
section 6.2's structs and enums), so a table that disagrees with the bytes
jailtx writes makes this reader disagree with jailtx's, and the test that
compares the two (tests/journal_reference.rs) fails.

usage: jtxref.py [--spec README.md] [--kind journal|history] FILE...
Prints one JSON document (shape: README.md in this directory); exit 0 when
the file is accepted (clean or with a torn tail), 1 when it is refused. With
several FILEs: one JSON object mapping each FILE to its reading, exit 0.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blake3 import hash as blake3  # noqa: E402

MAGIC = {"journal": b"JAILTXJ\0", "history": b"JAILTXH\0"}
HEADER_LEN, FRAME_HEADER_LEN = 16, 13
MAX_PAYLOAD = 16 << 20
RESYNC_HASH_BUDGET = 256 << 20  # section 7.2, "Cost"
SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")


def kebab(name):
    return re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower()


# ---------------------------------------------------------------- the spec


class Spec:
    """Record kinds, structs and enums, as the spec's tables give them."""

    def __init__(self, text):
        self.kinds = {}  # tag -> (kind name, payload struct name, file)
        self.structs = {}  # name -> [(field, type)]
        self.enums = {}  # name -> ("fields"|"value"|"unit", [(variant, payload)])
        lines = text.splitlines()
        owner = None
        for i, line in enumerate(lines):
            m = re.match(r"^`(\w+)`", line)
            if m:
                owner = m.group(1)
                if "an enum without fields" in line:
                    para = " ".join(lines[i:lines.index("", i)])
                    units = re.findall(r"index (\d+) `([a-z-]+)`", para)
                    self.enums[owner] = ("unit", [v for _, v in sorted(units, key=lambda u: int(u[0]))])
            if not line.startswith("| ") or (i + 1 < len(lines) and not lines[i + 1].startswith("| ---")):
                continue
            head = cells(line)
            rows = [cells(r) for r in table_rows(lines, i + 2)]
            if head[:3] == ["tag", "kind", "payload struct"]:
                for r in rows:
                    self.kinds[int(r[0])] = (r[1], r[2].strip("`"), r[3])
            elif head[:3] == ["#", "field", "type"] and owner:
                self.structs[owner] = [(r[1], parse_type(r[2])) for r in rows]
                owner = None
            elif head[:2] == ["index", "variant"] and owner:
                variants = []
                for n, r in enumerate(rows):
                    assert int(r[0]) == n, f"{owner}: the table skips index {n}"
                    if head[2] == "value":
                        variants.append((r[1], parse_type(r[2].split(":")[0])))
                    else:
                        fields = [f.split(":", 1) for f in split_top(r[2])]
                        variants.append((r[1], [(f.strip(), parse_type(t)) for f, t in fields]))
                self.enums[owner] = ("value" if head[2] == "value" else "fields", variants)
                owner = None


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_rows(lines, i):
    while i < len(lines) and lines[i].startswith("|"):
        yield lines[i]
        i += 1


def split_top(text):
    """Splits at commas outside <> and ()."""
    out, depth, cur = [], 0, ""
    for c in text:
        depth += c in "<(" and 1 or (c in ">)" and -1 or 0)
        if c == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += c
    return [p.strip() for p in out + [cur] if p.strip()]


def parse_type(text):
    """`Vec<(JailSpec, Option<String>)>` -> ("Vec", [("tuple", [...])])."""
    t = text.replace("`", "").strip()
    if t.startswith("(") and t.endswith(")"):
        return ("tuple", [parse_type(p) for p in split_top(t[1:-1])])
    m = re.match(r"^(\w+)<(.*)>$", t)
    if m:
        return (m.group(1), [parse_type(p) for p in split_top(m.group(2))])
    return (t, [])


# ---------------------------------------------------------------- postcard


class Bad(Exception):
    """A payload that does not decode."""


class Reader:
    def __init__(self, spec, data):
        self.spec, self.data, self.at = spec, data, 0

    def take(self, n):
        if n > len(self.data) - self.at:
            raise Bad("unexpected end of payload")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def varint(self, bits):
        # LEB128, at most ceil(bits/7) bytes; the last byte may only carry
        # the bits the type has left (section 6.1).
        most = (bits + 6) // 7
        out = 0
        for n in range(most):
            b = self.take(1)[0]
            out |= (b & 0x7F) << (7 * n)
            if not b & 0x80:
                if n == most - 1 and b >> (bits - 7 * n):
                    raise Bad(f"varint overflows u{bits}")
                return out
        raise Bad(f"varint longer than u{bits} allows")

    def value(self, ty):
        name, args = ty
        if name == "u8":
            return self.take(1)[0]
        if name in ("u16", "u32", "u64"):
            return self.varint(int(name[1:]))
        if name == "i64":
            n = self.varint(64)
            return (n >> 1) ^ -(n & 1)
        if name == "bool":
            b = self.take(1)[0]
            if b > 1:
                raise Bad("bool is not 00 or 01")
            return b == 1
        if name in ("String", "PathBuf"):
            raw = self.take(self.varint(64))  # lengths are usize: u64 varints
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Bad("invalid utf-8") from None
        if name == "Blob":
            raw = self.take(self.varint(64))
            try:
                return {"text": raw.decode("utf-8")}
            except UnicodeDecodeError:
                return {"hex": raw.hex()}
        if name == "Option":
            b = self.take(1)[0]
            if b > 1:
                raise Bad("option prefix is not 00 or 01")
            return self.value(args[0]) if b else None
        if name == "Vec":
            return [self.value(args[0]) for _ in range(self.varint(64))]
        if name == "BTreeMap":
            out = {}
            for _ in range(self.varint(64)):
                k = self.value(args[0])
                out[k] = self.value(args[1])  # a later duplicate replaces (6.1)
            return dict(sorted(out.items()))
        if name == "tuple":
            return [self.value(a) for a in args]
        if name in self.spec.structs:
            return {f: self.value(t) for f, t in self.spec.structs[name]}
        if name in self.spec.enums:
            shape, variants = self.spec.enums[name]
            index = self.varint(32)  # variant indexes are u32 varints
            if index >= len(variants):
                raise Bad(f"{name} has no variant {index}")
            if shape == "unit":
                return variants[index]
            variant, payload = variants[index]
            if shape == "value":
                return {kebab(variant): self.value(payload)}
            return {kebab(variant): {f: self.value(t) for f, t in payload}}
        raise Bad(f"the spec names a type {name} this reader does not know")


def decode(spec, tag, payload):
    """The record of `tag`, as {kind: fields}; None for an unknown tag."""
    if tag not in spec.kinds:
        return None
    kind, struct, _ = spec.kinds[tag]
    r = Reader(spec, payload)
    fields = r.value((struct, []))
    if r.at != len(payload):
        raise Bad("bytes left over after the record")
    return {kebab(kind): fields}


# ---------------------------------------------------------------- the scan


class Refused(Exception):
    def __init__(self, verdict, message, offset=None):
        super().__init__(message)
        self.verdict, self.message, self.offset = verdict, message, offset


def checksum(plen, tag, payload):
    return int.from_bytes(blake3(plen.to_bytes(4, "little") + bytes([tag]) + payload)[:8], "little")


def header(magic):
    h = magic + b"\x01\x00\x00\x00"
    return h + blake3(h)[:4]


def sound_frame_after(spec, data, start, hashed=0):
    """Whether a sound frame starts at an offset after `start` (section 7.1)."""
    zeros = len(data.rstrip(b"\0"))  # no frame starts in the zero tail
    for o in range(start + 1, zeros):
        if len(data) - o < FRAME_HEADER_LEN:
            return False
        plen, tag = int.from_bytes(data[o:o + 4], "little"), data[o + 4]
        end = o + FRAME_HEADER_LEN + plen
        if plen > MAX_PAYLOAD or end > len(data) or tag not in spec.kinds:
            continue
        hashed += end - o
        if hashed > RESYNC_HASH_BUDGET:
            return True
        payload = data[o + FRAME_HEADER_LEN:end]
        if checksum(plen, tag, payload) != int.from_bytes(data[o + 5:o + 13], "little"):
            continue
        try:
            decode(spec, tag, payload)
            return True
        except Bad:
            continue
    return False


def scan(spec, data, magic):
    """(records, valid_len) or Refused. Sections 1 (short files), 3 and 7.1."""
    h = header(magic)
    if len(data) <= HEADER_LEN:
        agree = 0
        while agree < len(data) and data[agree] == h[agree]:
            agree += 1
        if data != h and not data[agree:].strip(b"\0"):
            return [], 0  # a header torn while the file was created
    if len(data) < HEADER_LEN:
        raise Refused("bad-header", f"file is {len(data)} bytes, shorter than its 16-byte header")
    if data[:8] != magic:
        raise Refused("bad-header", "not a jailtx file of this kind (bad magic)")
    if data[12:16] != blake3(data[:12])[:4]:
        raise Refused("bad-header", "header checksum mismatch")
    version = int.from_bytes(data[8:10], "little")
    if version != 1:
        raise Refused("bad-header", f"format version {version} is not 1; use the jailtx that wrote it")
    records, at = [], HEADER_LEN
    while at < len(data):
        rest = data[at:]
        if len(rest) < FRAME_HEADER_LEN:
            return records, at
        plen, tag = int.from_bytes(rest[:4], "little"), rest[4]
        extent = FRAME_HEADER_LEN + plen
        payload = rest[FRAME_HEADER_LEN:extent]
        if plen > MAX_PAYLOAD:
            damage = "length beyond the 16 MiB limit"
        elif extent > len(rest):
            damage = "frame extends past the end of file"
        elif checksum(plen, tag, payload) != int.from_bytes(rest[5:13], "little"):
            damage = "checksum mismatch"
        else:
            damage = None
        if damage:
            last_write = (plen <= MAX_PAYLOAD and extent >= len(rest)) or not rest.strip(b"\0")
            if last_write and not sound_frame_after(spec, rest, 0):
                return records, at
            raise Refused("corrupt", f"corrupt record at offset {at}: {damage}", at)
        try:
            record = decode(spec, tag, payload)
        except Bad as e:
            raise Refused("undecodable", f"record at offset {at} (type {tag}) does not decode: {e}", at)
        if record is None:
            raise Refused("undecodable", f"record at offset {at} (type {tag}) does not decode: unknown record type", at)
        records.append((at, record))
        at += extent
    return records, at


# ---------------------------------------------------------------- section 8


class Sequence(Exception):
    pass


def fold(records):
    """The journal's transactions, oldest first, with their status (section 8)."""
    txs = []
    for offset, record in records:
        (kind, r), = record.items()

        def bad(what):
            raise Sequence(f"record at offset {offset}: {what}")

        if kind == "summary":
            bad("a history summary inside the journal")
        if kind == "begin":
            if txs and txs[-1]["end"] is None:
                bad("a transaction begins before the previous one ended")
            if txs and r["tx"] <= txs[-1]["tx"]:
                bad("transaction numbers go backwards")
            n = len(r["plan"]["steps"])
            txs.append({"tx": r["tx"], "n": n, "intent": [False] * n, "done": [False] * n,
                        "comp_intent": [False] * n, "comp_done": [False] * n,
                        "abort": False, "commit": False, "end": None})
            continue
        if not txs:
            bad("a record before any transaction began")
        t = txs[-1]
        if r["tx"] != t["tx"]:
            bad("a record names a transaction other than the open one")
        if t["end"] is not None:
            bad("a record after the transaction ended")

        def step(s):
            if s >= t["n"]:
                bad("a step number beyond the plan")
            return s

        if kind in ("step-intent", "step-intents"):
            first = step(r["step"]) if kind == "step-intent" else step(r["first"])
            last = first if kind == "step-intent" else step(r["last"])
            if first > last:
                bad("a step range that runs backwards")
            if t["abort"]:
                bad("a step intent after the rollback began")
            t["intent"][first:last + 1] = [True] * (last + 1 - first)
        elif kind in ("step-done", "step-dones"):
            first = step(r["step"]) if kind == "step-done" else step(r["first"])
            last = first if kind == "step-done" else step(r["last"])
            if first > last:
                bad("a step range that runs backwards")
            if not all(t["intent"][first:last + 1]):
                bad("a step done without its intent")
            t["done"][first:last + 1] = [True] * (last + 1 - first)
        elif kind == "abort":
            if t["commit"]:
                bad("a rollback after the commit")
            t["abort"] = True
        elif kind == "comp-intent":
            i = step(r["step"])
            if not t["abort"]:
                bad("a compensation before the rollback began")
            t["comp_intent"][i] = True
        elif kind == "comp-done":
            i = step(r["step"])
            if not t["comp_intent"][i]:
                bad("a compensation done without its intent")
            t["comp_done"][i] = True
        elif kind == "commit":
            if t["abort"]:
                bad("a commit after the rollback began")
            t["commit"] = True
        elif kind == "end":
            t["end"] = r["outcome"]
    return [{"tx": t["tx"], "status": status(t)} for t in txs]


def status(t):
    if t["end"] is not None:
        return "ended"
    if t["commit"]:
        return "committed"
    return "rolling-back" if t["abort"] else "in-flight"


def history_check(records):
    """A history file holds Summary records only (section 8)."""
    for offset, record in records:
        if "summary" not in record:
            raise Sequence(f"record at offset {offset}: a journal record inside the history")


# ---------------------------------------------------------------- the CLI


def read(spec, data, kind):
    """The canonical JSON of a journal or history file (README.md here)."""
    try:
        records, valid_len = scan(spec, data, MAGIC[kind])
    except Refused as e:
        out = {"verdict": e.verdict, "error": e.message}
        if e.offset is not None:
            out["offset"] = e.offset
        return out
    out = {
        "verdict": "torn" if valid_len < len(data) else "clean",
        "records": [{"offset": o, "record": r} for o, r in records],
        "valid_len": valid_len,
        "torn_bytes": len(data) - valid_len if valid_len else 0,
    }
    try:
        if kind == "journal":
            out["transactions"] = fold(records)
        else:
            history_check(records)
    except Sequence as e:
        out["verdict"], out["error"] = "sequence", str(e)
    return out


def read_file(spec, path, kind):
    with open(path, "rb") as f:
        data = f.read()
    if kind is None:
        named = "history" if os.path.basename(path).startswith("history") else "journal"
        kind = next((k for k, m in MAGIC.items() if data.startswith(m)), named)
    return read(spec, data, kind)


def main(argv):
    args, spec_path, kind = list(argv), SPEC, None
    while len(args) > 1 and args[0] in ("--spec", "--kind"):
        flag, value = args.pop(0), args.pop(0)
        spec_path, kind = (value, kind) if flag == "--spec" else (spec_path, value)
    if not args or kind not in (None, "journal", "history"):
        print("usage: jtxref.py [--spec README.md] [--kind journal|history] FILE...", file=sys.stderr)
        return 2
    with open(spec_path, encoding="utf-8") as f:
        spec = Spec(f.read())
    if len(args) > 1:
        # Several files: one JSON object, FILE -> its reading (for tests).
        out = {path: read_file(spec, path, kind) for path in args}
        print(json.dumps(out, sort_keys=True, ensure_ascii=False))
        return 0
    out = read_file(spec, args[0], kind)
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return 0 if out["verdict"] in ("clean", "torn") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
