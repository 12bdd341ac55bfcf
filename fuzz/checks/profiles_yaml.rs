//! `profiles::parse_yaml`, differentially against `yaml-rust2` (a YAML 1.2 parser, here only as
//! the oracle): never panics, and whatever kitebridge's reader accepts, yaml-rust2 parses as one
//! document to the same tree — every scalar as its text (plain, quoted, escapes undone), an
//! absent node as null, the same keys (a duplicate reported by kitebridge is a duplicate there
//! too, and the first occurrence is the one kept). Then `Generation::parse` agrees that the
//! bytes are YAML: it never calls them invalid YAML when the reader accepted them.
#![forbid(unsafe_code)]

use kitebridge::{FileError, Generation, parse_yaml};
use serde_json::{Map, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

pub fn check(data: &[u8]) {
    let Ok(document) = parse_yaml(data) else {
        return;
    };
    let text = std::str::from_utf8(data).expect("the reader accepted bytes that are not UTF-8");
    let (value, duplicates) = match oracle(text) {
        Ok(found) => found,
        Err(why) => panic!("kitebridge accepts what yaml-rust2 refuses ({why}): {text:?}"),
    };
    assert_eq!(
        value, document.value,
        "kitebridge and yaml-rust2 read different trees from {text:?}"
    );
    assert_eq!(
        duplicates,
        document.duplicates.len(),
        "duplicate keys counted differently in {text:?}"
    );
    if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        assert!(
            !matches!(Generation::parse(data), Err(FileError::Yaml(_))),
            "the reader accepts what Generation::parse calls invalid YAML: {text:?}"
        );
    }
}

/// The one document of `text` as yaml-rust2 parses it, and how many duplicate keys it has;
/// `Err` when yaml-rust2 refuses it or it is not exactly one plain document.
pub fn oracle(text: &str) -> Result<(Value, usize), String> {
    let mut parser = Parser::new_from_str(text);
    let mut events = Vec::new();
    loop {
        let (event, _) = parser.next_token().map_err(|e| e.to_string())?;
        if event == Event::StreamEnd {
            break;
        }
        events.push(event);
    }
    let mut events = events.into_iter();
    if events.next() != Some(Event::StreamStart) || events.next() != Some(Event::DocumentStart) {
        return Err("no document".into());
    }
    let mut duplicates = 0;
    let first = events.next().ok_or("empty document")?;
    let value = node(first, &mut events, &mut duplicates)?;
    if events.next() != Some(Event::DocumentEnd) || events.next().is_some() {
        return Err("not exactly one document".into());
    }
    Ok((value, duplicates))
}

fn node(
    event: Event,
    events: &mut impl Iterator<Item = Event>,
    duplicates: &mut usize,
) -> Result<Value, String> {
    match event {
        Event::Scalar(text, style, anchor, tag) => {
            if anchor != 0 || tag.is_some() {
                return Err("anchor or tag".into());
            }
            Ok(match style {
                TScalarStyle::Plain if text.is_empty() => Value::Null,
                TScalarStyle::Literal | TScalarStyle::Folded => {
                    return Err("block scalar".into());
                }
                _ => Value::String(text),
            })
        }
        Event::SequenceStart(anchor, tag) => {
            if anchor != 0 || tag.is_some() {
                return Err("anchor or tag".into());
            }
            let mut items = Vec::new();
            loop {
                match events.next().ok_or("unterminated sequence")? {
                    Event::SequenceEnd => return Ok(Value::Array(items)),
                    event => items.push(node(event, events, duplicates)?),
                }
            }
        }
        Event::MappingStart(anchor, tag) => {
            if anchor != 0 || tag.is_some() {
                return Err("anchor or tag".into());
            }
            let mut object = Map::new();
            loop {
                let key = match events.next().ok_or("unterminated mapping")? {
                    Event::MappingEnd => return Ok(Value::Object(object)),
                    Event::Scalar(text, _, 0, None) => text,
                    _ => return Err("a key that is not a plain scalar".into()),
                };
                let value = node(
                    events.next().ok_or("a key without value")?,
                    events,
                    duplicates,
                )?;
                if object.contains_key(&key) {
                    *duplicates += 1;
                } else {
                    object.insert(key, value);
                }
            }
        }
        Event::Alias(_) => Err("alias".into()),
        other => Err(format!("unexpected {other:?}")),
    }
}
