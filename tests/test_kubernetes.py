"""deploy/kubernetes: every manifest valid against the API's schemas, and the fleet's properties.

``kubernetes_validate`` checks each resource offline and strictly (no unknown field) against the
schemas of the newest Kubernetes it knows. Then each property the runners rely on is a check that
returns the problems it finds: the manifests must have none, and a bad variant of each property
must make its check report one, so that no check passes by construction.
"""

import copy
import re
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
STREAM_HOST = re.compile(r"https://\$\(POD_NAME\)(\.[a-z0-9.-]+)")
MARGIN_SECS = 5  # the runner's last ~2 s after the drain, and a little more

Resources = list[dict]
Check = Callable[[Resources], list[str]]


def load(folder: Path = MANIFESTS) -> Resources:
    """Every resource of the folder's manifests (kustomization.yaml aside)."""
    resources = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return resources


def one(resources: Resources, kind: str, name: str | None = None) -> dict:
    """The resource of that kind (and name); the test fails if there is not exactly one."""
    found = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def runner_container(resources: Resources) -> dict:
    """The runner's container in the StatefulSet."""
    containers = one(resources, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "runner")


def env_value(container: dict, name: str, config: dict) -> str | None:
    """A setting as the container gets it: its own env first, else the ConfigMap."""
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    return config.get("data", {}).get(name)


def prestop_secs(container: dict) -> float:
    """Seconds the preStop hook sleeps (``sleep N`` or the native sleep action)."""
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return 0.0


def check_grace(resources: Resources) -> list[str]:
    """terminationGracePeriodSeconds > DRAIN_TIMEOUT_SECS + the preStop sleep + a margin."""
    pod = one(resources, "StatefulSet")["spec"]["template"]["spec"]
    container = runner_container(resources)
    drain = float(env_value(container, "DRAIN_TIMEOUT_SECS", one(resources, "ConfigMap")) or 60)
    sleep = prestop_secs(container)
    problems = [] if sleep > 0 else ["no preStop sleep: SIGTERM may come before endpoints update"]
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    if grace < drain + sleep + MARGIN_SECS:
        problems.append(f"grace {grace:g} s < drain {drain:g} s + preStop {sleep:g} s + margin")
    return problems


def check_probes(resources: Resources) -> list[str]:
    """Readiness on /readyz (a draining runner leaves the Services), liveness on /healthz."""
    container = runner_container(resources)
    problems = []
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} asks {got!r}, not {path}")
    return problems


def check_non_root(resources: Resources) -> list[str]:
    """The pod runs as UID 10001, never root."""
    security = one(resources, "StatefulSet")["spec"]["template"]["spec"].get("securityContext", {})
    own = runner_container(resources).get("securityContext", {})
    merged = {**security, **own}
    problems = []
    if merged.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if merged.get("runAsUser") != 10001:
        problems.append(f"runAsUser is {merged.get('runAsUser')!r}, not the image's 10001")
    if own.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    return problems


def check_stream_addresses(resources: Resources) -> list[str]:
    """Every ordinal the HPA may create has its own Service and Ingress host."""
    statefulset = one(resources, "StatefulSet")
    name = statefulset["metadata"]["name"]
    container = runner_container(resources)
    stream_url = env_value(container, "STREAM_URL", one(resources, "ConfigMap")) or ""
    match = STREAM_HOST.fullmatch(stream_url)
    if match is None:
        return [f"STREAM_URL {stream_url!r} is not https://$(POD_NAME).<domain>"]
    names = [e["name"] for e in container.get("env", [])]
    pod_name: dict = next((e for e in container.get("env", []) if e["name"] == "POD_NAME"), {})
    problems = []
    if pod_name.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        problems.append("POD_NAME is not the pod's name from the downward API")
    elif names.index("POD_NAME") > names.index("STREAM_URL"):
        problems.append("POD_NAME comes after STREAM_URL, which cannot expand it")
    maximum = one(resources, "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    services = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Service"}
    backends = {
        rule["host"]: path["backend"]["service"]["name"]
        for ingress in resources
        if ingress["kind"] == "Ingress"
        for rule in ingress["spec"].get("rules", [])
        for path in rule.get("http", {}).get("paths", [])
    }
    for ordinal in range(maximum):
        pod = f"{name}-{ordinal}"
        selector = services.get(pod, {}).get("spec", {}).get("selector", {})
        if selector.get("statefulset.kubernetes.io/pod-name") != pod:
            problems.append(f"no Service selecting the pod {pod} alone")
        if backends.get(pod + match.group(1)) != pod:
            problems.append(f"the host {pod}{match.group(1)} is not routed to the Service {pod}")
    return problems


def check_autoscaler(resources: Resources) -> list[str]:
    """The HPA scales the StatefulSet on the pods' prt_calls_active."""
    spec = one(resources, "HorizontalPodAutoscaler")["spec"]
    target = spec["scaleTargetRef"]
    problems = []
    name = one(resources, "StatefulSet")["metadata"]["name"]
    if (target.get("kind"), target.get("name")) != ("StatefulSet", name):
        problems.append(f"the HPA scales {target.get('kind')} {target.get('name')}")
    metrics = [
        m["pods"]["metric"]["name"] for m in spec.get("metrics", []) if m.get("type") == "Pods"
    ]
    if metrics != ["prt_calls_active"]:
        problems.append(f"the HPA's pods metrics are {metrics}, not prt_calls_active")
    return problems


CHECKS: list[Check] = [
    check_grace,
    check_probes,
    check_non_root,
    check_stream_addresses,
    check_autoscaler,
]


def _variant(change: Callable[[Resources], None]) -> Resources:
    resources = copy.deepcopy(load())
    change(resources)
    return resources


def _pod(resources: Resources) -> dict:
    return one(resources, "StatefulSet")["spec"]["template"]["spec"]


def _drop_service(name: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        resources.remove(one(resources, "Service", name))

    return change


def _drop_ingress_host(host_prefix: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        for ingress in resources:
            if ingress["kind"] == "Ingress":
                rules = ingress["spec"]["rules"]
                rules[:] = [r for r in rules if not r["host"].startswith(host_prefix)]

    return change


def _set_env(name: str, value: str) -> Callable[[Resources], None]:
    def change(resources: Resources) -> None:
        for item in runner_container(resources)["env"]:
            if item["name"] == name:
                item["value"] = value

    return change


BAD: list[tuple[Check, Callable[[Resources], None]]] = [
    (check_grace, lambda r: _pod(r).update(terminationGracePeriodSeconds=60)),
    (check_grace, lambda r: one(r, "ConfigMap")["data"].update(DRAIN_TIMEOUT_SECS="120")),
    (check_grace, lambda r: runner_container(r)["lifecycle"].pop("preStop")),
    (check_grace, lambda r: _pod(r).pop("terminationGracePeriodSeconds")),
    (check_probes, lambda r: runner_container(r)["readinessProbe"]["httpGet"].update(path="/")),
    (check_probes, lambda r: runner_container(r).pop("livenessProbe")),
    (check_non_root, lambda r: _pod(r)["securityContext"].update(runAsNonRoot=False)),
    (check_non_root, lambda r: runner_container(r)["securityContext"].update(runAsUser=0)),
    (check_non_root, lambda r: _pod(r).pop("securityContext")),
    (check_stream_addresses, _drop_service("prt-runner-3")),
    (check_stream_addresses, _drop_ingress_host("prt-runner-5.")),
    (
        check_stream_addresses,
        lambda r: one(r, "HorizontalPodAutoscaler")["spec"].update(maxReplicas=20),
    ),
    (check_stream_addresses, _set_env("STREAM_URL", "https://phone.example.com")),
    (
        check_stream_addresses,
        lambda r: runner_container(r)["env"].append(runner_container(r)["env"].pop(0)),
    ),
    (
        check_stream_addresses,
        lambda r: one(r, "Service", "prt-runner-1")["spec"]["selector"].update(
            {"statefulset.kubernetes.io/pod-name": "prt-runner-2"}
        ),
    ),
    (
        check_autoscaler,
        lambda r: one(r, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
            kind="Deployment"
        ),
    ),
    (
        check_autoscaler,
        lambda r: one(r, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"].update(
            name="cpu"
        ),
    ),
]


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    load(),
    ids=lambda r: f"{r['kind']}/{r['metadata']['name']}",
)
def test_manifest_is_valid_strictly(resource: dict) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(resource, version, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    statefulset = copy.deepcopy(one(load(), "StatefulSet"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_manifests_pass(check: Check) -> None:
    assert check(load()) == []


@pytest.mark.parametrize(
    ("check", "change"), BAD, ids=[f"{c.__name__}-{n}" for n, (c, _) in enumerate(BAD)]
)
def test_check_catches_a_bad_variant(check: Check, change) -> None:
    assert check(_variant(change)) != []


def test_every_check_has_a_bad_variant() -> None:
    assert {check for check, _ in BAD} == set(CHECKS)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_the_webhook_ingress_routes_twilio_and_keeps_metrics_inside() -> None:
    ingress = one(load(), "Ingress", "prt-runner")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert {"/incoming", "/stream-status", "/campaign-answer", "/campaign-amd", "/api"} <= paths
    assert not paths & {"/", "/metrics", "/healthz", "/readyz", "/media-stream"}
