"""Checks every file of deploy/ as far as this machine can without a cluster or a container engine.

`make lint` runs it (after yamllint over deploy/): each Kubernetes object is validated against
the Kubernetes schemas (kubernetes-validate, strict), the objects no schema covers (KEDA's) and
the rules that cut across files are checked here, every JSON file must parse, and the Dockerfile
goes through hadolint where it is installed. tests/test_deploy.py calls structural_problems().
Exit code 0: no problem; 1: each problem printed on a line of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hookpipe import __version__
from hookpipe.providers import handled_queues

DEPLOY = Path(__file__).parent
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.37.0"
IMAGE = f"hookpipe:{__version__}"
# The keys of each role's secret; compose.yaml's secrets and the Kubernetes secrets alike.
SECRET_KEYS = {
    "hookpipe-ingress": {
        "amqp_url",
        "jodo_secret",
        "dreamclass_secret",
        "rapyd_access_key",
        "rapyd_secret_key",
        "flexprice_secret",
    },
    "hookpipe-worker": {"amqp_url", "ledger_url", "dreamclass_api_key"},
    "hookpipe-operator": {"amqp_url"},
}
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
KEDA_RABBITMQ_MODES = {"QueueLength", "MessageRate"}

Doc = dict[str, Any]


def k8s_docs() -> Iterator[tuple[Path, Doc]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def pod_spec(doc: Doc) -> Doc | None:
    """The pod template's spec of a workload, None for other kinds."""
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def schema_problems() -> list[str]:
    """Every object but KEDA's against the Kubernetes schemas, strictly."""
    import kubernetes_validate  # type: ignore[import-untyped]

    problems = []
    for path, doc in k8s_docs():
        if doc.get("kind") in KEDA_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return problems


def structural_problems() -> list[str]:
    """What the schemas do not say: KEDA's objects, and the rules every pod must follow."""
    docs = list(k8s_docs())
    problems: list[str] = []
    problems += _keda_problems(docs)
    problems += _pod_problems(docs)
    problems += _compose_problems()
    problems += _json_problems()
    return problems


def _keda_problems(docs: list[tuple[Path, Doc]]) -> list[str]:
    problems = []
    deployments = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for _, d in docs
        if d["kind"] == "Deployment"
    }
    auths = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for _, d in docs
        if d["kind"] == "TriggerAuthentication" and d["apiVersion"] == "keda.sh/v1alpha1"
    }
    for key, auth in auths.items():
        refs = auth.get("spec", {}).get("secretTargetRef") or []
        if not refs:
            problems.append(f"TriggerAuthentication {key[1]}: no secretTargetRef")
        for ref in refs:
            if set(ref) != {"parameter", "name", "key"}:
                problems.append(f"TriggerAuthentication {key[1]}: {ref} needs parameter/name/key")
            elif ref["key"] not in SECRET_KEYS.get(ref["name"], set()):
                problems.append(f"TriggerAuthentication {key[1]}: no key {ref['key']} in {ref}")
            elif ref["parameter"] != "host":
                problems.append(f"TriggerAuthentication {key[1]}: rabbitmq reads `host`, not {ref}")
    triggered: dict[str, int] = {}
    scaled = set()
    for _, doc in docs:
        if doc["kind"] != "ScaledObject":
            continue
        name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace")
        where = f"ScaledObject {name}"
        if doc["apiVersion"] != "keda.sh/v1alpha1":
            problems.append(f"{where}: apiVersion {doc['apiVersion']}")
        spec = doc.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        deployment = deployments.get((namespace, target))
        if deployment is None:
            problems.append(f"{where}: scaleTargetRef {target!r} is no Deployment in {namespace}")
            continue
        scaled.add(target)
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            problems.append(f"{where}: replica counts {low}..{high}")
        args = pod_spec(deployment)["containers"][0]["args"]  # type: ignore[index]
        provider = args[args.index("--provider") + 1] if "--provider" in args else None
        triggers = spec.get("triggers") or []
        if not triggers:
            problems.append(f"{where}: no triggers")
        for trigger in triggers:
            meta = trigger.get("metadata", {})
            queue = meta.get("queueName")
            if trigger.get("type") != "rabbitmq":
                problems.append(f"{where}: trigger type {trigger.get('type')}")
            if meta.get("mode") not in KEDA_RABBITMQ_MODES:
                problems.append(f"{where}: {queue}: mode {meta.get('mode')}")
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", str(meta.get("value", ""))):
                problems.append(f"{where}: {queue}: value {meta.get('value')!r} is no number")
            if not isinstance(meta.get("value"), str):
                problems.append(f"{where}: {queue}: KEDA wants the value as a string")
            auth_name = trigger.get("authenticationRef", {}).get("name")
            if (namespace, auth_name) not in auths:
                problems.append(f"{where}: authenticationRef {auth_name!r} not found")
            if queue not in handled_queues():
                problems.append(f"{where}: {queue!r} is no handled queue")
            elif provider is not None and not queue.startswith(provider + "."):
                problems.append(f"{where}: {queue} is not consumed by {target} ({provider})")
            triggered[queue] = triggered.get(queue, 0) + 1
    for queue in handled_queues():
        if triggered.get(queue) != 1:
            problems.append(f"handled queue {queue}: {triggered.get(queue, 0)} KEDA triggers")
    for _, name in deployments:
        if name.startswith("hookpipe-worker") and name not in scaled:
            problems.append(f"Deployment {name}: no ScaledObject")
    return problems


def _pod_problems(docs: list[tuple[Path, Doc]]) -> list[str]:
    problems = []
    pdb_selectors = [
        d["spec"]["selector"]["matchLabels"] for _, d in docs if d["kind"] == "PodDisruptionBudget"
    ]
    namespaces_denied = {
        d["metadata"]["namespace"]
        for _, d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"] == {}
        and set(d["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    }
    for path, doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"
        labels = doc["spec"]["template"]["metadata"]["labels"]
        security = spec.get("securityContext", {})
        if security.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{where}: no seccompProfile RuntimeDefault")
        if not security.get("runAsNonRoot"):
            problems.append(f"{where}: not runAsNonRoot")
        if doc["metadata"]["namespace"] not in namespaces_denied:
            problems.append(f"{where}: no default-deny NetworkPolicy in its namespace")
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            cwhere = f"{where}: container {container['name']}"
            if container["image"] != IMAGE:
                problems.append(f"{cwhere}: image {container['image']}, not {IMAGE}")
            csec = container.get("securityContext", {})
            if csec.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation not false")
            if csec.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{cwhere}: capabilities not dropped")
            if not csec.get("readOnlyRootFilesystem"):
                problems.append(f"{cwhere}: root filesystem writable")
            problems += _secret_file_problems(cwhere, container, spec)
        if doc["kind"] != "Deployment":
            continue
        if not spec.get("topologySpreadConstraints"):
            problems.append(f"{where}: no topologySpreadConstraints")
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            problems.append(f"{where}: no PodDisruptionBudget")
        for container in spec["containers"]:
            ports = {p.get("name") for p in container.get("ports", [])}
            ports |= {p["containerPort"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where}: container {container['name']}: no {probe}")
                elif container[probe].get("httpGet", {}).get("port") not in ports:
                    problems.append(f"{where}: {probe} on a port the container does not name")
    return problems


def _secret_file_problems(where: str, container: Doc, spec: Doc) -> list[str]:
    """Each *_FILE variable names a key of the secret mounted at its folder."""
    problems = []
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for env in container.get("env", []):
        if not env["name"].endswith("_FILE"):
            continue
        folder, _, key = env["value"].rpartition("/")
        volume = volumes.get(mounts.get(folder, ""), {})
        secret = volume.get("secret", {}).get("secretName")
        if secret is None:
            problems.append(f"{where}: {env['name']}: no secret mounted at {folder}")
        elif key not in SECRET_KEYS.get(secret, set()):
            problems.append(f"{where}: {env['name']}: {secret} has no key {key}")
    return problems


def _compose_problems() -> list[str]:
    problems = []
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    declared = compose.get("secrets", {})
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if "build" in service and image != IMAGE:
            problems.append(f"compose: {name}: image {image}, not {IMAGE}")
        if image.endswith(":latest") or ":" not in image:
            problems.append(f"compose: {name}: image {image} has no version")
        targets = set()
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            targets.add(secret if isinstance(secret, str) else secret.get("target", source))
            if source not in declared:
                problems.append(f"compose: {name}: secret {source} is not declared")
        for variable, value in (service.get("environment") or {}).items():
            mounted = str(value).removeprefix("/run/secrets/")
            if variable.endswith("_FILE") and mounted != str(value) and mounted not in targets:
                problems.append(f"compose: {name}: {variable} names no secret it mounts")
    for name, secret in declared.items():
        role, _, key = name.partition("_")
        path = secret.get("file", "")
        expected_keys = SECRET_KEYS.get(f"hookpipe-{role}")
        if expected_keys is not None and (
            key not in expected_keys or path != f"./secrets/{role}/{key}"
        ):
            problems.append(f"compose: secret {name} ({path}) is not {role}'s key {key}")
    return problems


def _json_problems() -> list[str]:
    problems = []
    for path in sorted(DEPLOY.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except ValueError as exc:
            problems.append(f"{path.relative_to(DEPLOY)}: not JSON: {exc}")
    return problems


def hadolint_problems() -> list[str]:
    """hadolint's findings on the Dockerfile, where hadolint is installed; none otherwise."""
    if shutil.which("hadolint") is None:
        return []
    done = subprocess.run(
        ["hadolint", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode else []


def main() -> int:
    problems = schema_problems() + structural_problems() + hadolint_problems()
    for problem in problems:
        print(f"deploy/{problem}" if not problem.startswith("deploy") else problem)
    if not problems:
        count = sum(1 for _ in k8s_docs())
        hadolint = "hadolint" if shutil.which("hadolint") else "no hadolint here"
        print(f"deploy/: {count} Kubernetes objects, compose, JSON files: fine ({hadolint})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
