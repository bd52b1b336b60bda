"""deploy/kubernetes/ and the Dockerfile, checked without a cluster.

The core kinds are validated against Kubernetes' own OpenAPI schemas (``kubernetes-validate``
ships them inside the package: no network). KEDA's ScaledObject is not a core kind: its trigger
is checked against the fields KEDA documents for its Redis-list scaler. The rest are the
promises the manifests make in their comments: the Procfile's commands, the soft shutdown fitting
the grace period, probes on the health endpoints, secrets only from the Secret, non-root.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from schemas.messages import EVENTS_QUEUE
from schemas.settings import Settings
from tests.services import ROOT, procfile

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported by the big managed offerings

# KEDA's Redis-list trigger ("Redis Lists" scaler, keda.sh/docs/2.13/scalers/redis-lists/):
# `type: redis`, and these metadata fields, every value a string.
KEDA_REDIS_REQUIRED = {"listName", "listLength"}
KEDA_REDIS_OPTIONAL = {
    "address",
    "host",
    "port",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "activationListLength",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
}
KEDA_SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":  # kubectl's own file, not an object
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def deployment(component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in of_kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def container(component: str) -> dict[str, Any]:
    (only,) = deployment(component)["spec"]["template"]["spec"]["containers"]
    return only


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in spec.get("env", [])}


def secret_keys() -> set[str]:
    (secret,) = of_kind("Secret")
    return set(secret["stringData"])


@pytest.mark.parametrize(
    "doc",
    [doc for doc in documents() if not doc["apiVersion"].startswith("keda.sh/")],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_every_core_object_is_valid_for_kubernetes(doc: dict[str, Any]) -> None:
    # strict: a misspelt or misplaced field fails instead of being ignored by the API server
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_kinds_the_deployment_needs_are_all_there() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    assert {
        ("Deployment", "tavus-callbacks-web"),
        ("Deployment", "tavus-callbacks-worker"),
        ("Deployment", "tavus-callbacks-beat"),
        ("Service", "tavus-callbacks-web"),
        ("PodDisruptionBudget", "tavus-callbacks-web"),
        ("HorizontalPodAutoscaler", "tavus-callbacks-web"),
        ("ScaledObject", "tavus-callbacks-worker"),
        ("Secret", "tavus-callbacks"),
        ("Job", "tavus-callbacks-migrate"),
    } <= kinds
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert all((MANIFESTS / name).is_file() for name in listed)


def test_the_scaled_object_uses_kedas_documented_redis_list_trigger() -> None:
    (scaled,) = of_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled["spec"]) <= KEDA_SCALED_OBJECT_SPEC
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment("worker")["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] >= 1  # the other queues need a worker too
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert KEDA_REDIS_REQUIRED <= set(metadata) <= KEDA_REDIS_REQUIRED | KEDA_REDIS_OPTIONAL
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA's map[string]string
    assert metadata["listName"] == EVENTS_QUEUE  # kombu's Redis list for the queue
    assert int(metadata["listLength"]) > 0
    # Exactly one way to find the server, and what it names is in the worker's environment.
    assert len({"address", "host", "addressFromEnv", "hostFromEnv"} & set(metadata)) == 1
    from_env = [value for key, value in metadata.items() if key.endswith("FromEnv")]
    worker = container("worker")
    assert [ref["secretRef"]["name"] for ref in worker["envFrom"]] == ["tavus-callbacks"]
    assert set(from_env) <= secret_keys() | set(env_of(worker))
    # The Redis the trigger reads is REDIS_URL's: same host, port and db.
    example = Settings.from_env({"REDIS_URL": of_kind("Secret")[0]["stringData"]["REDIS_URL"]})
    address = of_kind("Secret")[0]["stringData"][metadata["addressFromEnv"]]
    assert example.redis_url is not None and f"@{address}/{metadata['databaseIndex']}" in (
        example.redis_url
    )


@pytest.mark.parametrize("component", ["web", "worker", "beat"])
def test_each_container_runs_its_procfile_line(component: str) -> None:
    prefix, argv = procfile()[component]
    assert container(component)["command"] == argv
    assert prefix.items() <= env_of(container(component)).items()


def test_beat_is_one_replica_never_two_at_once() -> None:
    beat = deployment("beat")["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"]["type"] == "Recreate"


def test_web_probes_the_health_endpoints_on_its_port() -> None:
    web = container("web")
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = web["ports"]
    assert web["readinessProbe"]["httpGet"]["port"] == port["name"]
    assert env_of(web)["PORT"] == str(port["containerPort"])  # gunicorn binds $PORT


def gunicorn_setting(name: str) -> float:
    """A constant of deploy/gunicorn.conf.py, read without running it (it prepares metrics)."""
    tree = ast.parse((ROOT / "deploy" / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise LookupError(name)


def test_web_pods_finish_in_flight_requests_before_the_kill() -> None:
    pod = deployment("web")["spec"]["template"]["spec"]
    pre_stop = container("web")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + gunicorn_setting("graceful_timeout") < pod["terminationGracePeriodSeconds"]


def test_worker_pods_requeue_after_the_soft_shutdown_before_the_kill() -> None:
    pod = deployment("worker")["spec"]["template"]["spec"]
    env = env_of(container("worker"))
    assert env["REMAP_SIGTERM"] == "SIGQUIT"  # SIGTERM starts the soft shutdown
    soft = Settings.from_env(env).worker_soft_shutdown_seconds
    # Room after the soft shutdown to cancel the tasks and hand their messages back to Redis.
    assert soft + 10 <= pod["terminationGracePeriodSeconds"]


def test_secrets_come_only_from_the_secret() -> None:
    secret_names = {"CALLBACK_TOKENS", "REDIS_URL", "DATABASE_URL", "SECRET_KEY", "API_TOKENS"}
    assert secret_names <= secret_keys()
    for doc in of_kind("Deployment") + of_kind("Job"):
        for spec in doc["spec"]["template"]["spec"]["containers"]:
            assert not secret_names & set(env_of(spec)), doc["metadata"]["name"]
            assert {"secretRef": {"name": "tavus-callbacks"}} in spec["envFrom"]


def test_every_pod_runs_as_the_images_non_root_user() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None and int(user[1]) != 0
    for doc in of_kind("Deployment") + of_kind("Job"):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user[1])
        for spec in pod["containers"]:
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_image_installs_the_run_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --require-hashes -r requirements/run.txt" in dockerfile
    assert "--no-deps" in dockerfile  # the project itself adds nothing unpinned
