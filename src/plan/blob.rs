//! File contents carried inside a plan: raw bytes in the journal, readable text (or hex) in `--json`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that a step writes. Postcard (the journal) stores them as a byte
/// string; human-readable formats (the `--dry-run --json` plan, `run-plan`
/// files) as `{"text": "..."}` when they are UTF-8, else `{"hex": "..."}`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Blob {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(v)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Readable {
    Text(String),
    Hex(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_bytes(&self.0);
        }
        match std::str::from_utf8(&self.0) {
            Ok(t) => Readable::Text(t.to_owned()),
            Err(_) => Readable::Hex(hex(&self.0)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        if !d.is_human_readable() {
            return Ok(Blob(serde_bytes_vec(d)?));
        }
        match Readable::deserialize(d)? {
            Readable::Text(t) => Ok(Blob(t.into_bytes())),
            Readable::Hex(h) => unhex(&h)
                .map(Blob)
                .ok_or_else(|| serde::de::Error::custom("bad hex in a blob")),
        }
    }
}

/// A byte string, as `serialize_bytes` wrote it.
fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = a.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_postcard_and_json() {
        for b in [
            Blob(b"a=1\n".to_vec()),
            Blob(vec![0xff, 0, 10]),
            Blob::default(),
        ] {
            let p = postcard::to_stdvec(&b).unwrap();
            assert_eq!(p.len(), 1 + b.len(), "postcard keeps raw bytes");
            assert_eq!(postcard::from_bytes::<Blob>(&p).unwrap(), b);
            let j = serde_json::to_string(&b).unwrap();
            assert_eq!(serde_json::from_str::<Blob>(&j).unwrap(), b, "{j}");
        }
        assert_eq!(
            serde_json::to_string(&Blob(b"x\n".to_vec())).unwrap(),
            r#"{"text":"x\n"}"#
        );
    }
}
