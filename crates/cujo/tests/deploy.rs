//! Deployment artefacts stay deployable: every example config passes the real `cujo check`;
//! each Kubernetes manifest's ConfigMap embeds one of them verbatim (and passes `cujo check`
//! as extracted); the manifests are structurally sound (kinds, probes on the admin port, the
//! Secret behind every `${env:…}` the config needs, Services that select the pods); and the
//! Dockerfile exposes the ports the image's config listens on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cujo::config::Config;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Values the example configs read from the environment (Secrets, in Kubernetes).
const ENV: [(&str, &str); 10] = [
    ("HONEYCOMB_API_KEY", "test-key"),
    ("NEW_RELIC_LICENSE_KEY", "test-nr-key"),
    ("DD_API_KEY", "test-dd-key"),
    ("MACKEREL_APIKEY", "test-mackerel-key"),
    ("CUJO_GATEWAY_TOKEN", "test-gateway-token"),
    ("CHECKOUT_TOKEN", "test-checkout-token"),
    ("CHECKOUT_HONEYCOMB_KEY", "test-checkout-key"),
    ("SEARCH_TOKEN", "test-search-token"),
    ("SEARCH_HONEYCOMB_KEY", "test-search-key"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    ),
];

/// Runs the real `cujo check --config path`; returns (success, stdout + stderr).
fn cujo_check(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .env_remove("CUJO_CONFIG")
        .envs(ENV)
        .output()
        .expect("run cujo check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn config_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .expect("config/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_passes_cujo_check() {
    let files = config_files();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let (ok, output) = cujo_check(&file);
        assert!(ok, "cujo check {}:\n{output}", file.display());
        assert!(output.trim_end().ends_with(": ok"), "{output}");
    }
    // And `cujo check` does fail on a broken one, naming the key.
    let bad = std::env::temp_dir().join(format!("cujo-deploy-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "receivers: { otlp: { grpc: { endpoint: \"0.0.0.0:4317\" } } }\nexporters: { prometheus: { endpont: \"0.0.0.0:9464\" } }\n",
    )
    .expect("write");
    let (ok, output) = cujo_check(&bad);
    let _ = std::fs::remove_file(&bad);
    assert!(!ok);
    assert!(
        output.contains("exporters.prometheus.endpont: unknown field"),
        "{output}"
    );
}

/// Every document of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `v` at a dotted path of mapping keys.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&NULL))
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .as_sequence()
        .map(|s| s.as_slice())
        .unwrap_or(&[])
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port")
}

/// `${env:NAME}` references without a `:-default` in `config`.
fn required_env(config: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = config;
    while let Some(start) = rest.find("${env:") {
        let after = &rest[start + 6..];
        let end = after.find('}').expect("terminated");
        if !after[..end].contains(":-") {
            out.insert(after[..end].to_string());
        }
        rest = &after[end..];
    }
    out
}

/// The "restricted" Pod Security Standard (Kubernetes' `restricted` profile, the checks
/// that apply to what these manifests use): non-root, no privilege escalation, every
/// capability dropped, the runtime's default (or a local) seccomp profile, only the volume
/// types the profile allows, no host namespaces or ports.
fn assert_restricted(what: &str, pod: &Value) {
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(!at(pod, host).as_bool().unwrap_or(false), "{what}: {host}");
    }
    let pod_ctx = at(pod, "securityContext");
    for volume in seq(pod, "volumes") {
        let allowed = [
            "configMap",
            "emptyDir",
            "projected",
            "secret",
            "downwardAPI",
            "persistentVolumeClaim",
            "ephemeral",
            "csi",
        ];
        let kinds: Vec<&str> = volume
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "name")
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            kinds.iter().all(|k| allowed.contains(k)),
            "{what}: volume type {kinds:?} is not allowed by the restricted profile"
        );
    }
    for c in seq(pod, "containers")
        .iter()
        .chain(seq(pod, "initContainers"))
    {
        let c_name = text(c, "name");
        let ctx = at(c, "securityContext");
        let either = |key: &str| {
            let own = at(ctx, key);
            if own.is_null() { at(pod_ctx, key) } else { own }
        };
        assert_eq!(
            either("runAsNonRoot").as_bool(),
            Some(true),
            "{what}: {c_name}: runAsNonRoot"
        );
        assert_ne!(
            either("runAsUser").as_u64(),
            Some(0),
            "{what}: {c_name}: root"
        );
        assert_eq!(
            at(ctx, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{what}: {c_name}: allowPrivilegeEscalation must be false"
        );
        let dropped: Vec<&str> = seq(ctx, "capabilities.drop")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            dropped,
            ["ALL"],
            "{what}: {c_name}: capabilities.drop [ALL]"
        );
        let added: Vec<&str> = seq(ctx, "capabilities.add")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            added.iter().all(|a| *a == "NET_BIND_SERVICE"),
            "{what}: {c_name}: adds {added:?}"
        );
        let seccomp = text(either("seccompProfile"), "type");
        assert!(
            seccomp == "RuntimeDefault" || seccomp == "Localhost",
            "{what}: {c_name}: seccompProfile.type is {seccomp:?}"
        );
        assert!(
            !at(c, "ports")
                .as_sequence()
                .is_some_and(|ps| ps.iter().any(|p| !at(p, "hostPort").is_null())),
            "{what}: {c_name}: hostPort"
        );
    }
}

/// Checks one manifest; returns the config files its ConfigMaps embed.
fn check_manifest(path: &Path) -> Vec<PathBuf> {
    let name = path.display().to_string();
    let docs = documents(path);
    assert!(!docs.is_empty(), "{name}: no documents");
    for d in &docs {
        assert!(
            !text(d, "apiVersion").is_empty(),
            "{name}: apiVersion: {d:?}"
        );
        assert!(!text(d, "kind").is_empty(), "{name}: kind: {d:?}");
        assert!(
            !text(d, "metadata.name").is_empty(),
            "{name}: metadata.name"
        );
    }
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| text(d, "kind") == kind);

    // ConfigMaps: each `cujo.yaml` is an example config verbatim, and passes `cujo check`.
    let mut embedded = Vec::new();
    let mut configs = Vec::new();
    for cm in of_kind("ConfigMap") {
        let cm_name = text(cm, "metadata.name");
        // The key has a dot, so no dotted path.
        let yaml = at(cm, "data")
            .get("cujo.yaml")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(
            !yaml.is_empty(),
            "{name}: ConfigMap {cm_name} has no cujo.yaml"
        );
        let same = config_files()
            .into_iter()
            .find(|f| std::fs::read_to_string(f).is_ok_and(|t| t == yaml))
            .unwrap_or_else(|| {
                panic!("{name}: ConfigMap {cm_name} embeds no config/ file verbatim")
            });
        let extracted =
            std::env::temp_dir().join(format!("cujo-deploy-{}-{cm_name}.yaml", std::process::id()));
        std::fs::write(&extracted, yaml).expect("write");
        let (ok, output) = cujo_check(&extracted);
        let _ = std::fs::remove_file(&extracted);
        assert!(ok, "{name}: ConfigMap {cm_name}: {output}");
        embedded.push(same);
        configs.push((cm_name.to_string(), yaml.to_string()));
    }

    let deployments: Vec<&Value> = of_kind("Deployment")
        .chain(of_kind("StatefulSet"))
        .collect();
    assert!(
        !deployments.is_empty(),
        "{name}: no Deployment or StatefulSet"
    );
    for dep in deployments {
        let dep_name = text(dep, "metadata.name");
        let pod = at(dep, "spec.template.spec");
        let pod_labels = at(dep, "spec.template.metadata.labels");
        assert_eq!(
            at(dep, "spec.selector.matchLabels"),
            pod_labels,
            "{name}: {dep_name}: the selector must match the pod's labels"
        );
        let cujo = seq(pod, "containers")
            .iter()
            .chain(seq(pod, "initContainers"))
            .find(|c| text(c, "name") == "cujo")
            .unwrap_or_else(|| panic!("{name}: {dep_name} has no container named cujo"));
        if seq(pod, "initContainers").contains(cujo) {
            assert_eq!(
                text(cujo, "restartPolicy"),
                "Always",
                "{name}: cujo as an init container must be a native sidecar"
            );
        }
        assert!(!text(cujo, "image").is_empty());
        assert_restricted(&format!("{name}: {dep_name}"), pod);

        // The config file cujo runs is the ConfigMap's, mounted where --config points.
        let args: Vec<&str> = seq(cujo, "args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let config_arg = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{name}: {dep_name}: cujo has no --config argument"));
        let mount = seq(cujo, "volumeMounts")
            .iter()
            .find(|m| config_arg.starts_with(&format!("{}/", text(m, "mountPath"))))
            .unwrap_or_else(|| panic!("{name}: {dep_name}: {config_arg} is not mounted"));
        let file = &config_arg[text(mount, "mountPath").len() + 1..];
        assert_eq!(file, "cujo.yaml");
        let volume = seq(pod, "volumes")
            .iter()
            .find(|v| text(v, "name") == text(mount, "name"))
            .unwrap_or_else(|| panic!("{name}: {dep_name}: no volume for the config mount"));
        let cm_name = text(volume, "configMap.name");
        let (_, yaml) = configs
            .iter()
            .find(|(n, _)| n == cm_name)
            .unwrap_or_else(|| panic!("{name}: {dep_name}: ConfigMap {cm_name} not in the file"));

        // A state file lives on a writable volume that outlives the container: the
        // StatefulSet's claim, or the pod's emptyDir (the root filesystem is read-only).
        let config = Config::parse(cm_name, yaml, &|k| {
            ENV.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("config parses");
        // So does the write-ahead log, on a volume it fits in.
        let mut durable: Vec<(&str, PathBuf)> = Vec::new();
        if let Some(state) = &config.slo.state_file {
            durable.push((
                "slo.state_file",
                state.parent().expect("a directory").to_path_buf(),
            ));
        }
        if let Some(wal) = &config.wal {
            durable.push(("wal.directory", wal.directory.clone()));
        }
        for (key, dir) in &durable {
            let dir = dir.to_str().expect("a UTF-8 path");
            let mount = seq(cujo, "volumeMounts")
                .iter()
                .find(|m| Path::new(dir).starts_with(text(m, "mountPath")))
                .unwrap_or_else(|| panic!("{name}: {dep_name}: {dir} ({key}) is not on a volume"));
            assert!(
                !at(mount, "readOnly").as_bool().unwrap_or(false),
                "{name}: {dep_name}: {dir} is mounted read-only"
            );
            let volume = text(mount, "name");
            let claim = seq(dep, "spec.volumeClaimTemplates")
                .iter()
                .find(|c| text(c, "metadata.name") == volume);
            if let (Some(claim), Some(wal), true) = (claim, &config.wal, *key == "wal.directory") {
                let size = mebibytes(text(claim, "spec.resources.requests.storage"));
                assert!(
                    wal.max_size.0 / (1 << 20) < size,
                    "{name}: {dep_name}: wal.max_size must fit the {size}Mi volume beside the state file"
                );
            }
            let claimed = claim.is_some();
            let empty_dir = seq(pod, "volumes")
                .iter()
                .any(|v| text(v, "name") == volume && !at(v, "emptyDir").is_null());
            assert!(
                claimed || empty_dir,
                "{name}: {dep_name}: volume {volume} is neither a claim nor an emptyDir"
            );
            assert_eq!(
                at(pod, "securityContext.fsGroup").as_u64(),
                Some(65532),
                "{name}: {dep_name}: the state volume must be writable by the image's user"
            );
        }

        // Every `${env:NAME}` the config needs is set: from a Secret or a value.
        let env = seq(cujo, "env");
        for var in required_env(yaml) {
            let entry = env
                .iter()
                .find(|e| text(e, "name") == var)
                .unwrap_or_else(|| panic!("{name}: {dep_name}: ${{env:{var}}} is not set"));
            let from_secret = !text(entry, "valueFrom.secretKeyRef.name").is_empty()
                && !text(entry, "valueFrom.secretKeyRef.key").is_empty();
            assert!(
                from_secret || !text(entry, "value").is_empty(),
                "{name}: {dep_name}: {var}: {entry:?}"
            );
        }
        if yaml.contains("${env:HONEYCOMB_API_KEY}") {
            let key = env
                .iter()
                .find(|e| text(e, "name") == "HONEYCOMB_API_KEY")
                .expect("HONEYCOMB_API_KEY");
            assert!(
                !text(key, "valueFrom.secretKeyRef.name").is_empty(),
                "{name}: the Honeycomb key must come from a Secret"
            );
        }

        // Probes hit the admin listener of the embedded config.
        let config = Config::parse(cm_name, yaml, &|k| {
            ENV.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("config parses");
        let admin = port_of(
            &config
                .exporters
                .prometheus
                .as_ref()
                .expect("the admin listener is configured")
                .endpoint
                .0,
        );
        let resolve = |port: &Value| -> u16 {
            match port {
                Value::Number(n) => n.as_u64().expect("port") as u16,
                Value::String(named) => seq(cujo, "ports")
                    .iter()
                    .find(|p| text(p, "name") == named)
                    .and_then(|p| at(p, "containerPort").as_u64())
                    .unwrap_or_else(|| panic!("{name}: {dep_name}: no port named {named}"))
                    as u16,
                other => panic!("{name}: {dep_name}: port {other:?}"),
            }
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let p = at(cujo, probe);
            assert_eq!(text(p, "httpGet.path"), path, "{name}: {dep_name}: {probe}");
            assert_eq!(
                resolve(at(p, "httpGet.port")),
                admin,
                "{name}: {dep_name}: {probe} must hit the admin port"
            );
        }
        // Container ports name what the config listens on (0.0.0.0 listeners only).
        let listen = config.receivers.otlp.as_ref().map(|o| {
            [
                o.grpc.as_ref().map(|g| g.endpoint.0.clone()),
                o.http.as_ref().map(|h| h.endpoint.0.clone()),
            ]
        });
        for endpoint in listen.into_iter().flatten().flatten() {
            if endpoint.starts_with("0.0.0.0:") {
                let port = port_of(&endpoint);
                assert!(
                    seq(cujo, "ports")
                        .iter()
                        .any(|p| at(p, "containerPort").as_u64() == Some(port.into())),
                    "{name}: {dep_name}: {endpoint} has no containerPort"
                );
            }
        }
        let memory = |kind: &str| text(at(cujo, "resources"), &format!("{kind}.memory"));
        assert!(
            mebibytes(memory("requests")) > 0
                && mebibytes(memory("limits")) >= mebibytes(memory("requests")),
            "{name}: {dep_name}: memory requests and limits"
        );

        // Services select these pods and point at ports the container has.
        for svc in of_kind("Service") {
            let selector = at(svc, "spec.selector");
            if selector
                .as_mapping()
                .is_some_and(|m| m.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
            {
                for port in seq(svc, "spec.ports") {
                    resolve(at(port, "targetPort"));
                }
            }
        }
    }
    embedded
}

fn mebibytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or(0);
    match unit {
        "Mi" => n,
        "Gi" => n * 1024,
        _ => panic!("memory quantity {q:?}: expected Mi or Gi"),
    }
}

#[test]
fn the_sidecar_manifest_runs_the_sidecar_config() {
    let path = repo().join("deploy/kubernetes/sidecar.yaml");
    let embedded = check_manifest(&path);
    assert_eq!(embedded, [repo().join("config/sidecar.yaml")]);
    // The application sends to cujo in the same pod.
    let docs = documents(&path);
    let app = docs
        .iter()
        .filter(|d| text(d, "kind") == "Deployment")
        .flat_map(|d| seq(d, "spec.template.spec.containers"))
        .find(|c| text(c, "name") == "app")
        .expect("the app container");
    let endpoint = seq(app, "env")
        .iter()
        .find(|e| text(e, "name") == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|e| text(e, "value"))
        .expect("OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(endpoint, "http://localhost:4317");
}

#[test]
fn the_gateway_manifest_runs_the_gateway_config_with_its_secrets() {
    let path = repo().join("deploy/kubernetes/gateway.yaml");
    let embedded = check_manifest(&path);
    assert_eq!(embedded, [repo().join("config/k8s-gateway.yaml")]);
    let docs = documents(&path);
    let dep = docs
        .iter()
        .find(|d| text(d, "kind") == "StatefulSet")
        .expect("StatefulSet");
    assert!(at(dep, "spec.replicas").as_u64().is_some_and(|r| r >= 2));
    // Each replica keeps its volume (the SLO state file) across restarts and rollouts.
    let claim = &seq(dep, "spec.volumeClaimTemplates")[0];
    assert_eq!(text(claim, "spec.resources.requests.storage"), "1Gi");
    assert!(
        docs.iter().any(|d| text(d, "kind") == "Service"
            && text(d, "metadata.name") == text(dep, "spec.serviceName")
            && text(d, "spec.clusterIP") == "None"),
        "the StatefulSet's serviceName is the headless Service"
    );
    let svc = docs
        .iter()
        .find(|d| text(d, "kind") == "Service" && text(d, "metadata.name") == "cujo-gateway")
        .expect("Service cujo-gateway");
    let ports: BTreeSet<u64> = seq(svc, "spec.ports")
        .iter()
        .filter_map(|p| at(p, "port").as_u64())
        .collect();
    assert_eq!(ports, BTreeSet::from([4317, 4318, 9464]));
    // Its namespace enforces the restricted profile the pods meet.
    let ns = docs
        .iter()
        .find(|d| text(d, "kind") == "Namespace")
        .expect("Namespace");
    let labels = at(ns, "metadata.labels");
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .and_then(Value::as_str),
        Some("restricted")
    );
    // A NetworkPolicy on the gateway's pods: OTLP and the admin port in, DNS and HTTPS out.
    let policy = docs
        .iter()
        .find(|d| text(d, "kind") == "NetworkPolicy")
        .expect("NetworkPolicy");
    assert_eq!(
        at(policy, "spec.podSelector.matchLabels"),
        at(dep, "spec.template.metadata.labels"),
        "the NetworkPolicy selects the gateway's pods"
    );
    let ports = |rules: &str| -> BTreeSet<u64> {
        seq(policy, rules)
            .iter()
            .flat_map(|r| seq(r, "ports"))
            .filter_map(|p| at(p, "port").as_u64())
            .collect()
    };
    assert_eq!(ports("spec.ingress"), BTreeSet::from([4317, 4318, 9464]));
    assert_eq!(ports("spec.egress"), BTreeSet::from([53, 443]));
    // Prometheus scrapes every replica: a ServiceMonitor on the Service's metrics port.
    let monitoring = repo().join("deploy/kubernetes/gateway-monitoring.yaml");
    let monitors = documents(&monitoring);
    let [monitor] = &monitors[..] else {
        panic!("one ServiceMonitor: {monitors:?}")
    };
    assert_eq!(text(monitor, "kind"), "ServiceMonitor");
    assert_eq!(text(monitor, "metadata.namespace"), "observability");
    assert_eq!(
        at(monitor, "spec.selector.matchLabels"),
        at(svc, "metadata.labels")
    );
    let port = text(&seq(monitor, "spec.endpoints")[0], "port");
    assert!(
        seq(svc, "spec.ports")
            .iter()
            .any(|p| text(p, "name") == port && at(p, "port").as_u64() == Some(9464)),
        "the ServiceMonitor's port {port} is the Service's admin port"
    );

    // Sized as the comment says: request 256Mi, limit 512Mi.
    let cujo = &seq(dep, "spec.template.spec.containers")[0];
    assert_eq!(text(cujo, "resources.requests.memory"), "256Mi");
    assert_eq!(text(cujo, "resources.limits.memory"), "512Mi");
    assert!(
        at(dep, "spec.template.spec.terminationGracePeriodSeconds")
            .as_u64()
            .is_some_and(|s| s > 30),
        "longer than shutdown.timeout"
    );
}

/// The gateway's replicas share the traffic, so its alerts come from Prometheus: the shipped
/// PrometheusRule is what `cujo rules --kubernetes` writes for the gateway's config (so it
/// never drifts from the CUJs), its groups pass `promtool check rules`, and no replica
/// notifies on its own share.
#[test]
fn the_gateway_alerts_from_a_prometheus_rule_generated_from_its_config() {
    let rules = repo().join("deploy/kubernetes/gateway-rules.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .args(["rules", "--config"])
        .arg(repo().join("config/k8s-gateway.yaml"))
        .args([
            "--kubernetes",
            "cujo-gateway",
            "--namespace",
            "observability",
        ])
        // The generators read the CUJs, not the secrets the rest of the config names.
        .env_remove("HONEYCOMB_API_KEY")
        .output()
        .expect("cujo rules");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            == std::fs::read_to_string(&rules).expect("gateway-rules.yaml"),
        "deploy/kubernetes/gateway-rules.yaml is stale: regenerate it with \
         cujo rules --config config/k8s-gateway.yaml --kubernetes cujo-gateway --namespace observability"
    );
    let docs = documents(&rules);
    let [rule] = &docs[..] else {
        panic!("one document: {docs:?}")
    };
    assert_eq!(text(rule, "kind"), "PrometheusRule");
    assert_eq!(text(rule, "apiVersion"), "monitoring.coreos.com/v1");
    assert_eq!(text(rule, "metadata.namespace"), "observability");
    let groups = at(rule, "spec");
    let alerts: Vec<&str> = seq(groups, "groups")
        .iter()
        .flat_map(|g| seq(g, "rules"))
        .filter_map(|r| r.get("alert").and_then(Value::as_str))
        .collect();
    assert!(alerts.contains(&"CujErrorBudgetBurnPage"), "{alerts:?}");
    if let Some(promtool) = support_promtool() {
        let file =
            std::env::temp_dir().join(format!("cujo-gateway-rules-{}.yml", std::process::id()));
        std::fs::write(&file, serde_yaml_ng::to_string(groups).expect("groups")).expect("write");
        let check = Command::new(promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("promtool");
        let _ = std::fs::remove_file(&file);
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let config = std::fs::read_to_string(repo().join("config/k8s-gateway.yaml")).expect("config");
    let parsed = Config::parse("k8s-gateway.yaml", &config, &|k| {
        ENV.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("the gateway config parses");
    assert!(
        parsed.notifications.is_none(),
        "no replica notifies on its own share"
    );
    assert!(
        parsed.slo.fleet.is_some(),
        "the replicas know they are a fleet"
    );
}

/// `promtool`, required under CI (`scripts/test.sh` installs it).
fn support_promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is required under CI"
    );
    None
}

#[test]
fn the_dockerfile_builds_cujo_and_exposes_the_image_config_ports() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FROM rust:1-bookworm AS builder"))
    );
    assert!(dockerfile.contains("cargo build --release --locked -p cujo"));
    // Dependencies cached between builds (BuildKit cache mounts need the dockerfile syntax
    // directive on the first line), and a stripped binary in the image.
    assert!(dockerfile.starts_with("# syntax=docker/dockerfile:1\n"));
    for mount in ["target=/usr/local/cargo/registry", "target=/src/target"] {
        assert!(
            dockerfile.contains(&format!("--mount=type=cache,{mount}")),
            "cache mount {mount}"
        );
    }
    assert!(dockerfile.contains("strip --strip-all -o /cujo target/release/cujo"));
    assert!(lines.contains(&"COPY --from=builder /cujo /cujo"));
    assert!(lines.contains(&"ENTRYPOINT [\"/cujo\"]"));
    // Kubernetes' runAsNonRoot (the manifests set it) can only verify a numeric user.
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap_or("")
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0, "not root");
    // The config copied in exists, passes `cujo check`, and its ports are exposed.
    let copied = lines
        .iter()
        .find_map(|l| l.strip_prefix("COPY config/"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a config copied into the image");
    let config_path = repo().join("config").join(copied);
    let (ok, output) = cujo_check(&config_path);
    assert!(ok, "{output}");
    let exposed: BTreeSet<u16> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse().expect("port")))
        .collect();
    let config = Config::load(Some(&config_path)).expect("image config");
    let otlp = config.receivers.otlp.expect("receivers");
    let mut listened = BTreeSet::from([
        port_of(&otlp.grpc.expect("grpc").endpoint.0),
        port_of(&otlp.http.expect("http").endpoint.0),
        port_of(&config.exporters.prometheus.expect("admin").endpoint.0),
    ]);
    assert_eq!(exposed, listened);
    // And they are the embedded default's ports, so docs and examples agree.
    let default = Config::load(None).expect("default");
    let d = default.receivers.otlp.expect("receivers");
    listened.retain(|p| {
        ![
            port_of(&d.grpc.as_ref().expect("grpc").endpoint.0),
            port_of(&d.http.as_ref().expect("http").endpoint.0),
            port_of(
                &default
                    .exporters
                    .prometheus
                    .as_ref()
                    .expect("admin")
                    .endpoint
                    .0,
            ),
        ]
        .contains(p)
    });
    assert!(
        listened.is_empty(),
        "ports differ from the default: {listened:?}"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
