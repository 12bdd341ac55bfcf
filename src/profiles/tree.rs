//! The parsed profile file, as both readers (JSON and YAML) produce it and the schema walk
//! consumes it: `serde_json::Value`'s shape, with an object kept as a list of its entries in
//! document order.
//!
//! Why not `serde_json::Value` itself: its object is a B-tree whose every node has room for 11
//! entries, so a two-key rule object takes a node of about 600 bytes. A 10 000-profile file made
//! a tree of about 25 MB, and giving the process that memory (page faults) and taking it back was
//! most of the load. Here a rule object is one allocation of a few entries.
//!
//! Duplicate keys never reach a tree: the readers check each key with [`ObjectBuilder`] and keep
//! the first. The builder tests a key against the entries one by one while an object is small
//! and through a set of its keys once it is not, so an object of many keys costs linear time.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use serde_json::{Map, Number, Value};

/// A parsed value.
#[derive(Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Object),
}

/// An object: its entries in document order, each key once.
#[derive(Debug, PartialEq)]
pub(crate) struct Object(Vec<(String, Node)>);

impl Object {
    /// The keys, in document order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| key.as_str())
    }

    /// Takes the value of `key` out of the object.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Node> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }
}

/// Up to this many entries, a key is looked for among the entries themselves.
const SMALL_OBJECT: usize = 8;

/// An object being read: [`ObjectBuilder::contains_key`] before [`ObjectBuilder::insert`].
#[derive(Default)]
pub(crate) struct ObjectBuilder {
    entries: Vec<(String, Node)>,
    /// Every key, once the object has more than [`SMALL_OBJECT`] entries.
    keys: Option<HashSet<String>>,
}

impl ObjectBuilder {
    pub(crate) fn new() -> ObjectBuilder {
        ObjectBuilder::default()
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        match &self.keys {
            Some(keys) => keys.contains(key),
            None => self.entries.iter().any(|(k, _)| k == key),
        }
    }

    /// Adds an entry whose key the object does not hold (checked with `contains_key`).
    pub(crate) fn insert(&mut self, key: String, value: Node) {
        match &mut self.keys {
            Some(keys) => {
                keys.insert(key.clone());
            }
            None if self.entries.len() >= SMALL_OBJECT => {
                let mut keys: HashSet<String> =
                    self.entries.iter().map(|(k, _)| k.clone()).collect();
                keys.insert(key.clone());
                self.keys = Some(keys);
            }
            None => {}
        }
        self.entries.push((key, value));
    }

    pub(crate) fn finish(self) -> Object {
        Object(self.entries)
    }
}

impl Node {
    /// The same tree as a `serde_json::Value` (for the public YAML reader and for tests).
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::Array(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
            Node::Object(Object(entries)) => Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, value.into_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// A `serde_json::Value` as a tree (tests write their documents with `json!`).
#[cfg(test)]
impl From<Value> for Node {
    fn from(value: Value) -> Node {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(s),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from).collect()),
            Value::Object(map) => Node::Object(Object(
                map.into_iter().map(|(k, v)| (k, Node::from(v))).collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Node {
        Node::String(s.to_owned())
    }

    #[test]
    fn keys_are_found_before_and_after_the_object_grows_past_small() {
        let mut object = ObjectBuilder::new();
        for i in 0..3 * SMALL_OBJECT {
            let key = format!("k{i}");
            assert!(!object.contains_key(&key), "{key}");
            object.insert(key.clone(), string(&key));
            for j in 0..=i {
                assert!(object.contains_key(&format!("k{j}")), "{i} {j}");
            }
            assert!(!object.contains_key(&format!("k{}", i + 1)));
        }
        let mut object = object.finish();
        let keys: Vec<&str> = object.keys().collect();
        assert_eq!(keys.len(), 3 * SMALL_OBJECT);
        assert_eq!(keys.first(), Some(&"k0"), "document order");
        assert_eq!(object.remove("k5"), Some(string("k5")));
        assert_eq!(object.remove("k5"), None, "taken out");
        assert_eq!(object.keys().count(), 3 * SMALL_OBJECT - 1);
    }

    #[test]
    fn into_value_is_the_same_tree() {
        let mut inner = ObjectBuilder::new();
        inner.insert("b".into(), Node::Array(vec![Node::Null, Node::Bool(true)]));
        inner.insert("a".into(), Node::Number(Number::from(7)));
        let tree = Node::Array(vec![string("s"), Node::Object(inner.finish())]);
        assert_eq!(
            tree.into_value(),
            serde_json::json!(["s", {"a": 7, "b": [null, true]}])
        );
    }
}
