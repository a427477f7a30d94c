//! The platform's table format, used for service inputs and results:
//! `{"dataShape":{"fieldDefinitions":{..}},"rows":[{..}]}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InfoTable {
    #[serde(rename = "dataShape", default)]
    pub data_shape: DataShape,
    #[serde(default)]
    pub rows: Vec<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DataShape {
    #[serde(rename = "fieldDefinitions", default)]
    pub field_definitions: BTreeMap<String, FieldDefinition>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldDefinition {
    pub name: String,
    #[serde(rename = "baseType")]
    pub base_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub ordinal: i64,
    #[serde(default)]
    pub aspects: Map<String, Value>,
}

impl InfoTable {
    /// A one-row table; the data shape declares every column, which every platform version
    /// accepts (rows alone are not guaranteed to be).
    pub fn single_row(fields: &[(&str, &str, Value)]) -> Self {
        let mut table = InfoTable::default();
        let mut row = Map::new();
        for (ordinal, (name, base_type, value)) in fields.iter().enumerate() {
            table.data_shape.field_definitions.insert(
                name.to_string(),
                FieldDefinition {
                    name: name.to_string(),
                    base_type: base_type.to_string(),
                    description: String::new(),
                    ordinal: ordinal as i64,
                    aspects: Map::new(),
                },
            );
            row.insert(name.to_string(), value.clone());
        }
        table.rows.push(row);
        table
    }

    /// The `result` of a service whose output is a primitive (one row, one `result` field).
    pub fn result(&self) -> Option<&Value> {
        self.rows.first().and_then(|r| r.get("result"))
    }
}

/// A row's field as text: strings as they are, numbers and booleans printed, null/missing empty.
pub fn text(row: &Map<String, Value>, field: &str) -> String {
    match row.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_platform_output_and_ignores_extra_keys() {
        let t: InfoTable = serde_json::from_value(json!({
            "dataShape": {"fieldDefinitions": {"result": {"name": "result", "baseType": "BOOLEAN",
                "description": "", "ordinal": 0, "aspects": {"isPrimaryKey": false}}}},
            "rows": [{"result": true}],
            "somethingElse": 1
        }))
        .unwrap();
        assert_eq!(t.result(), Some(&json!(true)));
    }

    #[test]
    fn rows_without_shape_are_accepted() {
        let t: InfoTable = serde_json::from_value(json!({"rows": [{"name": "a"}]})).unwrap();
        assert_eq!(text(&t.rows[0], "name"), "a");
        assert_eq!(text(&t.rows[0], "missing"), "");
    }

    #[test]
    fn single_row_declares_its_columns() {
        let t = InfoTable::single_row(&[("userName", "USERNAME", json!("jdoe"))]);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v["dataShape"]["fieldDefinitions"]["userName"]["baseType"],
            "USERNAME"
        );
        assert_eq!(v["rows"][0]["userName"], "jdoe");
    }
}
