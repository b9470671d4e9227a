"""Deployment files checked mechanically (no Docker engine here): compose, topic script, Dockerfile,
Grafana provisioning and dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.settings import Settings, unknown_variables
from stream.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_services_healthchecks_and_dependencies() -> None:
    data = compose()
    services = data["services"]
    assert {"kafka", "topics", "worker", "simulator", "prometheus", "grafana"} <= set(services)
    for name in ("kafka", "worker", "simulator", "prometheus", "grafana"):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker  # replicas would clash
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["simulator"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["topics"].get("restart") == "no"
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["simulator"]["command"][0] == "simulate"
    assert worker["command"] == ["worker"]


def test_compose_kafka_is_kraft() -> None:
    kafka = compose()["services"]["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_env_names_real_settings() -> None:
    services = compose()["services"]
    worker_env = env_of(services["worker"])
    assert worker_env["KAIROS_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env_of(services["simulator"])["KAIROS_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    seen = 0
    for name, service in services.items():
        for var in env_of(service):
            if var.startswith("KAIROS_"):
                assert not unknown_variables({var: ""}), f"{name}: {var} is not a Settings field"
                seen += 1
    assert seen >= 10
    assert not unknown_variables({"KAIROS_WORKER__WEB_PORT": ""})
    assert unknown_variables({"KAIROS_WORKER__NOPE": ""}) == ["KAIROS_WORKER__NOPE"]


def test_compose_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in env_of(compose()["services"]["worker"]).items():
        monkeypatch.setenv(var, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.worker.web_port == 8000 and settings.worker.web_host == "0.0.0.0"
    assert str(settings.model.dir) == "/var/lib/kairos/models/current"
    assert settings.log.json_format is True


def test_ports_agree_between_compose_prometheus_and_image() -> None:
    services = compose()["services"]
    port = env_of(services["worker"])["KAIROS_WORKER__WEB_PORT"]
    assert f":{port}/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "kairos-worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert str(job["dns_sd_configs"][0]["port"]) == port
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in mounts
    assert prom["rule_files"] == ["alerts.yml"]


def compose_command() -> tuple[list[str], bool] | None:
    """The compose client to validate with, and whether it is the old v1 (which predates `name:`)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"], False
    legacy = shutil.which("docker-compose")
    if legacy:
        version = subprocess.run([legacy, "version", "--short"], capture_output=True, text=True, timeout=30)
        return [legacy], version.stdout.strip().startswith("1.")
    return None


def test_docker_compose_config(tmp_path: Path) -> None:
    found = compose_command()
    if found is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed; the YAML checks above stand "
            "in for `docker compose config`"
        )
    command, legacy = found
    path = COMPOSE
    if legacy:
        # docker-compose 1.x validates everything but the top-level `name` key, which came later.
        data = compose()
        data.pop("name", None)
        path = tmp_path / "docker-compose.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run(
        [*command, "-f", str(path), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run_topic_script(tmp_path: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Runs deploy/kafka/create-topics.sh against a fake kafka-topics.sh that records its arguments."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "{log}"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    subprocess.run(
        ["bash", str(DEPLOY / "kafka" / "create-topics.sh")],
        check=True,
        timeout=30,
        env={**clean, **env, "KAFKA_TOPICS": str(fake)},
        capture_output=True,
    )
    created = []
    for line in log.read_text().splitlines():
        if "--create" not in line:
            continue
        words = line.split()
        configs = {words[i + 1] for i, w in enumerate(words) if w == "--config"}
        created.append(
            {
                "name": words[words.index("--topic") + 1],
                "partitions": int(words[words.index("--partitions") + 1]),
                "rf": int(words[words.index("--replication-factor") + 1]),
                "configs": configs,
                "if_not_exists": "--if-not-exists" in words,
            }
        )
    return created


OVERRIDES = {
    "KAIROS_TOPICS__PARTITIONS": "8",
    "KAIROS_TOPICS__EVENTS": "shop-events",
    "KAIROS_WORKER__APP_ID": "b",
}


@pytest.mark.parametrize("env", [{}, OVERRIDES])
def test_topic_script_matches_topic_specs(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("KAIROS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    created = {t["name"]: t for t in run_topic_script(tmp_path, env)}
    assert all(t["if_not_exists"] and t["rf"] == settings.topics.replication_factor for t in created.values())
    for spec in topic_specs(settings):
        assert spec.name in created, f"{spec.name} is not created by create-topics.sh"
        topic = created[spec.name]
        assert topic["partitions"] == spec.partitions, spec.name
        assert topic["configs"] == {f"{k}={v}" for k, v in spec.config.items()}, spec.name
    # Nothing else: a topic the worker does not know is a configuration drift.
    assert set(created) == {spec.name for spec in topic_specs(settings)}
    changelogs = [name for name in created if name.endswith("-changelog")]
    assert changelogs and all(name.startswith(settings.worker.app_id + "-") for name in changelogs)


def test_compose_topics_service_runs_the_script() -> None:
    topics = compose()["services"]["topics"]
    assert "./deploy/kafka/create-topics.sh:/create-topics.sh:ro" in topics["volumes"]
    assert topics["entrypoint"][-1] == "/create-topics.sh"
    assert (
        env_of(topics)["KAIROS_TOPICS__PARTITIONS"]
        == env_of(compose()["services"]["worker"])["KAIROS_TOPICS__PARTITIONS"]
    )


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    pins = re.findall(r"torch==([\w.]+)", text)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch==")]
    assert pins and wanted and {f"torch=={p}" for p in pins} == set(wanted)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/healthz" in text
    assert re.search(r'^ENTRYPOINT \["kairos"\]', text, re.M)
    assert re.search(r'^CMD \["worker"\]', text, re.M)
    assert re.search(r"^USER (?!root)", text, re.M)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for src in copied.split():
            assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"{src} is excluded from the build context"


def test_grafana_provisioning_and_dashboard() -> None:
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    ds = datasources["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/kairos.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    dashboard = json.loads((DEPLOY / "grafana/dashboards/kairos.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]  # rows only group panels
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == ds["uid"], panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "throughput in",
        "throughput out",
        "lag per partition",
        "processing time",
        "latency",
        "pushes by trigger",
        "suppressions by reason",
        "dead letters",
        "model version",
        "state size",
        "recovery",
        "rebalances",
        "erasures and expiries",
        "tick errors",
    ):
        assert topic in titles, f"no panel about {topic}"
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_readme_says_how_to_bring_up_compose_and_what_to_open() -> None:
    """The README's compose section names the commands and the addresses compose really publishes."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Run it with Docker Compose")
    section = readme[start : readme.index("\n## ", start + 1)]
    assert "docker compose up -d --build" in section
    assert ".kairos/models/current" in section  # the workers need a model to become ready
    services = compose()["services"]
    published = {
        name: {str(p).split(":")[0] for p in service.get("ports", [])} for name, service in services.items()
    }
    assert published["grafana"] == {"3000"} and "http://localhost:3000" in section
    assert published["prometheus"] == {"9090"} and "http://localhost:9090" in section
    assert published["kafka"] == {"29092"} and "localhost:29092" in section
    assert "worker" not in {n for n, ports in published.items() if ports}
    assert env_of(services["worker"])["KAIROS_WORKER__WEB_HOST"] == "0.0.0.0"
    assert "KAIROS_WORKER__WEB_HOST=0.0.0.0" in section
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.endswith("/kairos.json") and "home page" in section
