//! Proves that deploy/kubernetes/ holds manifests the Kubernetes API would
//! accept (validated strictly against the Kubernetes schemas by
//! kubernetes-validate, which scripts/ensure-deps.sh installs from PyPI
//! into target/tools/venv), and that every pod of the StatefulSet gets a
//! config its node accepts: the test runs the manifest's own render-config
//! script for each ordinal, which substitutes the node id (ordinal + 1)
//! into the ConfigMap's template and runs `raftgres serve --check-config`
//! on the result, with TLS files laid out as the Secret the pods mount.
//! No cluster is needed; nothing is applied anywhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use raftgres::server::NodeConfig;
use raftgres_tests::certificates::TestAuthority;
use raftgres_tests::deploy::{
    assert_failed_with, assert_succeeded, raftgres_binary, workspace_root, write_node_tls,
    TlsFileNames,
};
use raftgres_tests::fresh_dir;
use serde_json::Value;

/// The oldest Kubernetes the manifests are meant for, and the newest the
/// pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];
const MANIFESTS: [&str; 4] = [
    "configmap.yaml",
    "poddisruptionbudget.yaml",
    "service.yaml",
    "statefulset.yaml",
];
const TEMPLATE_KEY: &str = "raftgres.toml.template";

fn venv_program(name: &str) -> PathBuf {
    let program = workspace_root().join("target/tools/venv/bin").join(name);
    assert!(
        program.exists(),
        "{} is missing; scripts/ensure-deps.sh (run by `make test`) installs kubernetes-validate \
         into target/tools/venv",
        program.display()
    );
    program
}

fn manifest_paths() -> Vec<PathBuf> {
    let dir = workspace_root().join("deploy/kubernetes");
    MANIFESTS.iter().map(|name| dir.join(name)).collect()
}

fn kubernetes_validate(version: &str, files: &[PathBuf]) -> std::process::Output {
    Command::new(venv_program("kubernetes-validate"))
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs")
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let files = manifest_paths();
    for version in KUBERNETES_VERSIONS {
        let output = kubernetes_validate(version, &files);
        assert_succeeded(&output, &format!("kubernetes-validate against {version}"));
    }
    // The validator is strict: a misspelt field fails it.
    let dir = fresh_dir("kubernetes-invalid");
    let broken = dir.join("statefulset.yaml");
    let text = std::fs::read_to_string(&files[3]).unwrap();
    std::fs::write(&broken, text.replace("serviceName:", "servicename:")).unwrap();
    let output = kubernetes_validate(KUBERNETES_VERSIONS[0], &[broken]);
    assert!(
        !output.status.success(),
        "a misspelt field passed validation: {output:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every document of the manifests, as JSON (PyYAML from the same venv
/// reads the YAML).
fn documents() -> Vec<Value> {
    let output = Command::new(venv_program("python"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             json.dump(docs, sys.stdout)",
        ])
        .args(manifest_paths())
        .output()
        .expect("python runs");
    assert_succeeded(&output, "reading the manifests");
    serde_json::from_slice(&output.stdout).expect("the manifests as JSON")
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents
        .iter()
        .filter(|document| document["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .unwrap_or_else(|| panic!("nothing named {name:?} in {list}"))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
}

/// The value of environment variable `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a str {
    text(&named(&container["env"], name)["value"])
}

/// Where `container` mounts the pod volume `volume`.
fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    text(&named(&container["volumeMounts"], volume)["mountPath"])
}

/// The pod volume that mounts `kind` (configMap, secret) named `name`.
fn volume_of<'a>(pod: &'a Value, kind: &str, key: &str, name: &str) -> &'a str {
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = volumes
        .iter()
        .find(|volume| volume[kind][key] == name)
        .unwrap_or_else(|| panic!("no {kind} volume of {name}"));
    text(&volume["name"])
}

#[test]
fn every_pod_renders_a_config_its_node_accepts() {
    let documents = documents();
    let statefulset = find(&documents, "StatefulSet");
    let service = find(&documents, "Service");
    let config_map = find(&documents, "ConfigMap");
    let pod = &statefulset["spec"]["template"]["spec"];
    let replicas = statefulset["spec"]["replicas"].as_u64().expect("replicas");
    let name = text(&statefulset["metadata"]["name"]);
    let service_name = text(&statefulset["spec"]["serviceName"]);
    assert_eq!(service["metadata"]["name"], service_name);
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "the Service is headless"
    );
    assert!(
        statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].is_string(),
        "each pod's Postgres has a volume claim of its own"
    );

    let render = named(&pod["initContainers"], "render-config");
    let node = named(&pod["containers"], "raftgres");
    let template_volume = volume_of(
        pod,
        "configMap",
        "name",
        text(&config_map["metadata"]["name"]),
    );
    let tls_volume = volume_of(pod, "secret", "secretName", "raftgres-tls");
    // The paths the script reads and writes are the volumes' mounts, and
    // the node reads the config where the script wrote it.
    let template_path = env(render, "RAFTGRES_CONFIG_TEMPLATE");
    assert_eq!(
        template_path,
        format!("{}/{TEMPLATE_KEY}", mount_path(render, template_volume))
    );
    let config_path = env(render, "RAFTGRES_CONFIG");
    assert_eq!(env(node, "RAFTGRES_CONFIG"), config_path);
    let config_dir = Path::new(config_path).parent().unwrap().to_str().unwrap();
    let config_volume = text(
        &node["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mount| mount["mountPath"] == config_dir)
            .expect("the node mounts the rendered config's directory")["name"],
    );
    assert_eq!(mount_path(render, config_volume), config_dir);
    let tls_mount = mount_path(node, tls_volume);
    assert_eq!(mount_path(render, tls_volume), tls_mount);
    let grpc_port = named(&node["ports"], "grpc")["containerPort"]
        .as_u64()
        .expect("the grpc port");

    // The test's stand-ins for the volumes: the template from the
    // ConfigMap with the Secret's mount point moved into the test's
    // directory, holding the Secret's files (ca.pem, node-<id>.pem/.key).
    let dir = fresh_dir("kubernetes-pods");
    let tls_dir = dir.join("tls");
    let template = text(&config_map["data"][TEMPLATE_KEY]);
    let template_file = dir.join(TEMPLATE_KEY);
    std::fs::write(
        &template_file,
        template.replace(tls_mount, &tls_dir.display().to_string()),
    )
    .unwrap();
    let authority = TestAuthority::new("kubernetes test CA");
    let script = text(&render["command"][2]);
    assert_eq!(render["command"][0], "/bin/sh");
    assert_eq!(node["command"], serde_json::json!(["raftgres", "serve"]));

    let run_pod = |ordinal: u64| {
        let rendered = dir.join(format!("{name}-{ordinal}.toml"));
        let binary_dir = raftgres_binary().parent().unwrap().to_path_buf();
        let output = Command::new("/bin/sh")
            .args(["-c", script])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", binary_dir.display()))
            .env("POD_NAME", format!("{name}-{ordinal}"))
            .env("RAFTGRES_CONFIG_TEMPLATE", &template_file)
            .env("RAFTGRES_CONFIG", &rendered)
            .output()
            .expect("sh runs");
        (output, rendered)
    };
    for ordinal in 0..replicas {
        let node_id = ordinal + 1;
        let names = TlsFileNames {
            certificate: &format!("node-{node_id}.pem"),
            key: &format!("node-{node_id}.key"),
            ca: "ca.pem",
        };
        write_node_tls(&tls_dir, &authority, node_id, &names);
        let (output, rendered) = run_pod(ordinal);
        assert_succeeded(&output, &format!("render-config of pod {name}-{ordinal}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("valid: node {node_id} of cluster"))
                && stdout.contains(&format!("{replicas} voter(s)")),
            "{stdout}"
        );
        // Peers dial each pod by its name under the headless Service.
        let config = NodeConfig::from_toml(&std::fs::read_to_string(&rendered).unwrap())
            .expect("the rendered config parses");
        assert_eq!(
            config.peer_address(node_id),
            Some(format!("{name}-{ordinal}.{service_name}:{grpc_port}").as_str())
        );
        assert_eq!(u64::from(config.listen_addr.port()), grpc_port);
    }
    // A pod beyond the voters (scaled up without a membership change) is
    // refused before its node starts.
    let (output, _) = run_pod(replicas);
    assert_failed_with(&output, "not among the voters", "an extra pod");
    std::fs::remove_dir_all(&dir).unwrap();
}
