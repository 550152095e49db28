# -*- test-case-name: tests.test_bbs_client -*-
"""
Diego's BBS as an L{ILRPDirectory}: protobuf over HTTPS with mutual TLS.

Public face: L{BBSClient}; the agent it is given is built with
L{diegossh.tls.tlsPolicyFromPEMFiles} and L{diegossh.tls.makeHTTPSAgent}.

C{models.proto} declares exactly the BBS fields the proxy reads;
C{models_pb2.py} and C{models_pb2.pyi} are generated from it and checked in.
To regenerate (grpcio-tools is a development tool only, in any venv), from
the repository root::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \\
        diegossh/proxy/bbs/models.proto
    for f in diegossh/proxy/bbs/models_pb2.py diegossh/proxy/bbs/models_pb2.pyi; do
        sed -i '1i # ruff: noqa\\n# fmt: off\\n# mypy: ignore-errors' "$f"
    done

The generated code checks at import that the protobuf runtime is at least
the version of the protoc that made it (7.35.1 for the checked-in files).
"""

from diegossh.proxy.bbs._client import (
    ACTUAL_LRPS_PATH,
    DESIRED_LRP_PATH_R2,
    DESIRED_LRP_PATH_R3,
    BBSClient,
)

__all__ = [
    "ACTUAL_LRPS_PATH",
    "DESIRED_LRP_PATH_R2",
    "DESIRED_LRP_PATH_R3",
    "BBSClient",
]
