//! The variants of a serde enum, as its derive lists them: taken from the
//! code, so tests that cover every variant see a new one by themselves.

/// The variant names (kebab-case, in declaration order, so a name's
/// position is its postcard index) that serde's derive hands a deserializer
/// for enum `T`: taken from the code, so a new variant is seen here without
/// anyone editing this test.
pub fn variants_of<T: for<'de> serde::Deserialize<'de>>() -> Vec<&'static str> {
    use serde::de::{self, Deserializer, Visitor};

    struct Catch<'a>(&'a mut Vec<&'static str>);

    #[derive(Debug)]
    struct Caught;
    impl std::fmt::Display for Caught {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("caught")
        }
    }
    impl std::error::Error for Caught {}
    impl de::Error for Caught {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Caught
        }
    }

    impl<'de> Deserializer<'de> for Catch<'_> {
        type Error = Caught;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
            Err(Caught)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Caught> {
            self.0.extend_from_slice(variants);
            Err(Caught)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    let mut variants = Vec::new();
    let _ = T::deserialize(Catch(&mut variants));
    assert!(!variants.is_empty(), "not an enum");
    variants
}
