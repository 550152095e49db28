# -*- test-case-name: tests.test_bastion_kubernetes -*-
"""
L{KubernetesEngine} against the fake API server over real TLS sockets
(built from kubeconfig files and from a service account directory), and
the v4 channel framing and the exec protocol on plain bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WSRequest
from zope.interface.verify import verifyObject

from diegossh.bastion._engineapi import MAX_FILE_SIZE, CommandFailed, ExecOutput
from diegossh.bastion._kubernetes_config import StaticToken, TokenFile
from diegossh.bastion._kubernetes_exec import (
    SUBPROTOCOL,
    ExecProtocol,
    exitCodeFromStatus,
    splitChannel,
)
from diegossh.bastion.kubernetes import KubernetesEngine
from diegossh.bastion.targets import EngineError, EngineTarget
from diegossh.interfaces import IContainerEngine
from tests.engine_contract import EngineContract, EngineUnderTest, failure
from tests.fakes.kubernetes import FakeKubernetesAPI
from tests.fakes.tls import CertificateAuthority

LABELS = {"diegossh.io/bastion": "true", "team": "blue"}
KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0p0cvRrVZ0c3OvnjDJHoTjp7dNE4RBh0DTt1dGjtnO pod\n"
NAMESPACE = "apps"


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def pki(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "pki")


@pytest_twisted.async_yield_fixture
async def kube(pki: CertificateAuthority) -> AsyncIterator[FakeKubernetesAPI]:
    fake = FakeKubernetesAPI(_reactor(), pki, pki.issueServer("apiserver"), namespace=NAMESPACE)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def engine(kube: FakeKubernetesAPI, tmp_path: Path) -> Callable[..., KubernetesEngine]:
    """Engines built from a kubeconfig the fake writes."""
    count = iter(range(1000))

    def make(
        labels: dict[str, str] = LABELS,
        timeout: float = 5.0,
        namespace: str | None = None,
        container: str | None = None,
        **kubeconfig: Any,
    ) -> KubernetesEngine:
        path = kube.writeKubeconfig(tmp_path / f"kubeconfig-{next(count)}", **kubeconfig)
        return KubernetesEngine.fromKubeconfig(
            _reactor(), path, labels, timeout, namespace, container=container
        )

    return make


@pytest.fixture
def contract(kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]) -> EngineUnderTest:
    return EngineUnderTest(
        add=lambda name, files: kube.add(name, "10.1.2.3", LABELS, files=files),
        engine=engine,
        commands=lambda: [command for _, command in kube.execs],
    )


class TestKubernetesContract(EngineContract):
    pass


def test_provides_interface(engine: Callable[..., KubernetesEngine]) -> None:
    e = engine()
    assert verifyObject(IContainerEngine, e)
    assert e.kind == "kubernetes"


@pytest.mark.parametrize(
    "labels",
    [
        {"a,b": "c"},
        {"a": "b,c"},
        {"a": "b=c"},
        {"": "x"},
        {"a b": "c"},
        {"-a": "b"},
        {"a": "x" * 64},
    ],
)
def test_label_syntax_checked(labels: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        KubernetesEngine(_reactor(), "https://k8s:6443", "default", labels, 1.0, None)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_lists_running_pods_with_every_label(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    web0 = kube.add("web-0", "10.1.2.3", {**LABELS, "app": "web"})
    kube.add("web-1", "10.1.2.4", {"diegossh.io/bastion": "true"})
    kube.add("web-2", "10.1.2.5", {**LABELS, "team": "red"})
    kube.add("web-3", "10.1.2.6", LABELS, phase="Pending")
    kube.add("web-4", "10.1.2.7", LABELS, deleting=True)
    kube.add("web-5", "", LABELS)
    kube.add("web-6", "10.1.2.9", LABELS, namespace="other")
    web7 = kube.add("web-7", "10.1.2.10", LABELS)
    targets = await engine().listTargets()
    assert targets == [
        EngineTarget("web-0", web0.uid, "10.1.2.3"),
        EngineTarget("web-7", web7.uid, "10.1.2.10"),
    ]
    [request] = kube.requests
    assert request.path == f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert request.target == (
        f"/api/v1/namespaces/{NAMESPACE}/pods"
        "?labelSelector=diegossh.io%2Fbastion%3Dtrue%2Cteam%3Dblue"
        "&fieldSelector=status.phase%3DRunning"
    )
    assert request.headers["authorization"] == f"Bearer {kube.token}"
    assert request.user == "token"


@pytest_twisted.ensureDeferred
async def test_filters_again_when_the_api_ignores_selectors(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.ignoreSelectors = True
    kube.add("web-0", "10.1.2.3", LABELS)
    kube.add("web-1", "10.1.2.4", {"team": "blue"})
    kube.add("web-2", "10.1.2.5", LABELS, phase="Succeeded")
    kube.add("web-3", "10.1.2.6", LABELS, deleting=True)
    assert [t.name for t in await engine().listTargets()] == ["web-0"]


@pytest_twisted.ensureDeferred
async def test_no_labels(kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]) -> None:
    kube.add("a", "10.1.0.1", {})
    kube.add("b", "10.1.0.2", {"x": "y"})
    assert [t.name for t in await engine(labels={}).listTargets()] == ["a", "b"]
    assert "labelSelector" not in kube.requests[0].query


@pytest_twisted.ensureDeferred
async def test_read_from_home(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"~/.ssh/id_ed25519.pub": KEY}, home="/home/app")
    e = engine()
    [target] = await e.listTargets()
    assert await e.readFile(target, "~/.ssh/id_ed25519.pub") == KEY
    command = ["sh", "-c", 'exec cat -- "$HOME/$1"', "sh", ".ssh/id_ed25519.pub"]
    assert kube.execs == [("web-0", command)]
    upgrade = kube.requests[-1]
    assert upgrade.websocket and upgrade.user == "token"
    assert upgrade.path == f"/api/v1/namespaces/{NAMESPACE}/pods/web-0/exec"
    assert upgrade.query == {"command": command, "stdout": ["true"], "stderr": ["true"]}
    assert upgrade.subprotocols == (SUBPROTOCOL,)
    assert upgrade.headers["authorization"] == f"Bearer {kube.token}"


@pytest_twisted.ensureDeferred
async def test_missing_file(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS)
    e = engine()
    [target] = await e.listTargets()
    error = await failure(e.readFile(target, "~/.ssh/id_ed25519.pub"))
    assert isinstance(error, CommandFailed)
    assert error.exitCode == 1
    assert "cat: /root/.ssh/id_ed25519.pub: No such file or directory" in str(error)


@pytest_twisted.ensureDeferred
async def test_vanished_pod(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    e = engine()
    [target] = await e.listTargets()
    kube.remove("web-0")
    error = await failure(e.readFile(target, "/k"))
    assert str(error) == 'pod web-0 is gone: pods "web-0" not found'
    assert kube.execs == []


@pytest_twisted.ensureDeferred
async def test_container_of_a_pod_with_sidecars(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"}, containers=["proxy", "sshd"])
    e = engine()
    [target] = await e.listTargets()
    error = await failure(e.readFile(target, "/k"))
    assert "a container name must be specified for pod web-0" in str(error)
    chosen = engine(container="sshd")
    assert await chosen.readFile(target, "/k") == b"key"
    assert kube.requests[-1].query["container"] == ["sshd"]


@pytest.mark.slow  # over half a second of wall-clock time: not in make unit
@pytest_twisted.ensureDeferred
async def test_api_down_then_back(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    e = engine(timeout=60.0)
    [target] = await e.listTargets()
    await kube.stop()
    error = await failure(e.listTargets())
    assert str(error).startswith(f"cannot reach the Kubernetes API at {kube.url}")
    assert "cannot reach" in str(await failure(e.readFile(target, "/k")))
    await kube.start()
    assert await e.listTargets() == [target]
    assert await e.readFile(target, "/k") == b"key"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_api_that_never_answers(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    e = engine(timeout=0.5)
    [target] = await e.listTargets()
    kube.hang = True
    error = await failure(e.listTargets())
    assert str(error) == f"the Kubernetes API at {kube.url} did not answer within 0.5 s"
    assert "did not answer" in str(await failure(e.readFile(target, "/k")))
    assert kube.requests[-1].websocket
    closed = Deferred.fromCoroutine(kube.connectionsClosed())
    await closed.addTimeout(10, _reactor())


@pytest_twisted.ensureDeferred
async def test_wrong_token(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    [target] = await engine().listTargets()
    wrong = "wrong-" + kube.token[::-1]
    e = engine(token=wrong)
    for error in (await failure(e.listTargets()), await failure(e.readFile(target, "/k"))):
        assert "refused the credentials (HTTP 401)" in str(error)
        assert wrong not in str(error) and kube.token not in str(error)
        assert wrong not in repr(error)
    assert [r.user for r in kube.requests[-2:]] == [None, None]
    assert kube.execs == []


@pytest_twisted.ensureDeferred
async def test_untrusted_server(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine], tmp_path: Path
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    [target] = await engine().listTargets()
    other = CertificateAuthority.create(tmp_path / "other")
    path = kube.writeKubeconfig(tmp_path / "kc-other")
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        other.certPEM
    ).decode()
    path.write_text(yaml.safe_dump(config))
    e = KubernetesEngine.fromKubeconfig(_reactor(), path, LABELS, 60.0)
    listed = await failure(e.listTargets())
    assert "cannot reach" in str(listed) and "certificate verify failed" in str(listed)
    read = await failure(e.readFile(target, "/k"))
    assert "certificate verify failed" in str(read)
    assert kube.requests[-1].path == f"/api/v1/namespaces/{NAMESPACE}/pods"  # no more got through
    assert kube.execs == []


@pytest_twisted.ensureDeferred
async def test_insecure_skip_tls_verify(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    e = engine(insecure=True)
    [target] = await e.listTargets()
    assert await e.readFile(target, "/k") == b"key"


@pytest_twisted.ensureDeferred
async def test_kubeconfig_client_certificate(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine], pki: CertificateAuthority
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"/k": b"key"})
    e = engine(clientCertificate=pki.issueClient("bastion"))
    [target] = await e.listTargets()
    assert await e.readFile(target, "/k") == b"key"
    assert [(r.user, "authorization" in r.headers) for r in kube.requests] == [
        ("cert:bastion", False),
        ("cert:bastion", False),
    ]


@pytest_twisted.ensureDeferred
async def test_kubeconfig_files_relative_to_it(
    kube: FakeKubernetesAPI, pki: CertificateAuthority, tmp_path: Path
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS)
    client = pki.issueClient("bastion")
    directory = tmp_path / "kube"
    directory.mkdir()
    (directory / "ca.pem").write_bytes(pki.certPEM)
    (directory / "client.pem").write_bytes(client.certPEM)
    (directory / "client-key.pem").write_bytes(client.keyPEM)
    (directory / "config").write_text(
        f"""
apiVersion: v1
kind: Config
current-context: main
clusters:
- name: c
  cluster:
    server: {kube.url}
    certificate-authority: ca.pem
users:
- name: u
  user:
    client-certificate: client.pem
    client-key: client-key.pem
contexts:
- name: main
  context:
    cluster: c
    user: u
"""
    )
    e = KubernetesEngine.fromKubeconfig(_reactor(), directory / "config", LABELS, 5.0)
    assert e.namespace == "default"
    assert await e.listTargets() == []
    kube.add("web-9", "10.1.9.9", LABELS, namespace="default")
    assert [t.name for t in await e.listTargets()] == ["web-9"]
    assert kube.requests[-1].user == "cert:bastion"


@pytest_twisted.ensureDeferred
async def test_kubeconfig_ca_file_and_namespace(
    kube: FakeKubernetesAPI, engine: Callable[..., KubernetesEngine]
) -> None:
    kube.add("web-0", "10.1.2.3", LABELS)
    kube.add("team-0", "10.2.0.1", LABELS, namespace="team-a")
    fromContext = engine(caFile=True, namespace="team-a")
    assert fromContext.namespace == "team-a"
    assert [t.name for t in await fromContext.listTargets()] == ["team-0"]


def test_kubeconfig_namespace_argument_wins(kube: FakeKubernetesAPI, tmp_path: Path) -> None:
    path = kube.writeKubeconfig(tmp_path / "kc", namespace="team-a")
    e = KubernetesEngine.fromKubeconfig(_reactor(), path, LABELS, 5.0, namespace="team-b")
    assert e.namespace == "team-b"


def test_kubeconfig_context_chosen(kube: FakeKubernetesAPI, tmp_path: Path) -> None:
    path = kube.writeKubeconfig(tmp_path / "kc", namespace="first")
    config = yaml.safe_load(path.read_text())
    second = json.loads(json.dumps(config["contexts"][0]))
    second["name"] = "second"
    second["context"]["namespace"] = "second-ns"
    config["contexts"].append(second)
    path.write_text(yaml.safe_dump(config))
    assert KubernetesEngine.fromKubeconfig(_reactor(), path, {}, 1.0).namespace == "first"
    chosen = KubernetesEngine.fromKubeconfig(_reactor(), path, {}, 1.0, context="second")
    assert chosen.namespace == "second-ns"
    with pytest.raises(ValueError, match="no context named 'third'"):
        KubernetesEngine.fromKubeconfig(_reactor(), path, {}, 1.0, context="third")


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["users"][0]["user"].update(
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}
        ),
        lambda c: c["users"][0]["user"].update({"auth-provider": {"name": "gcp"}}),
        lambda c: c["users"][0]["user"].update({"username": "u", "password": "p"}),
        lambda c: c["clusters"][0]["cluster"].update({"proxy-url": "http://proxy:3128"}),
        lambda c: c["clusters"][0]["cluster"].update({"insecure-skip-tls-verify": True}),
        lambda c: c["clusters"][0]["cluster"].update({"certificate-authority-data": "!!"}),
        lambda c: c["clusters"][0]["cluster"].update({"server": "ftp://k8s"}),
        lambda c: c.pop("current-context"),
        lambda c: c["contexts"][0]["context"].update({"namespace": "Not_A_Namespace"}),
        lambda c: c["users"][0]["user"].update({"token": "two words"}),
    ],
)
def test_kubeconfig_refused(
    kube: FakeKubernetesAPI, tmp_path: Path, change: Callable[[dict[str, Any]], Any]
) -> None:
    path = kube.writeKubeconfig(tmp_path / "kc")
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError):
        KubernetesEngine.fromKubeconfig(_reactor(), path, LABELS, 1.0)


def _serviceAccount(directory: Path, kube: FakeKubernetesAPI, namespace: str = NAMESPACE) -> Path:
    directory.mkdir()
    (directory / "token").write_text(kube.token + "\n")
    (directory / "ca.crt").write_bytes(kube.ca.certPEM)
    (directory / "namespace").write_text(namespace)
    return directory


def _environ(kube: FakeKubernetesAPI) -> dict[str, str]:
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port)}


@pytest_twisted.ensureDeferred
async def test_in_cluster(kube: FakeKubernetesAPI, tmp_path: Path) -> None:
    kube.add("web-0", "10.1.2.3", LABELS, files={"~/.ssh/id_ed25519.pub": KEY})
    directory = _serviceAccount(tmp_path / "sa", kube)
    e = KubernetesEngine.fromInCluster(
        _reactor(), LABELS, 5.0, directory=directory, environ=_environ(kube)
    )
    assert e.namespace == NAMESPACE
    [target] = await e.listTargets()
    assert await e.readFile(target, "~/.ssh/id_ed25519.pub") == KEY
    assert [r.user for r in kube.requests] == ["token", "token"]
    other = KubernetesEngine.fromInCluster(
        _reactor(), LABELS, 5.0, "elsewhere", directory=directory, environ=_environ(kube)
    )
    assert other.namespace == "elsewhere"
    assert await other.listTargets() == []


def test_in_cluster_needs_the_service(kube: FakeKubernetesAPI, tmp_path: Path) -> None:
    directory = _serviceAccount(tmp_path / "sa", kube)
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST"):
        KubernetesEngine.fromInCluster(_reactor(), LABELS, 5.0, directory=directory, environ={})
    (directory / "ca.crt").unlink()
    with pytest.raises(OSError):
        KubernetesEngine.fromInCluster(
            _reactor(), LABELS, 5.0, directory=directory, environ=_environ(kube)
        )


def test_token_file_reread_at_most_once_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(clock, path)
    assert token() == "first"
    path.write_text("second")
    clock.advance(59.9)
    assert token() == "first"
    clock.advance(0.1)
    assert token() == "second"
    path.unlink()
    clock.advance(60)
    assert token() == "second"
    path.write_text("third")
    assert token() == "second"
    clock.advance(60)
    assert token() == "third"
    assert "third" not in repr(token)


def test_static_token_hidden() -> None:
    assert "s3cret" not in repr(StaticToken("s3cret"))
    with pytest.raises(ValueError):
        StaticToken("bad\r\nX-Header: 1")


# -- the v4 channel framing and the exec protocol, as bytes ----------------------


def test_split_channel() -> None:
    assert splitChannel(b"\x01hello") == (1, b"hello")
    assert splitChannel(b"\x03") == (3, b"")
    with pytest.raises(EngineError):
        splitChannel(b"")


def test_exit_code_from_status() -> None:
    assert exitCodeFromStatus(b'{"metadata":{},"status":"Success"}', "x") == 0
    failure = {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
    }
    assert exitCodeFromStatus(json.dumps(failure).encode(), "x") == 42
    other = {"status": "Failure", "message": 'exec: "sh": executable file not found in $PATH'}
    with pytest.raises(EngineError, match="executable file not found"):
        exitCodeFromStatus(json.dumps(other).encode(), "x")
    for bad in (b"", b"not json", b"[]", b'{"status":"Failure","reason":"NonZeroExitCode"}'):
        with pytest.raises(EngineError):
            exitCodeFromStatus(bad, "x")


class _Server:
    """An ExecProtocol connected to an in-memory wsproto server."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.output = ExecOutput("cat /k in pod web-0")
        self.protocol = ExecProtocol(
            "k8s:6443",
            "/api/v1/namespaces/a/pods/web-0/exec?command=cat",
            [(b"Authorization", b"Bearer T")],
            self.output,
            "the API",
            "web-0",
        )
        self.box: list[Any] = []
        self.protocol.done.addBoth(self.box.append)
        self.protocol.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.SERVER)
        self.ws.receive_data(self.transport.value())
        self.transport.clear()
        [self.request] = self.ws.events()

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def accept(self, subprotocol: str | None = SUBPROTOCOL) -> None:
        self.send(self.ws.send(AcceptConnection(subprotocol=subprotocol)))

    def message(self, channel: int, payload: bytes) -> bytes:
        return self.ws.send(BytesMessage(bytes([channel]) + payload))


def test_exec_protocol_request() -> None:
    server = _Server()
    assert isinstance(server.request, WSRequest)
    assert server.request.target == "/api/v1/namespaces/a/pods/web-0/exec?command=cat"
    assert server.request.subprotocols == [SUBPROTOCOL]
    assert (b"authorization", b"Bearer T") in server.request.extra_headers


def test_exec_protocol_bytes_cut_anywhere() -> None:
    messages = [(1, b""), (1, b"ssh-ed25519 "), (2, b"warn"), (1, b"AAAA")]
    messages.append((3, b'{"metadata":{},"status":"Success"}'))
    for cut in range(0, 200, 3):
        server = _Server()
        wire = server.ws.send(AcceptConnection(subprotocol=SUBPROTOCOL))
        wire += b"".join(server.message(channel, payload) for channel, payload in messages)
        server.send(wire[:cut])
        server.send(wire[cut:])
        assert server.box == [0], cut
        assert server.output.output == b"ssh-ed25519 AAAA"
        assert server.transport.disconnecting


def test_exec_protocol_fragmented_messages() -> None:
    server = _Server()
    server.accept()
    server.send(server.ws.send(BytesMessage(b"\x01ab", message_finished=False)))
    server.send(server.ws.send(BytesMessage(b"cd", message_finished=True)))
    server.send(server.message(3, b'{"status":"Success"}'))
    assert server.box == [0]
    assert server.output.output == b"abcd"


def test_exec_protocol_nonzero_exit() -> None:
    server = _Server()
    server.accept()
    server.send(server.message(2, b"cat: /k: No such file or directory\n"))
    status = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "1"}]},
    }
    server.send(server.message(3, json.dumps(status).encode()))
    assert server.box == [1]
    with pytest.raises(CommandFailed, match="No such file"):
        server.output.result(1)


def test_exec_protocol_no_status() -> None:
    server = _Server()
    server.accept()
    server.send(server.message(1, b"partial"))
    server.send(server.ws.send(CloseConnection(code=1000)))
    server.protocol.connectionLost(Failure(ConnectionDone()))
    [result] = server.box
    assert "ended without a status" in str(result.value)


def test_exec_protocol_wrong_subprotocol() -> None:
    server = _Server()
    server.accept(subprotocol=None)
    [result] = server.box
    assert f"did not agree to {SUBPROTOCOL}" in str(result.value)
    assert server.transport.disconnecting


def test_exec_protocol_text_message() -> None:
    server = _Server()
    server.accept()
    server.send(server.ws.send(TextMessage("1hello")))
    [result] = server.box
    assert isinstance(result.value, EngineError)


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (404, b'{"kind":"Status","message":"pods \\"web-0\\" not found"}', "pod web-0 is gone"),
        (401, b'{"kind":"Status","message":"Unauthorized"}', "refused the credentials"),
        (403, b'{"message":"pods \\"web-0\\" is forbidden"}', "HTTP 403 to exec in pod web-0"),
        (500, b"<html>oops</html>", "HTTP 500"),
    ],
)
def test_exec_protocol_rejected(code: int, body: bytes, expected: str) -> None:
    server = _Server()
    server.send(
        server.ws.send(RejectConnection(status_code=code, has_body=True))
        + server.ws.send(RejectData(body, body_finished=True))
    )
    [result] = server.box
    assert expected in str(result.value)


def test_exec_protocol_oversized_message() -> None:
    server = _Server()
    server.accept()
    server.send(server.message(1, b"x" * (MAX_FILE_SIZE + 2048)))
    [result] = server.box
    assert isinstance(result.value, EngineError)
    assert server.transport.disconnecting


def test_exec_protocol_cancel_drops_the_connection() -> None:
    server = _Server()
    server.accept()
    server.protocol.done.cancel()
    assert server.transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_kubeconfig_tls_server_name(pki: CertificateAuthority, tmp_path: Path) -> None:
    """A server certified by name only, reached by address (as in a cluster)."""
    named = pki.issueServer("named", dnsNames=("kubernetes.default.svc",), ipAddresses=())
    fake = FakeKubernetesAPI(_reactor(), pki, named, namespace=NAMESPACE)
    await fake.start()
    try:
        fake.add("web-0", "10.1.2.3", LABELS)
        path = fake.writeKubeconfig(tmp_path / "kc")
        unnamed = KubernetesEngine.fromKubeconfig(_reactor(), path, LABELS, 60.0)
        assert "cannot reach" in str(await failure(unnamed.listTargets()))
        config = yaml.safe_load(path.read_text())
        config["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes.default.svc"
        path.write_text(yaml.safe_dump(config))
        e = KubernetesEngine.fromKubeconfig(_reactor(), path, LABELS, 60.0)
        assert [t.name for t in await e.listTargets()] == ["web-0"]
    finally:
        await fake.stop()
