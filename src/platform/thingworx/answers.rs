//! Reading the platform's answers: infotables, entity objects, tags and dates in the forms
//! the supported versions send them.

use super::transport::unexpected;
use crate::platform::infotable::text;
use crate::platform::{names, EntitySummary, PlatformError};
use crate::tag::Tag;
use bytes::Bytes;
use serde_json::{Map, Value};

/// An infotable answer as the gateway reads it: its rows. The data shape is skipped without
/// being built, as nothing here reads it and it is often most of a small answer.
pub(super) struct Answer {
    pub(super) rows: Vec<Map<String, Value>>,
}

impl Answer {
    /// The `result` field of a service's one-row answer.
    pub(super) fn result(&self) -> Option<&Value> {
        self.rows.first().and_then(|r| r.get("result"))
    }
}

/// Service results are infotables; services that return nothing may answer with no body at all.
pub(super) fn table(bytes: &Bytes) -> Result<Answer, PlatformError> {
    rows(bytes).map(|rows| Answer { rows })
}

/// An infotable's rows, each read as `R` reads it (the data shape and the fields `R` does not
/// name are skipped without being built); no body at all is no rows.
fn rows<R: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<Vec<R>, PlatformError> {
    #[derive(serde::Deserialize)]
    struct Rows<R> {
        #[serde(default = "Vec::new")]
        rows: Vec<R>,
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<Rows<R>>(bytes)
        .map(|answer| answer.rows)
        .map_err(|e| unexpected("the answer is not an infotable", e))
}

pub(super) fn summaries(bytes: &Bytes) -> Result<Vec<EntitySummary>, PlatformError> {
    Ok(rows::<SummaryRow>(bytes)?
        .into_iter()
        .map(|r| EntitySummary {
            name: field_text(r.name),
            description: field_text(r.description),
        })
        .filter(|s| !s.name.is_empty())
        .collect())
}

/// A listing row as a summary reads it: the other fields are skipped without being built. A
/// `GetEntityList` of 50,000 users read into a map per row held about 100 MiB at once in the
/// gateway, for every page of a SCIM listing; two strings a row hold a tenth of that.
#[derive(serde::Deserialize)]
struct SummaryRow {
    #[serde(default)]
    name: Value,
    #[serde(default)]
    description: Value,
}

/// A name/value table (`GetConfigurationTable` of `UserExtensions`) as pairs, with `None` when
/// it has rows but none has a `name` column. Rows are read into two fields each rather than a
/// map per row: on a user read this table was the largest answer to parse.
pub(super) fn name_value_rows(
    bytes: &Bytes,
) -> Result<Option<Vec<(String, String)>>, PlatformError> {
    #[derive(serde::Deserialize)]
    struct NameValueRow {
        /// `Some` when the column is there, null included.
        #[serde(default, deserialize_with = "present")]
        name: Option<Value>,
        #[serde(default)]
        value: Value,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        serde::Deserialize::deserialize(d).map(Some)
    }

    let rows = rows::<NameValueRow>(bytes)?;
    if !rows.is_empty() && rows.iter().all(|r| r.name.is_none()) {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|r| (field_text(r.name.unwrap_or_default()), field_text(r.value)))
            .collect(),
    ))
}

/// A field as [`text`] reads it from a row: text as is, nothing as empty, anything else as JSON.
fn field_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn bool_result(bytes: &Bytes) -> Result<bool, PlatformError> {
    match table(bytes)?.result() {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(unexpected(
            "expected a boolean result",
            format!("{other:?}"),
        )),
    }
}

/// TAGS come back either as text (`V:T;V:T2`) or as `{vocabulary, vocabularyTerm}` objects.
pub(super) fn parse_tags(value: Option<&Value>) -> Vec<Tag> {
    match value {
        Some(Value::String(s)) => s.split(';').filter_map(Tag::parse).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) => Tag::parse(s),
                Value::Object(o) => {
                    let vocabulary = o.get("vocabulary")?.as_str()?.to_string();
                    let term = o.get("vocabularyTerm")?.as_str()?.to_string();
                    Some(Tag { vocabulary, term })
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An entity read answers with the entity object, or on some versions a one-row infotable.
pub(super) fn entity_object(
    bytes: &Bytes,
    requested: &str,
) -> Result<Map<String, Value>, PlatformError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| unexpected("the entity is not JSON", e))?;
    let object = match value {
        Value::Object(mut o) if o.contains_key("rows") => match o.remove("rows") {
            Some(Value::Array(rows)) => match rows.into_iter().next() {
                Some(Value::Object(row)) => row,
                _ => return Err(PlatformError::NotFound(requested.to_string())),
            },
            _ => return Err(unexpected("malformed entity", requested)),
        },
        Value::Object(o) => o,
        _ => return Err(unexpected("malformed entity", requested)),
    };
    let name = text(&object, "name");
    if !names::same(&name, requested) {
        return Err(unexpected(
            "the platform answered for another entity",
            format!("asked for {requested:?}, got {name:?}"),
        ));
    }
    Ok(object)
}

/// An entity's `lastModifiedDate` (a DATETIME) as RFC 3339 UTC. JSON carries DATETIME as epoch
/// milliseconds, but some versions and extensions answer with text, either the number or an
/// ISO timestamp; anything else is treated as unknown rather than failing the read.
pub(super) fn last_modified(entity: &Map<String, Value>) -> Option<String> {
    use crate::rfc3339::{millis_from_rfc3339, rfc3339_from_millis};
    let millis = match entity.get("lastModifiedDate")? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))?,
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => millis_from_rfc3339(s)?,
        },
        _ => return None,
    };
    // Far outside the years four digits can show: not a date the platform meant.
    (-62_135_596_800_000..=253_402_300_799_999)
        .contains(&millis)
        .then(|| rfc3339_from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Option<Vec<(String, String)>> {
        name_value_rows(&Bytes::from(text.to_string())).unwrap()
    }

    #[test]
    fn a_name_value_table_reads_as_the_map_per_row_reading_did() {
        let pairs = |list: &[(&str, &str)]| {
            Some(
                list.iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        // Strings as they are, null and missing as empty, anything else as its JSON text, and
        // other columns and the data shape skipped.
        assert_eq!(
            rows(
                r#"{"dataShape":{"fieldDefinitions":{"name":{"name":"name","baseType":"STRING"}}},
                "rows":[{"name":"emailAddress","value":"a@b.c","extra":[1]},
                {"name":"city","value":null},{"name":"zip"},{"name":7,"value":1.5},
                {"name":"flag","value":true},{"name":"o","value":{"k":"v"}},{"value":"nameless"}]}"#
            ),
            pairs(&[
                ("emailAddress", "a@b.c"),
                ("city", ""),
                ("zip", ""),
                ("7", "1.5"),
                ("flag", "true"),
                ("o", r#"{"k":"v"}"#),
                ("", "nameless"),
            ])
        );
        assert_eq!(rows(" \n"), pairs(&[]));
        assert_eq!(rows(r#"{"rows":[]}"#), pairs(&[]));
        assert_eq!(rows("{}"), pairs(&[]));
        // A name column that is there but null still counts as there.
        assert_eq!(
            rows(r#"{"rows":[{"name":null,"value":"v"}]}"#),
            pairs(&[("", "v")])
        );
        // Rows, none with a name column: not a name/value table.
        assert_eq!(
            rows(r#"{"rows":[{"key":"a","value":"b"},{"value":"c"}]}"#),
            None
        );
        for broken in [r#"{"rows":{}}"#, "[1]", "{\"rows\":[", "<html>"] {
            assert!(
                name_value_rows(&Bytes::from(broken)).is_err(),
                "{broken} was accepted"
            );
        }
    }
}
