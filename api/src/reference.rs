//! The HTTP API reference (`docs/reference/http-api.md`), rendered from the
//! OpenAPI document the server serves, so the page lists exactly the routes
//! there are. A test regenerates it and fails on drift
//! (`SIMCACHE_UPDATE_DOCS=1` rewrites it).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

pub fn markdown(doc: &Value) -> String {
    let mut out = String::from(
        "# HTTP API reference (operator)\n\n\
         Generated from the OpenAPI document the operator serves at `/openapi.json`\n\
         (a test fails when this page and the routes disagree; `SIMCACHE_UPDATE_DOCS=1 cargo test -p simcache-api --test system` rewrites it).\n\
         Routes marked *session* need an `X-Session-ID` header (see [sessions](../cache-api.md));\n\
         errors are JSON `{\"error\": \"...\"}` with a 4xx/5xx status.\n",
    );
    // tag -> [(path, method, operation)]
    let mut by_tag: BTreeMap<String, Vec<(String, String, &Value)>> = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
            by_tag
                .entry(tag)
                .or_default()
                .push((path.clone(), method.to_uppercase(), op));
        }
    }
    for (tag, mut ops) in by_tag {
        ops.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let _ = write!(out, "\n## {tag}\n");
        for (path, method, op) in ops {
            let _ = write!(out, "\n### `{method} {path}`\n\n");
            let summary = [op["summary"].as_str(), op["description"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !summary.is_empty() {
                let _ = writeln!(out, "{}\n", summary.trim());
            }
            if op["security"].is_array() {
                out.push_str("Auth: *session*.\n\n");
            }
            let params: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "`{}` ({}{})",
                        p["name"].as_str().unwrap_or(""),
                        p["in"].as_str().unwrap_or(""),
                        if p["required"] == true {
                            ", required"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            if !params.is_empty() {
                let _ = writeln!(out, "Parameters: {}.\n", params.join(", "));
            }
            if let Some(body) = op["requestBody"]["content"].as_object() {
                let types: Vec<&str> = body.keys().map(String::as_str).collect();
                let _ = writeln!(out, "Body: {}.\n", types.join(", "));
            }
            let codes: Vec<String> = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| match r["description"].as_str() {
                    Some(d) if !d.is_empty() => format!("{code} {d}"),
                    _ => code.clone(),
                })
                .collect();
            let _ = writeln!(out, "Responses: {}.", codes.join("; "));
        }
    }
    out
}
