//! The settings document the operator hands a run pod's sidecar: every
//! value that comes from a custom resource (its systems of record, its SFM
//! devices) as typed JSON in one variable ([`crate::pod_env::POD_SETTINGS`]),
//! never joined into a delimited string and split again. The sidecar parses
//! it with [`PodSettings::parse`] and stops, naming the field, when it does
//! not fit.

use serde::{Deserialize, Serialize};
use simcache_crds::fields::{
    is_bucket_name, is_namespace, is_object_name, is_relative_path, is_sor_name,
};

/// The sidecar's share of a run pod's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSettings {
    /// The systems of record the sidecar caches, by the name the
    /// simulation uses in `/sor/{name}/...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems_of_record: Vec<SorSetting>,
    /// The SFMDevices the pod's SFM proxy may serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sfm_devices: Vec<DeviceRef>,
}

/// One system of record: exactly one of `s3` or `directory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SorSetting {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Place>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryPlace>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Place {
    pub bucket: String,
    /// A clean relative path; empty for the whole bucket.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectoryPlace {
    /// Inside the sidecar: `/sor/{name}` and a clean relative path under it.
    pub path: String,
}

/// A device the pod may reach, by its object's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRef {
    pub namespace: String,
    pub name: String,
}

/// Where directory systems of record are mounted in the sidecar.
pub const SOR_DIRECTORY_ROOT: &str = "/sor";

/// A settings document that does not fit, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{env}: {field}: {problem}", env = crate::pod_env::POD_SETTINGS)]
pub struct SettingsError {
    /// The field's path in the document (`systemsOfRecord[1].s3.prefix`).
    pub field: String,
    pub problem: String,
}

impl PodSettings {
    /// Parses and checks a document; the error names the first field at fault.
    pub fn parse(text: &str) -> Result<PodSettings, SettingsError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let settings: PodSettings =
            serde_path_to_error::deserialize(de).map_err(|e| SettingsError {
                field: match e.path().to_string() {
                    p if p == "." => "(document)".to_string(),
                    p => p,
                },
                problem: e.inner().to_string(),
            })?;
        settings.check()?;
        Ok(settings)
    }

    /// The document as the operator writes it.
    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The rules the types cannot say: names, clean paths, one place each.
    pub fn check(&self) -> Result<(), SettingsError> {
        let refuse = |field: String, problem: &str| {
            Err(SettingsError {
                field,
                problem: problem.to_string(),
            })
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.systems_of_record.iter().enumerate() {
            let at = |f: &str| format!("systemsOfRecord[{i}]{f}");
            if !is_sor_name(&s.name) {
                return refuse(
                    at(".name"),
                    "1-63 lowercase letters, digits and '-', starting with a letter",
                );
            }
            if !names.insert(s.name.as_str()) {
                return refuse(at(".name"), "a second system of record with this name");
            }
            match (&s.s3, &s.directory) {
                (Some(s3), None) => {
                    if !is_bucket_name(&s3.bucket) {
                        return refuse(
                            at(".s3.bucket"),
                            "3-63 lowercase letters, digits, '.' and '-'",
                        );
                    }
                    if !is_relative_path(&s3.prefix) {
                        return refuse(at(".s3.prefix"), "not a clean relative path");
                    }
                }
                (None, Some(d)) => {
                    let root = format!("{SOR_DIRECTORY_ROOT}/{}", s.name);
                    let under = d
                        .path
                        .strip_prefix(&root)
                        .map(|r| r.trim_start_matches('/'));
                    let clean = d.path == root
                        || (d.path.starts_with(&format!("{root}/"))
                            && under.is_some_and(is_relative_path));
                    if !clean {
                        return refuse(
                            at(".directory.path"),
                            "must be /sor/{name} or a clean relative path under it",
                        );
                    }
                }
                _ => return refuse(at(""), "set exactly one of s3 or directory"),
            }
        }
        for (i, d) in self.sfm_devices.iter().enumerate() {
            if !is_namespace(&d.namespace) {
                return refuse(format!("sfmDevices[{i}].namespace"), "not a namespace name");
            }
            if !is_object_name(&d.name) {
                return refuse(format!("sfmDevices[{i}].name"), "not an object name");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> PodSettings {
        PodSettings {
            systems_of_record: vec![
                SorSetting {
                    name: "data".into(),
                    s3: Some(S3Place {
                        bucket: "lab-data".into(),
                        prefix: "inputs/2026/".into(),
                    }),
                    directory: None,
                },
                SorSetting {
                    name: "meshes".into(),
                    s3: None,
                    directory: Some(DirectoryPlace {
                        path: "/sor/meshes/v2".into(),
                    }),
                },
            ],
            sfm_devices: vec![DeviceRef {
                namespace: "field".into(),
                name: "unit-a".into(),
            }],
        }
    }

    #[test]
    fn a_document_round_trips() {
        let d = doc();
        assert_eq!(PodSettings::parse(&d.to_json()).unwrap(), d);
        assert_eq!(PodSettings::parse("{}").unwrap(), PodSettings::default());
    }

    #[test]
    fn a_bad_field_is_named() {
        let field = |text: &str| PodSettings::parse(text).unwrap_err().field;
        assert_eq!(
            field(r#"{"systemsOfRecord": [{"name": "a", "s3": {"bucket": 3}}]}"#),
            "systemsOfRecord[0].s3.bucket"
        );
        assert_eq!(
            field(r#"{"sfmDevices": [{"namespace": "x"}]}"#),
            "sfmDevices[0]"
        );
        assert_eq!(field(r#"{"bogus": 1}"#), "bogus");
        assert_eq!(field("not json"), "(document)");
        let e = PodSettings::parse(r#"{"sfmDevices": [{"namespace": "x"}]}"#).unwrap_err();
        assert!(e.problem.contains("missing field `name`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("SIMCACHE_POD_SETTINGS: sfmDevices[0]: "),
            "{e}"
        );
    }

    #[test]
    fn values_that_would_smuggle_a_second_setting_are_refused() {
        let mut d = doc();
        d.systems_of_record[0].s3.as_mut().unwrap().prefix = "x,db=file:///etc".into();
        assert_eq!(d.check().unwrap_err().field, "systemsOfRecord[0].s3.prefix");
        let mut d = doc();
        d.systems_of_record[1].directory.as_mut().unwrap().path = "/sor/meshes/../../etc".into();
        assert_eq!(
            d.check().unwrap_err().field,
            "systemsOfRecord[1].directory.path"
        );
        let mut d = doc();
        d.systems_of_record[1].directory.as_mut().unwrap().path = "/etc/simcache".into();
        assert!(d.check().is_err());
        let mut d = doc();
        d.sfm_devices[0].name = "unit-a,other/unit-b".into();
        assert_eq!(d.check().unwrap_err().field, "sfmDevices[0].name");
        let mut d = doc();
        d.systems_of_record[1].name = "data".into();
        d.systems_of_record[1].directory.as_mut().unwrap().path = "/sor/data".into();
        assert!(d.check().unwrap_err().problem.contains("second"));
        let mut d = doc();
        d.systems_of_record[0].directory = Some(DirectoryPlace {
            path: "/sor/data".into(),
        });
        assert_eq!(d.check().unwrap_err().field, "systemsOfRecord[0]");
    }
}
