//! The Pod Security Standards' `baseline` and `restricted` profiles,
//! written out as checks on a pod spec, so simcache can refuse, before
//! creating a pod, one that the level the operator enforces (`restricted`
//! by default) would not admit, and a namespace that enforces the profile
//! admits every pod simcache makes. Each violation names the field, as the
//! admission controller's messages do, and the lowest level that forbids it.
//!
//! Source: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! (policy version `latest`, Kubernetes 1.30).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SeccompProfile, SecurityContext};

/// A Pod Security Standards level: what the operator enforces on the pods
/// it builds (`--pod-security-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Nothing is refused.
    Privileged,
    /// Known privilege escalations are refused (host namespaces, privileged
    /// containers, hostPath, added capabilities beyond the default set).
    Baseline,
    /// `baseline` and the hardening rules (non-root, no escalation, seccomp,
    /// dropped capabilities, volume types).
    #[default]
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Level, UnknownLevel> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            other => Err(UnknownLevel(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod security level {0:?}: expected privileged, baseline or restricted")]
pub struct UnknownLevel(pub String);

/// One rule a pod breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, as the admission controller names it (`spec.volumes[data]`).
    pub field: String,
    pub problem: String,
    /// The lowest level that forbids it.
    pub level: Level,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Capabilities `baseline` lets a container add.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_fin_timeout",
];

/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: &str =
    "configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret";

/// Every way `pod` breaks the `restricted` profile; empty when it complies.
pub fn restricted_violations(pod: &Pod) -> Vec<String> {
    violations(pod, Level::Restricted)
        .iter()
        .map(Violation::to_string)
        .collect()
}

/// The rules of `level` that `pod` breaks; empty when `level` admits it.
pub fn violations(pod: &Pod, level: Level) -> Vec<Violation> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![Violation {
            field: "spec".into(),
            problem: "missing".into(),
            level: Level::Baseline,
        }];
    };
    let mut out = Found(Vec::new());
    apparmor_annotations(pod, &mut out);
    pod_level(spec, &mut out);
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    for (list, c) in containers {
        container(spec, list, c, &mut out);
    }
    out.0
        .into_iter()
        .filter(|v| level != Level::Privileged && v.level <= level)
        .collect()
}

/// The violations found so far.
struct Found(Vec<Violation>);

impl Found {
    fn push(&mut self, level: Level, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            problem: problem.into(),
            level,
        });
    }
}

use Level::{Baseline, Restricted};

fn pod_level(spec: &PodSpec, out: &mut Found) {
    for (set, field) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if set == Some(true) {
            out.push(Baseline, format!("spec.{field}"), "must not be true");
        }
    }
    if let Some(sc) = &spec.security_context {
        if sc.run_as_user == Some(0) {
            out.push(
                Restricted,
                "spec.securityContext.runAsUser",
                "must not be 0",
            );
        }
        if sc.run_as_non_root == Some(false) {
            out.push(
                Restricted,
                "spec.securityContext.runAsNonRoot",
                "must not be false",
            );
        }
        if let Some(p) = &sc.seccomp_profile {
            seccomp("spec.securityContext.seccompProfile.type", p, out);
        }
        if let Some(p) = &sc.app_armor_profile {
            apparmor("spec.securityContext.appArmorProfile.type", p, out);
        }
        if sc
            .windows_options
            .as_ref()
            .and_then(|w| w.host_process)
            .unwrap_or(false)
        {
            out.push(
                Baseline,
                "spec.securityContext.windowsOptions.hostProcess",
                "must not be true",
            );
        }
        if let Some(se) = &sc.se_linux_options {
            selinux("spec.securityContext.seLinuxOptions", se, out);
        }
        for s in sc.sysctls.iter().flatten() {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                out.push(
                    Baseline,
                    "spec.securityContext.sysctls",
                    format!("{} is not a safe sysctl", s.name),
                );
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        let field = format!("spec.volumes[{}]", v.name);
        if v.host_path.is_some() {
            out.push(Baseline, field, "hostPath volumes are forbidden");
            continue;
        }
        let allowed = v.config_map.is_some()
            || v.csi.is_some()
            || v.downward_api.is_some()
            || v.empty_dir.is_some()
            || v.ephemeral.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.secret.is_some();
        if !allowed {
            out.push(
                Restricted,
                field,
                format!("only {RESTRICTED_VOLUMES} volumes are allowed"),
            );
        }
    }
}

/// The AppArmor annotations (before `appArmorProfile` existed): only the
/// runtime's default or a profile on the node.
fn apparmor_annotations(pod: &Pod, out: &mut Found) {
    const PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
    for (k, v) in pod.metadata.annotations.iter().flatten() {
        if k.starts_with(PREFIX) && v != "runtime/default" && !v.starts_with("localhost/") {
            out.push(
                Baseline,
                format!("metadata.annotations[{k}]"),
                format!("AppArmor profile {v} is not allowed (runtime/default or localhost/*)"),
            );
        }
    }
}

/// An AppArmor profile that is set: the runtime's default or one on the node.
fn apparmor(field: &str, p: &k8s_openapi::api::core::v1::AppArmorProfile, out: &mut Found) {
    if p.type_ != "RuntimeDefault" && p.type_ != "Localhost" {
        out.push(
            Baseline,
            field,
            format!("must be RuntimeDefault or Localhost, not {}", p.type_),
        );
    }
}

fn allowed_seccomp(p: &SeccompProfile) -> bool {
    p.type_ == "RuntimeDefault" || p.type_ == "Localhost"
}

/// A seccomp profile that is set: `Unconfined` breaks `baseline`, any
/// other type but the two allowed breaks `restricted`.
fn seccomp(field: &str, p: &SeccompProfile, out: &mut Found) {
    if !allowed_seccomp(p) {
        let level = if p.type_ == "Unconfined" {
            Baseline
        } else {
            Restricted
        };
        out.push(
            level,
            field,
            format!("must be RuntimeDefault or Localhost, not {}", p.type_),
        );
    }
}

fn selinux(at: &str, se: &k8s_openapi::api::core::v1::SELinuxOptions, out: &mut Found) {
    if let Some(t) = &se.type_
        && ![
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ]
        .contains(&t.as_str())
    {
        out.push(
            Baseline,
            format!("{at}.type"),
            format!("{t} is not allowed"),
        );
    }
    if se.user.is_some() || se.role.is_some() {
        out.push(Baseline, at, "user and role must not be set");
    }
}

fn container(spec: &PodSpec, list: &str, c: &Container, out: &mut Found) {
    let at = format!("spec.{list}[{}]", c.name);
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let field = |f: &str| format!("{at}.securityContext.{f}");
    if sc.privileged == Some(true) {
        out.push(Baseline, field("privileged"), "must not be true");
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(
            Restricted,
            field("allowPrivilegeEscalation"),
            "must be false",
        );
    }
    // runAsNonRoot: true on the container, or on the pod and not undone here.
    let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
    if !non_root {
        out.push(
            Restricted,
            field("runAsNonRoot"),
            "must be true (here or in the pod's securityContext)",
        );
    }
    if sc.run_as_user == Some(0) {
        out.push(Restricted, field("runAsUser"), "must not be 0");
    }
    match sc
        .seccomp_profile
        .as_ref()
        .or(pod_sc.seccomp_profile.as_ref())
    {
        Some(p) => seccomp(&field("seccompProfile.type"), p, out),
        None => out.push(
            Restricted,
            field("seccompProfile.type"),
            "must be set to RuntimeDefault or Localhost (here or in the pod's securityContext)",
        ),
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|d| d == "ALL") {
        out.push(Restricted, field("capabilities.drop"), "must include ALL");
    }
    for a in caps.add.iter().flatten() {
        if a == "NET_BIND_SERVICE" {
            continue;
        }
        if BASELINE_CAPS.contains(&a.as_str()) {
            out.push(
                Restricted,
                field("capabilities.add"),
                format!("{a} (restricted allows adding only NET_BIND_SERVICE)"),
            );
        } else {
            out.push(
                Baseline,
                field("capabilities.add"),
                format!("{a} (not even baseline allows it)"),
            );
        }
    }
    if let Some(se) = &sc.se_linux_options {
        selinux(&field("seLinuxOptions"), se, out);
    }
    if let Some(p) = &sc.app_armor_profile {
        apparmor(&field("appArmorProfile.type"), p, out);
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        out.push(Baseline, field("procMount"), "must be Default");
    }
    if sc
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        .unwrap_or(false)
    {
        out.push(
            Baseline,
            field("windowsOptions.hostProcess"),
            "must not be true",
        );
    }
    for p in c.ports.iter().flatten() {
        if let Some(h) = p.host_port.filter(|h| *h != 0) {
            out.push(
                Baseline,
                format!("{at}.ports"),
                format!("hostPort {h} is forbidden"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, ContainerPort, HostPathVolumeSource, PodSecurityContext, Volume,
    };

    fn compliant() -> Pod {
        let sc = SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    security_context: Some(sc),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_rule_is_caught_and_named() {
        assert_eq!(restricted_violations(&compliant()), Vec::<String>::new());
        type Edit = fn(&mut PodSpec);
        let cases: Vec<(Edit, &str)> = vec![
            (|s| s.host_network = Some(true), "spec.hostNetwork"),
            (|s| s.host_pid = Some(true), "spec.hostPID"),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .privileged = Some(true)
                },
                "privileged",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .allow_privilege_escalation = None
                },
                "allowPrivilegeEscalation",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .run_as_non_root = None
                },
                "runAsNonRoot",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .run_as_user = Some(0)
                },
                "runAsUser: must not be 0",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .seccomp_profile = None
                },
                "seccompProfile.type: must be set",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .seccomp_profile = Some(SeccompProfile {
                        type_: "Unconfined".into(),
                        ..Default::default()
                    })
                },
                "not Unconfined",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .capabilities = None
                },
                "drop: must include ALL",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .capabilities
                        .as_mut()
                        .unwrap()
                        .add = Some(vec!["SYS_ADMIN".into()])
                },
                "SYS_ADMIN (not even baseline",
            ),
            (
                |s| {
                    s.volumes = Some(vec![Volume {
                        name: "h".into(),
                        host_path: Some(HostPathVolumeSource {
                            path: "/".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }])
                },
                "hostPath volumes are forbidden",
            ),
            (
                |s| {
                    s.containers[0].ports = Some(vec![ContainerPort {
                        container_port: 80,
                        host_port: Some(80),
                        ..Default::default()
                    }])
                },
                "hostPort 80",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .proc_mount = Some("Unmasked".into())
                },
                "procMount",
            ),
            (
                |s| {
                    s.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .app_armor_profile = Some(k8s_openapi::api::core::v1::AppArmorProfile {
                        type_: "Unconfined".into(),
                        ..Default::default()
                    })
                },
                "appArmorProfile.type: must be RuntimeDefault or Localhost, not Unconfined",
            ),
        ];
        for (edit, want) in cases {
            let mut pod = compliant();
            edit(pod.spec.as_mut().unwrap());
            let v = restricted_violations(&pod);
            assert!(v.iter().any(|m| m.contains(want)), "{want}: {v:?}");
        }
        // Pod-level settings count for every container.
        let mut pod = compliant();
        let spec = pod.spec.as_mut().unwrap();
        let sc = spec.containers[0].security_context.as_mut().unwrap();
        sc.run_as_non_root = None;
        sc.seccomp_profile = None;
        spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    }

    #[test]
    fn each_level_refuses_only_its_own_rules() {
        // Running as root breaks restricted only; hostPath breaks baseline.
        let mut pod = compliant();
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .run_as_non_root = None;
        assert_eq!(violations(&pod, Level::Restricted).len(), 1);
        assert_eq!(violations(&pod, Level::Baseline), vec![]);
        pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let v = violations(&pod, Level::Baseline);
        assert_eq!(
            v.iter()
                .map(|v| (v.field.as_str(), v.level))
                .collect::<Vec<_>>(),
            [("spec.volumes[h]", Level::Baseline)]
        );
        assert_eq!(violations(&pod, Level::Restricted).len(), 2);
        assert_eq!(violations(&pod, Level::Privileged), vec![]);
        assert_eq!("baseline".parse::<Level>(), Ok(Level::Baseline));
        // The older AppArmor annotation is checked too.
        let mut pod = compliant();
        pod.metadata.annotations = Some(
            [(
                "container.apparmor.security.beta.kubernetes.io/c".to_string(),
                "unconfined".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            violations(&pod, Level::Baseline)[0].field,
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]"
        );
        assert!("strict".parse::<Level>().is_err());
    }
}
