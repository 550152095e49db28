# -*- test-case-name: tests.test_loggregator_wiring -*-
"""
The C{loggregator} object of upstream's C{ssh_proxy.json}, parsed once at
start-up.

The BOSH job renders it from C{loggregator.*} properties with
diego-logging-client's key names. Upstream sends nothing unless
C{loggregator_use_v2_api} is true (the job's default is false), and so do
we. The three TLS files are read and checked here, so a missing or broken
one stops start-up naming the file rather than the first login.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diegossh.proxy.loggregator.credentials import IngressTLS
from diegossh.proxy.loggregator.envelopes import ComponentIdentity

DEFAULT_API_PORT = 3458
DEFAULT_BATCH_SIZE = 100

# every key diego-logging-client's Config reads; the deployment, job, index
# and ip keys describe the VM, which the agent tags for itself: accepted, unused
_STRINGS = (
    "loggregator_ca_path",
    "loggregator_cert_path",
    "loggregator_key_path",
    "loggregator_job_deployment",
    "loggregator_job_name",
    "loggregator_job_index",
    "loggregator_job_ip",
    "loggregator_job_origin",
    "loggregator_source_id",
    "loggregator_instance_id",
    "loggregator_app_metric_exclusion_filter",
)
_KEYS = frozenset(
    (*_STRINGS, "loggregator_use_v2_api", "loggregator_api_port", "loggregator_batch_max_size")
)


@dataclass(frozen=True)
class LoggregatorSettings:
    """
    Where the agent's v2 ingress is (C{127.0.0.1:port}, as upstream dials
    C{localhost}), the mutual-TLS material, who the proxy is, and the batch
    size.
    """

    port: int
    tls: IngressTLS
    identity: ComponentIdentity
    batchSize: int = DEFAULT_BATCH_SIZE

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def parseLoggregator(value: object) -> LoggregatorSettings | None:
    """
    The emitter's settings, or L{None} when Loggregator is off (no object, or
    C{loggregator_use_v2_api} not true).

    @raise ValueError: naming the key at fault (C{loggregator.KEY}) or the
        TLS file that cannot be used.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"loggregator: {value!r} is not a JSON object")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ValueError(f"loggregator: unknown key {unknown[0]!r}")
    enabled = value.get("loggregator_use_v2_api", False)
    if not isinstance(enabled, bool):
        raise ValueError(f"loggregator.loggregator_use_v2_api: {enabled!r} is not true or false")
    texts = {key: _text(value, key) for key in _STRINGS}
    if not enabled:
        return None
    port = _number(value, "loggregator_api_port", DEFAULT_API_PORT, 65535)
    batchSize = _number(value, "loggregator_batch_max_size", DEFAULT_BATCH_SIZE, 1 << 20)
    paths = [texts[key] for key in _STRINGS[:3]]
    for key, path in zip(_STRINGS[:3], paths, strict=True):
        if not path:
            raise ValueError(f"loggregator.{key}: needed when loggregator_use_v2_api is true")
    try:
        tls = IngressTLS.fromFiles(*paths)
    except (OSError, ValueError) as e:
        raise ValueError(f"loggregator: {e}") from None
    identity = ComponentIdentity(
        origin=texts["loggregator_job_origin"],
        sourceId=texts["loggregator_source_id"],
        instanceId=texts["loggregator_instance_id"],
    )
    return LoggregatorSettings(port, tls, identity, batchSize)


def _text(value: Mapping[str, Any], key: str) -> str:
    text = value.get(key, "")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise ValueError(f"loggregator.{key}: {text!r} is not a string")
    return text


def _number(value: Mapping[str, Any], key: str, default: int, most: int) -> int:
    number = value.get(key)
    if number is None or number == 0:
        return default  # Go's zero value: the library's default
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= most:
        raise ValueError(f"loggregator.{key}: {number!r} is not a whole number from 1 to {most}")
    return number
