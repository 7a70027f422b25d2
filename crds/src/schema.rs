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

/// Drops the descriptions below a schema's own: the Kubernetes types a pod
/// template embeds (Affinity, Volume, …) carry their whole API reference,
/// which would make the CRD too large for a client-side `kubectl apply`
/// (its annotation holds at most 256 KiB); Kubernetes' own docs describe
/// those fields.
pub fn nested_descriptions_dropped(schema: &mut Schema) {
    let own = schema.get("description").cloned();
    if let Some(v) = schema.as_object_mut() {
        let mut v = serde_json::Value::Object(std::mem::take(v));
        strip_descriptions(&mut v);
        if let (serde_json::Value::Object(mut o), Some(d)) = (v.clone(), own.clone()) {
            o.insert("description".into(), d);
            v = serde_json::Value::Object(o);
        }
        if let Ok(s) = Schema::try_from(v) {
            *schema = s;
        }
    }
}

fn strip_descriptions(v: &mut serde_json::Value) {
    let Some(o) = v.as_object_mut() else {
        return;
    };
    o.remove("description");
    for (k, child) in o.iter_mut() {
        match k.as_str() {
            // A map of field names to schemas (a field may be named `description`).
            "properties" => {
                if let Some(fields) = child.as_object_mut() {
                    fields.values_mut().for_each(strip_descriptions);
                }
            }
            "items" | "additionalProperties" | "not" => strip_descriptions(child),
            "allOf" | "anyOf" | "oneOf" => {
                if let Some(a) = child.as_array_mut() {
                    a.iter_mut().for_each(strip_descriptions);
                }
            }
            _ => {}
        }
    }
}

/// A list of any JSON values.
pub fn any_value_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}
