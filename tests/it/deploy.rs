//! The deployment files say what the server needs: one replica on a persistent volume with
//! TCP and UDP exposed and probes through `edgechat health`; a hardened systemd unit that
//! restarts on the storage-failure exit; and `edgechat health` itself.

use crate::support::edgechat_bin;

#[test]
fn the_kubernetes_manifest_has_what_matters() {
    let text = include_str!("../../config/kubernetes/edgechat.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("{k}"));
    let service = kind("Service");
    let protocols: Vec<&str> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|p| p["port"] == 7443)
        .map(|p| p["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(protocols, ["TCP", "UDP"]);
    let set = kind("StatefulSet");
    assert_eq!(set["spec"]["replicas"], 1, "one redb file, one writer");
    let claim = &set["spec"]["volumeClaimTemplates"][0];
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        (&mount["name"], mount["mountPath"].as_str()),
        (&claim["metadata"]["name"], Some("/data"))
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let cmd = &container[probe]["exec"]["command"];
        assert_eq!(cmd[1], "health", "{probe}: {cmd:?}");
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn the_systemd_unit_is_hardened_and_restarts_on_failure() {
    let unit = include_str!("../../config/systemd/edgechat.service");
    for line in [
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=edgechat",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edgechat",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/edgechat serve --data-dir /var/lib/edgechat",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
    // Where systemd itself is on the machine, it must accept the unit too.
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/systemd/edgechat.service"))
        .output()
    else {
        eprintln!("no systemd-analyze here; skipped");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // The binary is not installed at /usr/local/bin on a build machine: that is the only
    // complaint allowed.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("/usr/local/bin/edgechat") || line.contains("not executable"),
            "{line}"
        );
    }
}

/// `edgechat health` against a real `edgechat serve`: SERVING and exit 0; a port where nothing
/// answers: non-zero.
#[test]
fn edgechat_health_says_serving_and_fails_when_nothing_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut served = crate::support::serve_binary(&dir, &[]);
    let ca = dir.join("certs/ca.pem");
    let health = |url: &str, service: &str| {
        edgechat_bin()
            .args(["health", "--service", service, "--server", url, "--ca"])
            .arg(&ca)
            .output()
            .unwrap()
    };
    let url = format!("https://localhost:{}", served.port);
    let out = health(&url, "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    assert!(health(&url, "edgechat.v1.ChatService").status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(!health(&format!("https://localhost:{port}"), "").status.success());
    served.signal(libc::SIGTERM);
    assert!(served.exit_status().success());
}

/// With `[tls] client_auth = "required"`, `edgechat health` (the container and Kubernetes
/// probe) needs a client certificate: without one the handshake fails, with `--cert/--key`
/// it answers SERVING.
#[test]
fn health_presents_a_client_certificate_when_the_server_requires_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut served =
        crate::support::serve_binary(&dir, &[("EDGECHAT_TLS_CLIENT_AUTH", "required")]);
    let url = format!("https://localhost:{}", served.port);
    let health = |cert: bool| {
        let mut cmd = edgechat_bin();
        cmd.args(["health", "--server", &url, "--ca"]).arg(dir.join("certs/ca.pem"));
        if cert {
            cmd.arg("--cert").arg(dir.join("certs/client.pem"));
            cmd.arg("--key").arg(dir.join("certs/client.key"));
        }
        cmd.output().unwrap()
    };
    assert!(!health(false).status.success(), "no client certificate, no answer");
    let out = health(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    served.signal(libc::SIGTERM);
    assert!(served.exit_status().success());
}
