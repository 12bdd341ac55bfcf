//! Strict JSON for the profile file: `serde_json` syntax, plus duplicate object keys reported as
//! problems with their JSON path, and the [`Path`] type that names a place in the document.
//!
//! Why a custom seed: `serde_json::Value` silently keeps the last of two equal keys, so
//! `{"name": "a", "name": "b"}` would quietly mean `b`. A [`DeserializeSeed`] that builds the
//! tree ([`Node`]) itself sees every key, and because a seed carries state it also knows *where* it is, so
//! a duplicate is reported as `$.organization.profiles[0].name: duplicate key` — the same form as
//! every other whole-file problem — and parsing goes on, so every duplicate is reported at once.
//! Depth stays bounded by `serde_json`'s recursion limit (128), which the seed does not bypass.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::tree::{Node, ObjectBuilder};

/// A place in the document, as a JSONPath-like string: `$`, `$.pipeline.profiles[1].name`.
/// Keys that are not plain identifiers are shown quoted: `$["a b"]`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub(crate) fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }
}

impl Path<'_> {
    /// The path as a string (`$.pipeline.profiles[1].name`), built without the formatting
    /// machinery: one is made for every profile and rule of a file.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(48);
        self.push_to(&mut out);
        out
    }

    fn push_to(&self, out: &mut String) {
        match self {
            Path::Root => out.push('$'),
            Path::Key(parent, key) => {
                parent.push_to(out);
                let plain =
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    out.push('.');
                    out.push_str(key);
                } else {
                    let _ = write!(out, "[{key:?}]");
                }
            }
            Path::Index(parent, index) => {
                parent.push_to(out);
                // One integer: the formatting machinery is cheap for that (the cost was the
                // recursion through nested `Display`s).
                let _ = write!(out, "[{index}]");
            }
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Parses JSON, pushing the path of every duplicate key (the first occurrence is kept) to
/// `duplicates`. A syntax error stops the parse and is returned.
pub(crate) fn parse(bytes: &[u8], duplicates: &mut Vec<String>) -> Result<Node, serde_json::Error> {
    let found = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = NodeSeed {
        path: Path::Root,
        duplicates: &found,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    duplicates.extend(found.into_inner());
    Ok(value)
}

/// Builds a [`Node`] at `path`, recording duplicate keys.
struct NodeSeed<'a> {
    path: Path<'a>,
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(Number::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(Number::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        // Like `serde_json::Value::from`: a float JSON cannot hold (never read from text) is null.
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = self.path.index(items.len());
            let seed = NodeSeed {
                path,
                duplicates: self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Node::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut object = ObjectBuilder::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.path.key(&key);
            let value = map.next_value_seed(NodeSeed {
                path,
                duplicates: self.duplicates,
            })?;
            if object.contains_key(&key) {
                self.duplicates.borrow_mut().push(path.render());
            } else {
                object.insert(key, value);
            }
        }
        Ok(Node::Object(object.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicates_of(text: &str) -> Vec<String> {
        let mut duplicates = Vec::new();
        parse(text.as_bytes(), &mut duplicates).unwrap();
        duplicates
    }

    #[test]
    fn reports_every_duplicate_with_its_path() {
        let text = r#"{"a": [{"x": 1, "x": 2}], "b": {"c d": 1, "c d": 2}, "a": 3}"#;
        assert_eq!(duplicates_of(text), [r#"$.a[0].x"#, r#"$.b["c d"]"#, "$.a"]);
    }

    #[test]
    fn keeps_the_first_of_two_equal_keys_and_parses_every_type() {
        let mut duplicates = Vec::new();
        let text = r#"{"k": [null, true, -1, 18446744073709551615, 1.5, "s"], "k": 0}"#;
        let value = parse(text.as_bytes(), &mut duplicates).unwrap();
        assert_eq!(
            value.into_value(),
            serde_json::json!({"k": [null, true, -1, 18446744073709551615u64, 1.5, "s"]})
        );
    }

    #[test]
    fn syntax_errors_and_trailing_data_fail() {
        for text in ["{", "{} {}", "[1,]", "{\"a\" 1}", "\u{feff}{}", "nul"] {
            assert!(parse(text.as_bytes(), &mut Vec::new()).is_err(), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            parse(deep.as_bytes(), &mut Vec::new()).is_err(),
            "recursion limit"
        );
    }

    #[test]
    fn paths_render_like_jsonpath() {
        let root = Path::Root;
        let pipeline = root.key("pipeline");
        let profiles = pipeline.key("profiles");
        let first = profiles.index(1);
        assert_eq!(
            first.key("valuePattern").to_string(),
            "$.pipeline.profiles[1].valuePattern"
        );
        assert_eq!(root.key("a\"b").to_string(), r#"$["a\"b"]"#);
        assert_eq!(root.key("").to_string(), r#"$[""]"#);
    }
}
