//! Schema pieces the derive cannot express on its own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Any JSON value (number, string, boolean, array, object): kept as given.
pub fn any_value(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// A map from parameter names to any JSON value.
pub fn any_value_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}
