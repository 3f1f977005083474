"""deploy/: the Grafana dashboard against the exporter's metric families (cluster.metrics.FAMILIES), the
KubeRay manifests against KubeRay's CRDs (vendored in tests/data/kuberay/), prometheus.yml through
``promtool check config`` and docker-compose.yml through ``docker-compose config``.

promtool (Debian package ``prometheus``) and docker-compose (Debian package ``docker-compose``) must be
installed: without them these tests fail rather than skip. ``dashboard_queries`` is also what the
Prometheus tests run against a real sweep.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from cluster import cli_base, metrics
from cluster.cli import build_parser
from cluster.sweep import load_spec

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "zonesim-sweeps.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "zonesim.yml"
PROMETHEUS_CONFIGS = sorted((DEPLOY / "prometheus").glob("*.yml"))
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERAY = DEPLOY / "kuberay"
# KubeRay's CRDs, vendored from ../shared/schemas/kuberay/ (see SOURCE.md there): CI runs on a clone
# that may have no ../shared beside it
CRDS = ROOT / "tests" / "data" / "kuberay"
SHARED_CRDS = ROOT.parent / "shared" / "schemas" / "kuberay"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
DATASOURCE_UID = "zonesim-prometheus"
RAY_DISCOVERY_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
IMAGE_ROOT = "/zonesim"  # where deploy/Dockerfile puts the repository's files

# Grafana's built-in interval variables, as concrete durations (a 5 s scrape interval, a 1 h range).
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
VARIABLES = ("sweep", "machine", "policy")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_METRIC = re.compile(r"\b(zonesim_[a-z0-9_]+)\b(\s*\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install {package} (.ci/run installs it)"
    return path


def _load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_LOADER)


# -- the dashboard -------------------------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows included, with the panels of collapsed rows (nested under the row)."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def query_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def _substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"dashboard query uses ${name}, which dashboard_queries does not know: {expr}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def dashboard_queries(sweep: str = "", machine: str = "", policy: str = "") -> list[str]:
    """Every panel query of the dashboard as Prometheus would receive it from Grafana: ``$sweep``,
    ``$machine`` and ``$policy`` replaced by the given regex (empty: ``.*``, Grafana's "All" here), and
    ``$__rate_interval``, ``$__interval`` and ``$__range`` by 1m, 15s and 1h. In panel order."""
    values = {"sweep": sweep or ".*", "machine": machine or ".*", "policy": policy or ".*", **GRAFANA_INTERVALS}
    return [_substitute(target["expr"], values) for panel in query_panels(load_dashboard())
            for target in panel["targets"]]


def exposed_names() -> dict[str, str]:
    """Sample name as Prometheus stores it -> its family in cluster.metrics.FAMILIES."""
    out = {}
    for family, (kind, _, _) in metrics.FAMILIES.items():
        if kind == "counter":
            out[family if family.endswith("_total") else family + "_total"] = family
        elif kind == "histogram":
            out.update({family + suffix: family for suffix in ("_bucket", "_sum", "_count")})
        else:
            out[family] = family
    return out


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric, {label: (operator, value)}) of every zonesim_ vector selector in a query."""
    return [(name, {m[0]: (m[1], m[2]) for m in _MATCHER.findall(braces or "")})
            for name, braces in _METRIC.findall(expr)]


def variable_query(variable: dict) -> str:
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def test_dashboard_identity_and_unique_panel_ids():
    dashboard = load_dashboard()
    assert (dashboard["uid"], dashboard["title"]) == ("zonesim-sweeps", "zonesim sweeps")
    assert 36 <= dashboard["schemaVersion"] <= 41
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
    kinds = {panel["type"] for panel in query_panels(dashboard)}
    assert kinds <= {"timeseries", "stat", "gauge", "bargauge", "table"}, kinds


def test_every_panel_queries_the_provisioned_datasource():
    for panel in query_panels(load_dashboard()):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']} {target['refId']}: empty expr"
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE_UID, panel["title"]


def test_template_variables_select_sweep_machine_and_policy():
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert set(VARIABLES) <= set(variables)
    names = exposed_names()
    for name in VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"], name
        assert variable["datasource"]["uid"] == DATASOURCE_UID, name
        match = re.fullmatch(r"label_values\((zonesim_\w+)(\{[^}]*\})?,\s*(\w+)\)", variable_query(variable))
        assert match, f"${name}: {variable_query(variable)}"
        metric, _, label = match.groups()
        assert metric in names and label == name, f"${name}: {variable_query(variable)}"
        assert name in metrics.FAMILIES[names[metric]][2]


def test_every_query_is_filtered_by_the_variables():
    exprs = [target["expr"] for panel in query_panels(load_dashboard()) for target in panel["targets"]]
    names = exposed_names()
    for expr in exprs:
        for metric, matchers in selectors(expr):
            if metric not in names:
                continue  # test_metric_names_and_labels_come_from_the_exporter says which
            labels = metrics.FAMILIES[names[metric]][2]
            assert matchers.get("sweep") == ("=~", "$sweep"), f"{metric} not filtered by $sweep in {expr}"
            if "machine" in labels:
                assert matchers.get("machine") == ("=~", "$machine"), f"{metric}: $machine in {expr}"
                assert "policy" in matchers, f"{metric}: $policy in {expr}"
    assert any('policy=~"$policy"' in expr for expr in exprs)


def test_metric_names_and_labels_come_from_the_exporter():
    dashboard = load_dashboard()
    names = exposed_names()
    used = set()
    queries = [(panel["title"], target) for panel in query_panels(dashboard) for target in panel["targets"]]
    queries += [(f"${v['name']}", {"expr": variable_query(v)}) for v in dashboard["templating"]["list"]]
    for title, target in queries:
        expr = target["expr"]
        metric_labels = set()
        for metric, matchers in selectors(expr):
            assert metric in names, f"{title}: {metric} is not a sample of cluster.metrics.FAMILIES ({expr})"
            family = names[metric]
            used.add(family)
            labels = set(metrics.FAMILIES[family][2]) | ({"le"} if metric.endswith("_bucket") else set())
            assert set(matchers) <= labels, f"{title}: {metric} has no label {set(matchers) - labels}"
            metric_labels |= labels
        for group in _GROUPING.findall(expr):
            grouped = {label.strip() for label in group.split(",") if label.strip()}
            assert grouped <= metric_labels, f"{title}: grouping by {grouped - metric_labels} ({expr})"
        legend = set(_LEGEND.findall(target.get("legendFormat", "")))
        assert legend <= metric_labels, f"{title}: legend label {legend - metric_labels} ({expr})"
    assert used == set(metrics.FAMILIES), f"families on no panel: {sorted(set(metrics.FAMILIES) - used)}"


def test_dashboard_queries_substitute_every_variable():
    plain = dashboard_queries()
    assert plain and not any("$" in expr for expr in plain)
    assert all('sweep=~".*"' in expr for expr in plain)
    chosen = dashboard_queries(sweep="p5-flushes", machine="pa8800", policy="stock|unmapped")
    assert len(chosen) == len(plain)
    assert any('machine=~"pa8800", policy=~"stock|unmapped"' in expr for expr in chosen)
    assert any("[1m]" in expr for expr in chosen)


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each query as a recording rule's expression (a syntax and type check)."""
    promtool = _tool("promtool", "prometheus")
    for n, queries in enumerate((dashboard_queries(), dashboard_queries("s1|s2", "pa8800", "unmapped"))):
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"zonesim:dashboard_query_{i}", "expr": expr} for i, expr in enumerate(queries)]}]}
        path = tmp_path / f"rules{n}.yml"
        path.write_text(yaml.safe_dump(rules), encoding="utf-8")
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_serves_the_dashboard():
    datasource, = _load_yaml(DATASOURCES)["datasources"]
    assert (datasource["uid"], datasource["type"]) == (DATASOURCE_UID, "prometheus")
    provider, = _load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    compose = _load_yaml(COMPOSE)["services"]["grafana"]["volumes"]
    mounts = {target.split(":")[0]: Path(source) for source, target in (v.split(":", 1) for v in compose)}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == DATASOURCES.parent.parent


# -- Prometheus ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_promtool_accepts_the_config(config):
    promtool = _tool("promtool", "prometheus")
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_broken_config(tmp_path):
    """So that the test above can fail: a scrape timeout longer than the scrape interval."""
    promtool = _tool("promtool", "prometheus")
    broken = tmp_path / "prometheus.yml"
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    broken.write_text(text.replace("scrape_timeout: 4s", "scrape_timeout: 6s"), encoding="utf-8")
    assert broken.read_text(encoding="utf-8") != text
    done = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True, text=True, check=False)
    assert done.returncode != 0


def test_prometheus_scrapes_zonesim_and_ray():
    from ray._private import ray_constants

    jobs = {job["job_name"]: job for job in _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]}
    targets = {t for group in jobs["zonesim"]["static_configs"] for t in group["targets"]}
    assert targets == {f"127.0.0.1:{cli_base.SWEEP_PORT}", f"127.0.0.1:{cli_base.SERVICE_PORT}"}
    assert jobs["zonesim"]["scrape_interval"] == "5s"
    files = [f for sd in jobs["ray"]["file_sd_configs"] for f in sd["files"]]
    assert files == [RAY_DISCOVERY_FILE]
    assert Path(RAY_DISCOVERY_FILE).name == ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE


# -- docker-compose ------------------------------------------------------------------------------


def compose_config() -> dict:
    """docker-compose.yml as docker-compose resolves it (RAY_AUTH_TOKEN unset: the placeholder)."""
    exe = _tool("docker-compose", "docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "GRAFANA_ADMIN_PASSWORD")}
    for quiet in (["-q"], []):
        done = subprocess.run([exe, "-f", str(COMPOSE), "config", *quiet], capture_output=True, text=True,
                              env=env, check=False, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    return yaml.safe_load(done.stdout)


def _published(port) -> tuple[str, str]:
    """(host ip, host port) of a published port, short ("127.0.0.1:3000:3000/tcp") or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip", ""), str(port.get("published", ""))
    parts = str(port).split("/")[0].split(":")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])


def test_docker_compose_config_is_valid_and_loopback_only():
    services = compose_config()["services"]
    assert {"ray-head", "ray-worker", "prometheus", "grafana"} <= set(services)
    published = [(name, _published(p)) for name, s in services.items() for p in s.get("ports", [])]
    assert published
    for name, (host_ip, _) in published:
        assert host_ip == "127.0.0.1", f"{name} publishes a port beyond loopback"
    assert {port for _, (_, port) in published} >= {"3000", "9090", "8265"}


def test_docker_compose_ray_requires_its_token():
    services = compose_config()["services"]
    ray = {name: s for name, s in services.items() if str(s.get("command", "")).startswith("ray start")}
    assert set(ray) == {"ray-head", "ray-worker"}
    tokens = set()
    for name, service in ray.items():
        env = service["environment"]
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert env.get("RAY_AUTH_TOKEN"), name
        tokens.add(env["RAY_AUTH_TOKEN"])
        assert "--metrics-export-port=8080" in service["command"], name
    assert len(tokens) == 1
    assert services["ray-worker"]["deploy"]["replicas"] >= 1
    for name in ("prometheus", "grafana"):  # see the exporters' loopback endpoints on the head
        assert services[name]["network_mode"] == "service:ray-head", name
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services["prometheus"]["volumes"]]
    assert "/tmp/ray" in targets, "Prometheus needs Ray's service discovery file"


# -- KubeRay -------------------------------------------------------------------------------------


def _strict(schema: object) -> object:
    """The schema with unknown fields refused wherever it lists the known ones, as the API server
    does under strict field validation (kubectl's default); plain JSON Schema would let a
    misspelt field through, and Kubernetes would drop it silently without strict validation."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    literal = ("properties", "enum", "default", "required")
    out = {key: value if key in literal else _strict(value) for key, value in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: _strict(s) for name, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    """The CRD's openAPIV3Schema for ``api_version`` (jsonschema ignores the x-kubernetes-* keywords;
    int-or-string fields are anyOf integer / string, which it checks as written)."""
    crd = _load_yaml(CRDS / CRD_FILES[kind])
    group, version = api_version.split("/")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, kind)
    entry, = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{api_version} {kind} is not served"
    return jsonschema.Draft7Validator(_strict(entry["schema"]["openAPIV3Schema"]))


def manifest(name: str) -> dict:
    return _load_yaml(KUBERAY / name)


def validation_errors(doc: dict) -> list[str]:
    validator = crd_validator(doc["kind"], doc["apiVersion"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def pod_templates(doc: dict) -> list[tuple[dict, dict]]:
    """(group spec, pod template) of the head and every worker group."""
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [(group, group["template"]) for group in groups]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifest_matches_its_crd(name):
    doc = manifest(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert validation_errors(doc) == []
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    assert spec["authOptions"]["mode"] == "token"


@pytest.mark.parametrize("break_it", [
    pytest.param(lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"metrics-export-port": 8080}),
                 id="rayStartParams-not-a-string"),
    pytest.param(lambda d: d["spec"].update(workerGroupSpec=d["spec"].pop("workerGroupSpecs")), id="misspelt-field"),
    pytest.param(lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"), id="missing-required"),
    pytest.param(lambda d: d["spec"]["workerGroupSpecs"][0].update(replicas="2"), id="replicas-not-an-integer"),
    pytest.param(lambda d: d["spec"]["authOptions"].update(mode="on"), id="auth-mode-not-in-enum"),
])
def test_a_broken_raycluster_fails_validation(break_it):
    doc = copy.deepcopy(manifest("raycluster.yaml"))
    break_it(doc)
    assert validation_errors(doc)


def test_rayjob_runs_a_sweep_the_cli_accepts():
    doc = manifest("rayjob.yaml")
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    command = shlex.split(doc["spec"]["entrypoint"])
    assert command[:2] == ["zonesim", "sweep"]
    args = build_parser().parse_args(command[1:])
    assert args.spec.startswith(IMAGE_ROOT + "/")
    load_spec(str(ROOT / args.spec[len(IMAGE_ROOT) + 1:]))  # the spec the image holds loads
    assert args.metrics_host == "0.0.0.0", "a loopback endpoint is out of Prometheus' reach in a pod"
    (head, template), *_ = pod_templates(doc)
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert ports["zonesim-sweep"] == args.metrics_port
    mounts = [m["mountPath"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])]
    assert any(args.out.startswith(path + "/") for path in mounts), f"--out {args.out} is on no volume"


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_podmonitor_scrapes_the_ray_pods(name):
    monitor = manifest("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    scraped = set()
    for group, template in pod_templates(manifest(name)):
        labels = template["metadata"]["labels"]
        assert wanted.items() <= labels.items(), f"{name}: the PodMonitor does not select {labels}"
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
        assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])
        scraped |= endpoints & set(ports)
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in ports.values()
    assert {"metrics", "zonesim-sweep"} <= scraped


def test_deploy_sweep_specs_load():
    specs = sorted((DEPLOY / "sweeps").glob("*.toml"))
    assert specs
    for path in specs:
        assert load_spec(str(path)).configs()


def test_the_vendored_crds_are_the_shared_ones_when_those_are_here() -> None:
    names = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert names == ["ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"]
    if SHARED_CRDS.is_dir():  # the workplace's copy, when this clone sits beside it
        for name in names:
            assert (CRDS / name).read_bytes() == (SHARED_CRDS / name).read_bytes(), name
