"""
The bastion end to end on Kubernetes discovery: a stand-in API server over
HTTPS (bearer token, pod list by label selector, exec over WebSocket with
the v4.channel.k8s.io framing) reached through a kubeconfig, in front of
real sshd targets; the scenarios are L{tests.bastion_scenarios}'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from tests.bastion_scenarios import BastionScenarios, World, buildWorld, reactor
from tests.fakes.kubernetes import FakeKubernetesAPI
from tests.fakes.tls import CertificateAuthority

pytestmark = pytest.mark.interop

NAMESPACE = "workspaces"


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory: Any) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("bastion-kubernetes")
    ca = CertificateAuthority.create(tmp / "pki")
    api = FakeKubernetesAPI(reactor, ca, ca.issueServer("apiserver"), namespace=NAMESPACE)
    await api.start()
    kubeconfig = api.writeKubeconfig(tmp / "kubeconfig")
    w = await buildWorld(
        tmp,
        api,
        {"KUBECONFIG": str(kubeconfig)},  # the engine is chosen from it ("auto")
        listCount=lambda: api.count(f"/api/v1/namespaces/{NAMESPACE}/pods"),
        execCommands=lambda: [command for _, command in api.execs],
    )
    try:
        yield w
    finally:
        await w.close()
        await api.stop()


class TestKubernetes(BastionScenarios):
    pass
