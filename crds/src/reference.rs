//! The CRD reference (`docs/reference/crds.md`), rendered from the same
//! schemas the API server validates with, so the docs cannot drift from them.

use std::fmt::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// Markdown for `crds`, in the order given.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         Generated from the Rust types in `crds/src` by `cargo run -p simcache-crds --bin gen-crds`;\n\
         a test fails when this page and the types disagree. `kubectl explain <kind>.<field>`\n\
         shows the same descriptions.\n",
    );
    for crd in crds {
        let s = &crd.spec;
        let Some(v) = s.versions.first() else {
            continue;
        };
        let _ = write!(
            out,
            "\n## {kind}\n\n`{group}/{version}`, {scope}; plural `{plural}`",
            kind = s.names.kind,
            group = s.group,
            version = v.name,
            scope = s.scope.to_lowercase(),
            plural = s.names.plural,
        );
        if let Some(short) = &s.names.short_names {
            let _ = write!(out, ", short names `{}`", short.join("`, `"));
        }
        if let Some(cats) = &s.names.categories {
            let _ = write!(out, ", categories `{}`", cats.join("`, `"));
        }
        out.push_str(".\n");
        if let Some(cols) = &v.additional_printer_columns {
            out.push_str("\n`kubectl get` columns: ");
            let names: Vec<String> = cols
                .iter()
                .map(|c| format!("{} (`{}`)", c.name, c.json_path))
                .collect();
            out.push_str(&names.join(", "));
            out.push_str(".\n");
        }
        let Some(schema) = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
        else {
            continue;
        };
        for part in ["spec", "status"] {
            let Some(p) = schema["properties"].get(part) else {
                continue;
            };
            let _ = write!(out, "\n### {} `.{part}`\n\n", s.names.kind);
            if let Some(d) = p["description"].as_str() {
                let _ = writeln!(out, "{}\n", one_line(d));
            }
            rules(&mut out, &format!(".{part}"), p);
            out.push_str("| field | type | description |\n|---|---|---|\n");
            fields(&mut out, &format!(".{part}"), p);
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn type_of(s: &Value) -> String {
    let t = s["type"]
        .as_str()
        .unwrap_or(if s.get("x-kubernetes-int-or-string").is_some() {
            "int or string"
        } else {
            "any"
        });
    match t {
        "array" => format!("[]{}", type_of(&s["items"])),
        "object" if s["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&s["additionalProperties"]))
        }
        _ => t.to_string(),
    }
}

/// Validation a reader needs next to the description.
fn constraints(s: &Value, required: bool) -> Vec<String> {
    let mut c = Vec::new();
    if required {
        c.push("**required**".to_string());
    }
    if let Some(e) = s["enum"].as_array() {
        let vals: Vec<String> = e
            .iter()
            .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), String::from)))
            .collect();
        c.push(format!("one of {}", vals.join(", ")));
    }
    for (k, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(n) = s.get(k).filter(|v| !v.is_null()) {
            c.push(format!("{label} {n}"));
        }
    }
    if let Some(p) = s["pattern"].as_str() {
        c.push(format!("pattern `{}`", p.replace('|', "\\|")));
    }
    if let Some(d) = s.get("default").filter(|v| !v.is_null()) {
        c.push(format!("default `{d}`"));
    }
    c
}

fn rules(out: &mut String, path: &str, s: &Value) {
    for r in s["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "- Rule on `{path}`: {} (`{}`)",
            one_line(r["message"].as_str().unwrap_or("")),
            r["rule"].as_str().unwrap_or("").replace('|', "\\|")
        );
    }
    if s["x-kubernetes-validations"].is_array() {
        out.push('\n');
    }
}

fn fields(out: &mut String, path: &str, s: &Value) {
    let required: Vec<&str> = s["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(props) = s["properties"].as_object() else {
        return;
    };
    for (name, p) in props {
        let here = format!("{path}.{name}");
        let mut desc = p["description"].as_str().map(one_line).unwrap_or_default();
        let c = constraints(p, required.contains(&name.as_str()));
        if !c.is_empty() {
            desc = format!("{desc} ({})", c.join("; ")).trim().to_string();
        }
        let _ = writeln!(out, "| `{here}` | {} | {desc} |", type_of(p));
        // Kubernetes' own types (conditions, resources) are documented upstream.
        if name == "conditions" || name == "resources" {
            continue;
        }
        let inner = if p["type"] == "array" {
            (format!("{here}[]"), &p["items"])
        } else if p["additionalProperties"].is_object() {
            (format!("{here}.<name>"), &p["additionalProperties"])
        } else {
            (here.clone(), p)
        };
        fields(out, &inner.0, inner.1);
    }
}
