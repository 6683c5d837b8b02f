"""deploy/ and docs/deploy.md: the systemd units and Kubernetes manifests
parse, run the right `markex` commands on the ports `consortium init` gives,
give no reader a signing key, and every figure docs/deploy.md sizes with names
the benchmark it comes from. Nothing here runs systemd or Kubernetes.

The project has no YAML library (the manifests would need one only here), so
the manifests keep to a small block subset of YAML that `load_yaml` reads and
refuses anything outside of; where PyYAML is importable it must agree."""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from keys.layout import NodeConfig, init_consortium
from node.cli import build_parser
from node.command import Exit

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "deploy.md"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


# ====================================================================== a YAML subset


class YamlSubsetError(ValueError):
    """A line outside the block subset the manifests are written in."""


_KEY = re.compile(r"^([A-Za-z0-9_./-]+):(?: (.*))?$")
_INT = re.compile(r"^-?[0-9]+$")


def _scalar(text: str, where: str) -> Any:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"') or '"' in text[1:-1] or "\\" in text:
            raise YamlSubsetError(f"{where}: only plain double-quoted strings: {text}")
        return text[1:-1]
    if text[0] in "[]{}&*!|>'%@`" or " #" in text or text in ("~", "null", "yes", "no"):
        raise YamlSubsetError(f"{where}: not in the subset: {text}")
    if _INT.match(text):
        return int(text)
    return {"true": True, "false": False}.get(text, text)


@dataclass
class _Line:
    indent: int
    text: str
    where: str


def _lines(doc: str, name: str, first: int) -> list[_Line]:
    out = []
    for n, raw in enumerate(doc.splitlines(), first):
        where = f"{name}:{n}"
        if "\t" in raw:
            raise YamlSubsetError(f"{where}: a tab")
        body = raw.rstrip()
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        out.append(_Line(len(body) - len(body.lstrip(" ")), body.strip(), where))
    return out


def _block(lines: list[_Line], i: int, indent: int) -> tuple[Any, int]:
    """The mapping or sequence whose lines start at `indent`, from lines[i]."""
    if lines[i].text.startswith("- ") or lines[i].text == "-":
        seq: list[Any] = []
        while i < len(lines) and lines[i].indent == indent and lines[i].text.startswith("- "):
            line = lines[i]
            rest = line.text[2:]
            if _KEY.match(rest):
                # "- key: value": a mapping whose first key sits after the dash.
                inner = [_Line(indent + 2, rest, line.where)]
                j = i + 1
                while j < len(lines) and lines[j].indent > indent:
                    inner.append(lines[j])
                    j += 1
                value, used = _block(inner, 0, indent + 2)
                if used != len(inner):
                    raise YamlSubsetError(f"{inner[used].where}: bad indentation")
                seq.append(value)
                i = j
            else:
                seq.append(_scalar(rest, line.where))
                i += 1
        return seq, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent:
        line = lines[i]
        m = _KEY.match(line.text)
        if m is None:
            raise YamlSubsetError(f"{line.where}: expected `key: value`: {line.text}")
        key, value = m.group(1), m.group(2)
        if key in mapping:
            raise YamlSubsetError(f"{line.where}: duplicate key {key!r}")
        i += 1
        if value is not None and value.strip():
            mapping[key] = _scalar(value.strip(), line.where)
        elif i < len(lines) and (
            lines[i].indent > indent or (lines[i].indent == indent and lines[i].text[:2] == "- ")
        ):
            mapping[key], i = _block(lines, i, lines[i].indent)
        else:
            raise YamlSubsetError(f"{line.where}: {key!r} has no value")
    if i < len(lines) and lines[i].indent > indent:
        raise YamlSubsetError(f"{lines[i].where}: bad indentation")
    return mapping, i


def load_yaml(text: str, name: str = "<yaml>") -> list[Any]:
    """The documents of `text` (separated by `---` lines), each a nested dict/list."""
    docs, start, chunk = [], 1, []
    for n, line in enumerate([*text.splitlines(), "---"], 1):
        if line.rstrip() != "---":
            chunk.append(line)
            continue
        lines = _lines("\n".join(chunk), name, start)
        if lines:
            if lines[0].indent != 0:
                raise YamlSubsetError(f"{lines[0].where}: a document starts at column 0")
            value, used = _block(lines, 0, 0)
            if used != len(lines):
                raise YamlSubsetError(f"{lines[used].where}: bad indentation")
            docs.append(value)
        start, chunk = n + 1, []
    return docs


def test_the_yaml_subset_reads_what_it_should_and_refuses_the_rest() -> None:
    text = 'a: 1\nb:\n  - x\n  - name: y\n    port: 80\nc: "7"\n---\nd: true\n'
    assert load_yaml(text) == [{"a": 1, "b": ["x", {"name": "y", "port": 80}], "c": "7"},
                               {"d": True}]
    for bad in ("a: [1, 2]\n", "a: 1\na: 2\n", "a:\n\t- x\n", "a: &anchor 1\n", "a: |\n  x\n",
                "a:\n", "a: 1\n  b: 2\n", " a: 1\n", "a: 'x'\n", "a: x # note\n"):
        with pytest.raises(YamlSubsetError):
            load_yaml(bad)


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in MANIFESTS:
        docs = load_yaml(path.read_text(), path.name)
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:  # not a dependency of the project; where it is, it must agree
            pass
        else:
            assert list(yaml.safe_load_all(path.read_text())) == docs, path.name
        out[path.stem] = docs
    return out


# ====================================================================== systemd


# The directives the units may use, per section (systemd.unit, .service, .exec,
# .kill, .resource-control): a typo would be a warning systemd only logs.
UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "After", "Wants", "Requires", "Before"},
    "Service": {
        "Type", "User", "Group", "ExecStart", "Environment", "KillSignal", "TimeoutStopSec",
        "Restart", "RestartSec", "RestartPreventExitStatus", "StateDirectory",
        "StateDirectoryMode", "LimitNOFILE", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
        "PrivateTmp", "PrivateDevices", "ReadOnlyPaths",
    },
    "Install": {"WantedBy"},
}


def load_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections, each its (key, value) pairs in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not raw.endswith("\\"), f"{path.name}:{n}: no continuation lines"
        if line.startswith("["):
            assert line.endswith("]") and line[1:-1] not in sections, f"{path.name}:{n}"
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{path.name}:{n}: {line}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def unit_argv(path: Path, instance: str) -> list[str]:
    """ExecStart's argv as systemd runs it for `instance` (%i, ${VAR} from Environment=)."""
    service = load_unit(path)["Service"]
    env = dict(v.split("=", 1) for k, v in service if k == "Environment")
    (exec_start,) = [v for k, v in service if k == "ExecStart"]
    argv = shlex.split(exec_start.replace("%i", instance))
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in argv]


def parse_markex(argv: list[str]) -> argparse.Namespace:
    """`markex ARGS` parsed by markex's own parser (exits on anything it refuses)."""
    assert Path(argv[0]).name == "markex", argv
    return build_parser().parse_args(argv[1:])


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_has_its_sections_and_only_known_keys(path: Path) -> None:
    sections = load_unit(path)
    assert set(sections) == set(UNIT_KEYS)
    for name, pairs in sections.items():
        unknown = {k for k, _ in pairs} - UNIT_KEYS[name]
        assert not unknown, f"{path.name} [{name}]: {unknown}"
    service = dict(sections["Service"])
    assert service["Type"] == "simple" and service["KillSignal"] == "SIGTERM"
    assert service["User"] == "markex" and service["Restart"] == "on-failure"
    # A wrong command line or node.toml is exit code 2: restarting cannot fix it.
    assert service["RestartPreventExitStatus"] == str(int(Exit.USAGE))
    assert dict(sections["Install"])["WantedBy"] == "multi-user.target"


def test_the_node_unit_runs_the_participants_node() -> None:
    args = parse_markex(unit_argv(DEPLOY / "systemd" / "markex-node@.service", "carrier-1"))
    assert (args.cmd, args.sub) == ("node", "run")
    assert args.consortium == "/etc/markex/c" and args.as_id == "carrier-1"
    assert not args.test_refuse_file and not args.restored
    service = dict(load_unit(DEPLOY / "systemd" / "markex-node@.service")["Service"])
    assert service["StateDirectory"] == "markex/%i"  # /var/lib/markex/<id>: node.toml's data_dir


def test_the_web_unit_serves_the_node_behind_a_local_proxy() -> None:
    args = parse_markex(unit_argv(DEPLOY / "systemd" / "markex-web@.service", "carrier-1"))
    assert args.cmd == "web" and args.as_id == "carrier-1" and args.node == "carrier-1"
    assert args.listen == "127.0.0.1:8080" and args.trusted_proxy == ["127.0.0.1"]


def replica_args(argv: list[str]) -> dict[str, str]:
    """`markex replica run` as issue 17 fixes it: --consortium, --as, --follow
    NODE[,NODE...], --listen HOST:PORT, --data-dir PATH; markex's own parser
    checks it too once `replica run` is registered."""
    assert Path(argv[0]).name == "markex" and argv[1:3] == ["replica", "run"], argv
    flags = argv[3:]
    assert len(flags) % 2 == 0, flags
    got = dict(zip(flags[::2], flags[1::2], strict=True))
    assert set(got) == {"--consortium", "--as", "--follow", "--listen", "--data-dir"}, got
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in got["--follow"].split(","))
    assert re.fullmatch(r"[0-9.]+:[0-9]+", got["--listen"])
    parser = build_parser()
    if "replica" in parser._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        ns = parser.parse_args(argv[1:])
        assert (ns.cmd, ns.sub) == ("replica", "run")
    return got


def test_the_replica_unit_follows_two_carriers_and_listens_on_its_instance_port() -> None:
    got = replica_args(unit_argv(DEPLOY / "systemd" / "markex-replica@.service", "7503"))
    assert got["--follow"] == "carrier-1,carrier-2" and got["--as"] == "carrier-1"
    assert got["--listen"] == "0.0.0.0:7503"
    assert got["--data-dir"] == "/var/lib/markex/replica-7503"


# ====================================================================== Kubernetes


def _workload(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (w,) = [d for d in docs if d["kind"] == kind]
    return w


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def carrier_toml(tmp_path_factory: pytest.TempPathFactory) -> NodeConfig:
    """carrier-1's node.toml as `markex consortium init` writes it by default."""
    d = tmp_path_factory.mktemp("c") / "c"
    init_consortium(d, carriers=3, internet=2, complaints=1, regulators=1, now=datetime.now(UTC))
    return NodeConfig.for_participant(d, "carrier-1")


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def test_every_manifest_is_wired_together(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert set(manifests) == {"node", "replica", "web"}
    for name, docs in manifests.items():
        service = _workload(docs, "Service")
        workload = docs[1]
        assert workload["kind"] in ("StatefulSet", "Deployment")
        assert workload["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
        c = _container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for sp in service["spec"]["ports"]:
            assert sp["targetPort"] in ports, (name, sp)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                (kind,) = [k for k in c[probe] if k in ("tcpSocket", "httpGet", "exec")]
                if kind == "exec":
                    parse_markex(c[probe]["exec"]["command"])
                else:
                    assert c[probe][kind]["port"] in ports, (name, probe)
        volumes = {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        assert {m["name"] for m in c["volumeMounts"]} <= volumes | claims
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        # ... so /tmp is a volume: the node's workers keep their RocksDB secondaries there.
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name


def _projected(workload: dict[str, Any]) -> dict[str, str]:
    """The consortium folder a pod sees: path -> the Secret or ConfigMap it comes from."""
    (vol,) = [v for v in workload["spec"]["template"]["spec"]["volumes"]
              if v["name"] == "consortium"]
    out = {}
    for source in vol["projected"]["sources"]:
        (kind, ref), = source.items()
        for item in ref["items"]:
            assert item["path"] not in out
            out[item["path"]] = f"{kind}:{ref['name']}"
    return out


def test_the_node_manifest_runs_one_node_on_its_init_ports(
    manifests: dict[str, list[dict[str, Any]]], carrier_toml: NodeConfig
) -> None:
    node = _workload(manifests["node"], "StatefulSet")
    assert node["spec"]["replicas"] == 1  # two copies would sign two histories
    c = _container(node)
    args = parse_markex(c["command"])
    assert (args.cmd, args.sub, args.as_id) == ("node", "run", "carrier-1")
    # The default, the machine's cores, would be the host's in a pod.
    assert args.workers == int(c["resources"]["requests"]["cpu"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {
        "member": _port(carrier_toml.member_listen),
        "public": _port(carrier_toml.public_listen),
        "tiles": _port(carrier_toml.tiles_listen),
        "metrics": _port(carrier_toml.metrics_listen),
    }
    meta = node["spec"]["template"]["metadata"]["annotations"]
    assert meta["prometheus.io/port"] == str(ports["metrics"])
    files = _projected(node)
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["consortium"]
    assert mount == args.consortium
    names = ("signing_key", "tls_key", "tls_cert", "members_key")
    wanted = {f"carrier-1/{getattr(carrier_toml, k).name}" for k in names}
    assert {"consortium.json", "consortium.json.sig", "ca/ca.pem", "carrier-1/node.toml"} | wanted \
        == set(files)


def test_readers_get_a_member_certificate_and_no_signing_key(
    manifests: dict[str, list[dict[str, Any]]]
) -> None:
    for name in ("replica", "web"):
        files = _projected(manifests[name][1])
        assert "carrier-1/tls.key" in files and "carrier-1/node.toml" in files
        assert not any(f.endswith(("signing.key", "members.key")) for f in files), name


def test_the_replica_manifest_is_a_headless_service_of_replicas_with_their_own_volume(
    manifests: dict[str, list[dict[str, Any]]]
) -> None:
    service = _workload(manifests["replica"], "Service")
    assert service["spec"]["clusterIP"] == "None"  # DNS lists every pod: clients round_robin
    replicas = _workload(manifests["replica"], "StatefulSet")
    assert replicas["spec"]["replicas"] >= 2
    c = _container(replicas)
    got = replica_args(c["command"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert _port(got["--listen"]) == ports["public"] == service["spec"]["ports"][0]["port"]
    data = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["data"]
    assert got["--data-dir"].startswith(data + "/")
    # Ready only once it answers a lookup that verifies, asked of its own port.
    probe = parse_markex(c["readinessProbe"]["exec"]["command"])
    assert probe.cmd == "lookup" and probe.number and probe.as_id == got["--as"]
    assert probe.node == f"127.0.0.1:{_port(got['--listen'])}"
    assert probe.consortium == got["--consortium"]


def test_the_web_manifest_serves_http_on_its_listen_port(
    manifests: dict[str, list[dict[str, Any]]]
) -> None:
    web = _workload(manifests["web"], "Deployment")
    c = _container(web)
    args = parse_markex(c["command"])
    assert args.cmd == "web" and args.node == "carrier-1" and args.trusted_proxy == ["10.42.7.0/24"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert _port(args.listen) == ports["http"]
    assert c["readinessProbe"]["httpGet"]["path"].startswith("/api/v1/")


# ====================================================================== docs/deploy.md


def _figures() -> list[dict[str, str]]:
    """The rows of docs/deploy.md's table of measured figures."""
    text = DOC.read_text()
    section = text.split("## The figures used", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| ---")]
    head = [h.strip() for h in rows[0].strip("|").split("|")]
    assert head == ["figure", "value", "benchmark", "run"]
    return [dict(zip(head, (c.strip() for c in r.strip("|").split("|")), strict=True))
            for r in rows[1:]]


SCALE_RESULTS = {"scale", "scale_peak_rss", "scale_disk_per_record", "scale_lookup_p99_ratio"}


def test_every_figure_of_the_deployment_names_its_benchmark_and_run() -> None:
    figures = _figures()
    assert len(figures) >= 8
    known = set(bench_main.BENCHMARKS) | SCALE_RESULTS
    history = (ROOT / "docs" / "performance.md").read_text()
    for f in figures:
        bench = f["benchmark"].strip("`")
        assert bench in known, f
        assert re.match(r"[0-9]", f["value"]), f  # a measured number, not a placeholder
        assert re.search(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}", f["run"]), f
        if "performance.md" in f["run"]:
            # The value as docs/performance.md's tables print it, in that benchmark's row.
            prefix = "| scale: " if bench.startswith("scale") else f"| {bench} "
            rows = [r for r in history.splitlines() if r.startswith(prefix)]
            number = re.match(r"[0-9][0-9,.]*", f["value"])
            assert number and any(number.group(0) in r for r in rows), f
    cited = {f["benchmark"].strip("`") for f in figures}
    assert {"lookup_batch", "scale_peak_rss", "scale_disk_per_record", "propagation_p99",
            "propagation_p99_12"} <= cited


def test_the_deployment_doc_explains_every_file_in_deploy() -> None:
    text = DOC.read_text()
    for path in [*UNITS, *MANIFESTS]:
        assert f"deploy/{path.parent.name}/{path.name}" in text, path.name
    for command in ("markex node run --consortium", "markex replica run", "markex web"):
        assert command in text
