//! The Pod Security Standards' `restricted` profile (which includes
//! `baseline`), written out as checks on a pod spec, so simcache can tell
//! before creating a pod whether a namespace that enforces the profile
//! would admit it. Each violation names the field, as the admission
//! controller's messages do.
//!
//! Source: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! (policy version `latest`, Kubernetes 1.30).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SeccompProfile, SecurityContext};

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
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: &str =
    "configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret";

/// Every way `pod` breaks the `restricted` profile; empty when it complies.
pub fn restricted_violations(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["spec: missing".into()];
    };
    let mut out = Vec::new();
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
    out
}

fn pod_level(spec: &PodSpec, out: &mut Vec<String>) {
    for (set, field) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if set == Some(true) {
            out.push(format!("spec.{field}: must not be true"));
        }
    }
    if let Some(sc) = &spec.security_context {
        if sc.run_as_user == Some(0) {
            out.push("spec.securityContext.runAsUser: must not be 0".into());
        }
        if sc.run_as_non_root == Some(false) {
            out.push("spec.securityContext.runAsNonRoot: must not be false".into());
        }
        if let Some(p) = &sc.seccomp_profile
            && !allowed_seccomp(p)
        {
            out.push(format!(
                "spec.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost, not {}",
                p.type_
            ));
        }
        if sc
            .windows_options
            .as_ref()
            .and_then(|w| w.host_process)
            .unwrap_or(false)
        {
            out.push("spec.securityContext.windowsOptions.hostProcess: must not be true".into());
        }
        if let Some(se) = &sc.se_linux_options {
            selinux("spec.securityContext.seLinuxOptions", se, out);
        }
        for s in sc.sysctls.iter().flatten() {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                out.push(format!(
                    "spec.securityContext.sysctls: {} is not a safe sysctl",
                    s.name
                ));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if v.host_path.is_some() {
            out.push(format!(
                "spec.volumes[{}]: hostPath volumes are forbidden",
                v.name
            ));
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
            out.push(format!(
                "spec.volumes[{}]: only {RESTRICTED_VOLUMES} volumes are allowed",
                v.name
            ));
        }
    }
}

fn allowed_seccomp(p: &SeccompProfile) -> bool {
    p.type_ == "RuntimeDefault" || p.type_ == "Localhost"
}

fn selinux(at: &str, se: &k8s_openapi::api::core::v1::SELinuxOptions, out: &mut Vec<String>) {
    if let Some(t) = &se.type_
        && ![
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ]
        .contains(&t.as_str())
    {
        out.push(format!("{at}.type: {t} is not allowed"));
    }
    if se.user.is_some() || se.role.is_some() {
        out.push(format!("{at}: user and role must not be set"));
    }
}

fn container(spec: &PodSpec, list: &str, c: &Container, out: &mut Vec<String>) {
    let at = format!("spec.{list}[{}]", c.name);
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    if sc.privileged == Some(true) {
        out.push(format!("{at}.securityContext.privileged: must not be true"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(format!(
            "{at}.securityContext.allowPrivilegeEscalation: must be false"
        ));
    }
    // runAsNonRoot: true on the container, or on the pod and not undone here.
    let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
    if !non_root {
        out.push(format!(
            "{at}.securityContext.runAsNonRoot: must be true (here or in the pod's securityContext)"
        ));
    }
    if sc.run_as_user == Some(0) {
        out.push(format!("{at}.securityContext.runAsUser: must not be 0"));
    }
    match sc.seccomp_profile.as_ref().or(pod_sc.seccomp_profile.as_ref()) {
        Some(p) if allowed_seccomp(p) => {}
        Some(p) => out.push(format!(
            "{at}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost, not {}",
            p.type_
        )),
        None => out.push(format!(
            "{at}.securityContext.seccompProfile.type: must be set to RuntimeDefault or Localhost (here or in the pod's securityContext)"
        )),
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|d| d == "ALL") {
        out.push(format!(
            "{at}.securityContext.capabilities.drop: must include ALL"
        ));
    }
    for a in caps.add.iter().flatten() {
        if a != "NET_BIND_SERVICE" {
            let why = if BASELINE_CAPS.contains(&a.as_str()) {
                "restricted allows adding only NET_BIND_SERVICE"
            } else {
                "not even baseline allows it"
            };
            out.push(format!(
                "{at}.securityContext.capabilities.add: {a} ({why})"
            ));
        }
    }
    if let Some(se) = &sc.se_linux_options {
        selinux(&format!("{at}.securityContext.seLinuxOptions"), se, out);
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        out.push(format!("{at}.securityContext.procMount: must be Default"));
    }
    if sc
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        .unwrap_or(false)
    {
        out.push(format!(
            "{at}.securityContext.windowsOptions.hostProcess: must not be true"
        ));
    }
    for p in c.ports.iter().flatten() {
        if p.host_port.is_some_and(|h| h != 0) {
            out.push(format!(
                "{at}.ports: hostPort {} is forbidden",
                p.host_port.unwrap_or(0)
            ));
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
}
