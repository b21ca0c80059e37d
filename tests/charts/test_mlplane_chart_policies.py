"""charts/mlplane: NetworkPolicies, PodSecurity `restricted`, data-service settings and the values contract.

NetworkPolicies are checked by evaluating them the way the API server's semantics define (selectors,
peers, ports) for the pods the chart and `mlplane render` create: the traffic users need passes,
everything else is refused.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import helm_python
import pydantic
import pytest
import yaml
from chart_helpers import (
    CHART,
    NAMESPACE,
    SCENARIOS,
    Obj,
    find,
    objects,
    pod_specs,
    render,
    scenario_objects,
    scenario_values,
)

from mlplane.k8s import ResolvedArtifact, chart_values
from mlplane.k8s import render as render_deployment
from mlplane.spec import ModelDeployment, Platform


# --------------------------------------------------------------------------- a NetworkPolicy evaluator
def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector: matchLabels and matchExpressions, all must hold ({} selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


class Pod:
    def __init__(self, namespace: str, labels: dict[str, str], ns_labels: dict[str, str] | None = None,
                 ip: str = "10.9.9.9") -> None:
        self.namespace, self.labels, self.ip = namespace, labels, ip
        self.ns_labels = {"kubernetes.io/metadata.name": namespace, **(ns_labels or {})}


def _peer_matches(peer: Obj, policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return ipaddress.ip_address(pod.ip) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], pod.ns_labels):
            return False
    elif pod.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector"), pod.labels)


def _rule_allows(rule: Obj, peers_key: str, policy_ns: str, other: Pod, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(peer, policy_ns, other) for peer in peers)


def allowed(policies: list[Obj], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    """Whether src may open a connection to dst:port under `policies` (ingress at dst, egress at src)."""
    def side(kind: str, pod: Pod, other: Pod, rules_key: str, peers_key: str) -> bool:
        mine = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                and kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod.labels)]
        return not mine or any(_rule_allows(rule, peers_key, pod.namespace, other, port, protocol)
                               for p in mine for rule in p["spec"].get(rules_key, []))
    return side("Ingress", dst, src, "ingress", "from") and side("Egress", src, dst, "egress", "to")


def policies_of(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] == "NetworkPolicy"]


def chart_pods(objs: list[Obj]) -> dict[str, Pod]:
    """The chart's pods by component, with their template labels."""
    pods = {}
    for o in objs:
        if o["kind"] == "Deployment":
            labels = o["spec"]["template"]["metadata"]["labels"]
        elif o["kind"] == "Pod":
            labels = o["metadata"]["labels"]
        else:
            continue
        pods[labels["app.kubernetes.io/component"]] = Pod(NAMESPACE, labels)
    return pods


def model_server(namespace: str, ns_labels: dict[str, str] | None = None) -> Pod:
    """A predictor pod as `mlplane render` labels it (KServe copies predictor.labels onto the pod)."""
    dep = ModelDeployment.model_validate({"metadata": {"name": "iris", "namespace": namespace},
                                          "spec": {"model": "models:/iris/1"}})
    isvc = render_deployment(dep, Platform.default(), ResolvedArtifact("1", "s3://b/m"))[0]
    return Pod(namespace, isvc["spec"]["predictor"]["labels"], ns_labels)


KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
API_SERVER = Pod("default", {}, ip="172.20.0.10")  # an endpoint of the `kubernetes` Service
STRANGER = Pod("default", {"app": "curl"})


# --------------------------------------------------------------------------- network policies
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_chart_pod_is_isolated_for_ingress(scenario: str) -> None:
    objs = scenario_objects(scenario)
    pods, policies = chart_pods(objs), policies_of(objs)
    assert set(pods) == {"operator", "mlflow", "test"}
    for component, pod in pods.items():
        assert [p for p in policies if "Ingress" in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], pod.labels)], f"{component} is not isolated"
        assert not allowed(policies, STRANGER, pod, 5000), component
        assert not allowed(policies, STRANGER, pod, 8080), component


def test_mlflow_admits_the_operator_the_helm_test_and_model_servers() -> None:
    objs = scenario_objects("default")
    pods, policies = chart_pods(objs), policies_of(objs)
    mlflow = pods["mlflow"]
    assert allowed(policies, pods["operator"], mlflow, 5000)
    assert allowed(policies, pods["test"], mlflow, 5000)  # `helm test` must pass
    assert allowed(policies, model_server("ml"), mlflow, 5000)
    assert allowed(policies, model_server(NAMESPACE), mlflow, 5000)
    assert not allowed(policies, model_server("ml"), mlflow, 22)
    assert not allowed(policies, Pod("ingress-nginx", {"app": "ingress"}), mlflow, 5000)
    assert not allowed(policies, pods["mlflow"], pods["operator"], 8080)


def test_mlflow_peers_are_configurable() -> None:
    objs = objects(render({"networkPolicy": {
        "modelServerNamespaceSelector": {"mlplane.io/serving": "true"},
        "ingressNamespaceSelector": {"kubernetes.io/metadata.name": "ingress-nginx"},
        "mlflowExtraFrom": [{"namespaceSelector": {"matchLabels": {"team": "training"}}}]},
        "mlflow": {"port": 8443}}))
    pods, policies = chart_pods(objs), policies_of(objs)
    mlflow = pods["mlflow"]
    assert allowed(policies, model_server("ml", {"mlplane.io/serving": "true"}), mlflow, 8443)
    assert not allowed(policies, model_server("ml"), mlflow, 8443)
    assert allowed(policies, Pod("ingress-nginx", {"app": "ingress"}), mlflow, 8443)
    assert allowed(policies, Pod("jobs", {"job": "train"}, {"team": "training"}), mlflow, 8443)
    assert not allowed(policies, Pod("jobs", {"job": "train"}), mlflow, 8443)
    assert allowed(policies, pods["operator"], mlflow, 8443) and not allowed(policies, pods["operator"], mlflow, 5000)


def test_operator_egress_is_dns_api_server_and_mlflow_only() -> None:
    objs = scenario_objects("default")
    pods, policies = chart_pods(objs), policies_of(objs)
    operator = pods["operator"]
    assert allowed(policies, operator, KUBE_DNS, 53, "UDP") and allowed(policies, operator, KUBE_DNS, 53, "TCP")
    assert allowed(policies, operator, API_SERVER, 443) and allowed(policies, operator, API_SERVER, 6443)
    assert allowed(policies, operator, pods["mlflow"], 5000)
    assert not allowed(policies, operator, Pod("kube-system", {"k8s-app": "other"}), 53, "UDP")
    assert not allowed(policies, operator, model_server("ml"), 8080)
    assert not allowed(policies, operator, Pod("default", {}, ip="93.184.216.34"), 80)
    assert not allowed(policies, STRANGER, operator, 8080)


def test_operator_api_server_cidrs_and_extra_egress() -> None:
    objs = objects(render({"networkPolicy": {
        "apiServer": {"cidrs": ["172.20.0.0/24"], "ports": [443]},
        "operatorExtraEgress": [{"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "milvus"}}}], "ports": [{"port": 19530, "protocol": "TCP"}]}]}}))
    policies, operator = policies_of(objs), chart_pods(objs)["operator"]
    assert allowed(policies, operator, API_SERVER, 443)
    assert not allowed(policies, operator, API_SERVER, 6443)
    assert not allowed(policies, operator, Pod("default", {}, ip="10.1.2.3"), 443)
    assert allowed(policies, operator, Pod("milvus", {"app": "milvus"}), 19530)


def test_network_policies_can_be_switched_off() -> None:
    manifests = render({"networkPolicy": {"enabled": False}})
    assert policies_of(objects(manifests)) == []
    assert {"Deployment", "Service", "ConfigMap"} <= {o["kind"] for o in objects(manifests)}
    assert "NetworkPolicies:" not in manifests["mlplane/templates/NOTES.txt"]
    assert "NetworkPolicies:        ingress only to MLflow" in render()["mlplane/templates/NOTES.txt"]


# --------------------------------------------------------------------------- PodSecurity restricted
_ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}


def restricted_violations(spec: Obj) -> list[str]:
    """What the Pod Security Standard `restricted` (v1.32) refuses in a pod spec."""
    found = []
    pod_sc = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(field)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    if any(s["name"] not in ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                             "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start")
           for s in pod_sc.get("sysctls", [])):
        found.append("unsafe sysctl")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


def test_restricted_check_is_not_vacuous() -> None:
    bad = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}
    assert len(restricted_violations(bad)) == 7


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_meets_podsecurity_restricted(scenario: str) -> None:
    objs = scenario_objects(scenario)
    specs = pod_specs(objs)
    # The model servers KServe starts from the ClusterServingRuntimes.
    specs += [(f"ClusterServingRuntime/{o['metadata']['name']}", o["spec"]) for o in objs
              if o["kind"] == "ClusterServingRuntime"]
    assert len(specs) == 5
    for name, spec in specs:
        assert restricted_violations(spec) == [], name
        for c in spec["containers"]:  # a numeric non-root user, so runAsNonRoot never blocks the start
            assert (c["securityContext"].get("runAsUser") or spec["securityContext"]["runAsUser"]) >= 1000, name


# --------------------------------------------------------------------------- Feast and Milvus
def test_feature_and_vector_store_settings_are_the_platforms_with_secrets_by_reference() -> None:
    platform = {"featureStore": {"enabled": True, "registry": "s3://b/registry.db", "onlineStore": {
                    "type": "redis", "secrets": {"connection_string": {"name": "feast-redis", "key": "url"}}}},
                "vectorStore": {"enabled": True, "backend": "milvus", "uri": "http://milvus.milvus:19530",
                                "tokenSecret": {"name": "milvus-token", "key": "token"}}}
    objs = objects(render({"platform": platform}))
    assert find(objs, "Platform", "default")["spec"] == platform
    config = find(objs, "ConfigMap", "mlplane-operator")["data"]
    assert not [k for k in config if k.startswith(("MLPLANE_FEATURE", "MLPLANE_VECTOR", "MLPLANE_RUNTIME",
                                                   "MLPLANE_SERVING"))]
    container = find(objs, "Deployment", "mlplane-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "MLPLANE_VECTOR_STORE_TOKEN" not in {e["name"] for e in container["env"]}
    assert container["envFrom"] == [{"configMapRef": {"name": "mlplane-operator"}}]


def test_data_services_are_off_in_the_default_platform() -> None:
    objs = scenario_objects("default")
    assert find(objs, "Platform", "default")["spec"] == {}


# --------------------------------------------------------------------------- values contract
def test_values_schema_is_generated_from_the_models() -> None:
    assert chart_values.main(["--check"]) == 0, "run `python -m mlplane.k8s.chart_values`"
    assert json.loads((CHART / "values.schema.json").read_text(encoding="utf-8")) == chart_values.schema()


def test_values_yaml_holds_the_models_defaults() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8")) == chart_values.defaults()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenarios_are_valid_chart_values(scenario: str) -> None:
    chart_values.ChartValues.model_validate(scenario_values(scenario))


@pytest.mark.parametrize(("values", "path", "message"), [
    ({"networkPolicy": {"enable": False}}, "/networkPolicy", "'enable' not allowed"),
    ({"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}, "/networkPolicy/apiServer/cidrs/0", "pattern"),
    ({"networkPolicy": {"apiServer": {"ports": [0]}}}, "/networkPolicy/apiServer/ports/0", "minimum"),
    ({"platform": {"vectorStore": {"token": "s3cret"}}}, "/platform/vectorStore", "'token' not allowed"),
    ({"platform": {"featureStore": {"registry": 6566}}}, "/platform/featureStore/registry", "want "),
    ({"vectorStore": {"uri": "http://milvus:19530"}}, "", "'vectorStore' not allowed"),
    ({"operator": {"replicas": 2}}, "/operator/replicas", "maximum"),
])
def test_invalid_values_are_refused_by_helm_and_the_models(values: Obj, path: str, message: str) -> None:
    with pytest.raises(helm_python.HelmError) as raised:
        render(values)
    assert f"at '{path}'" in str(raised.value) and message in str(raised.value)
    with pytest.raises(pydantic.ValidationError):
        chart_values.ChartValues.model_validate(values)


def test_values_schema_accepts_helm_globals_from_an_umbrella_chart() -> None:
    objs: list[Any] = objects(render({"global": {"imageRegistry": "mirror.example.com"}}))
    assert find(objs, "Deployment", "mlplane-mlflow")
