//! The chart's README, generated from `values.yaml`: each value's dotted
//! key, its default and the comment above it, in file order. The comments
//! are the one place a value is described; this only lays them out.

/// One documented value.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub key: String,
    pub default: String,
    pub about: String,
}

/// The values of `values.yaml` with their comments. Keys whose value is a
/// nested map become the parents of dotted keys; a comment on a parent is
/// shown once, on its own row.
pub fn rows(values_yaml: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    // (indent, key) of the maps we are inside.
    let mut path: Vec<(usize, String)> = Vec::new();
    let lines: Vec<&str> = values_yaml.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let trimmed = raw.trim_start();
        let indent = raw.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            comment.push(c.trim().to_string());
            continue;
        }
        // List items and block scalars belong to the key above.
        if trimmed.starts_with("- ") || trimmed == "-" {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        if key.contains(' ') || key.starts_with('"') {
            continue;
        }
        while path.last().is_some_and(|(d, _)| *d >= indent) {
            path.pop();
        }
        let dotted = path
            .iter()
            .map(|(_, k)| k.as_str())
            .chain(std::iter::once(key))
            .collect::<Vec<_>>()
            .join(".");
        let value = rest.trim();
        // A bare `key:` opens a map (or a list on the next lines).
        let opens = value.is_empty();
        let next_is_list = lines
            .get(i + 1)
            .is_some_and(|l| l.trim_start().starts_with("- "));
        let about = comment.join(" ");
        comment.clear();
        if opens && !next_is_list {
            if !about.is_empty() {
                out.push(Row {
                    key: dotted.clone(),
                    default: String::new(),
                    about,
                });
            }
            path.push((indent, key.to_string()));
            continue;
        }
        let default = if opens {
            "(a list)".to_string()
        } else {
            value.split(" #").next().unwrap_or(value).trim().to_string()
        };
        out.push(Row {
            key: dotted,
            default,
            about,
        });
    }
    out
}

/// The README: the chart's description, install lines and the values table.
pub fn markdown(chart_yaml: &str, values_yaml: &str) -> String {
    let chart: serde_yaml::Value = serde_yaml::from_str(chart_yaml).unwrap_or_default();
    let text = |k: &str| chart[k].as_str().unwrap_or_default().trim().to_string();
    let mut md = format!(
        "<!-- Generated from values.yaml by `cargo run -p simcache-crds --bin gen-crds`; do not edit. -->\n# {} {}\n\n{}\n\n",
        text("name"),
        text("version"),
        text("description")
    );
    md.push_str(
        "```sh\nhelm install simcache charts/simcache -n simcache --create-namespace \\\n  --set database.existingSecret=simcache-db\n# or, on kind/minikube: -f charts/simcache/values-kind.yaml\n```\n\n",
    );
    md.push_str(&format!(
        "Needs Kubernetes {}. Start with [the quick start on kind](../../docs/quickstart-kind.md); [operations](../../docs/operations.md) explains the choices, [upgrade and uninstall](../../docs/upgrade-and-uninstall.md) the lifecycle.\n\n## Values\n\n| key | default | description |\n|---|---|---|\n",
        text("kubeVersion")
    ));
    for r in rows(values_yaml) {
        let default = if r.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", r.default.replace('|', "\\|"))
        };
        md.push_str(&format!(
            "| `{}` | {} | {} |\n",
            r.key,
            default,
            r.about.replace('|', "\\|")
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_defaults_and_comments_are_read_in_order() {
        let y = "# Top.\n\n# Replicas.\nreplicaCount: 2\n\nimage:\n  repository: x/op\n  # The tag.\n  tag: \"\" # inline\ncrds:\n  # Install.\n  install: true\nlist:\n  - a\nempty: []\n";
        let r = rows(y);
        let got: Vec<(&str, &str, &str)> = r
            .iter()
            .map(|r| (r.key.as_str(), r.default.as_str(), r.about.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("replicaCount", "2", "Replicas."),
                ("image.repository", "x/op", ""),
                ("image.tag", "\"\"", "The tag."),
                ("crds.install", "true", "Install."),
                ("list", "(a list)", ""),
                ("empty", "[]", ""),
            ]
        );
    }
}
