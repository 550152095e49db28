# -*- test-case-name: tests.test_loggregator -*-
"""
The v2 envelopes the proxy sends, built field for field as upstream's
ssh-proxy builds them through C{diego-logging-client} and go-loggregator's
ingress client, so that the agent, the firehose and C{cf logs} see the same
thing from us as from upstream.

An app log (C{SendAppLog}):
  - C{log.payload}: the message as UTF-8; C{log.type}: C{OUT} (C{WithStdout});
  - C{source_id} and C{instance_id}: the C{source_id} and C{instance_id} of
    the tags given (the LRP's log guid and index, see L{lrpLogTags});
  - C{tags}: the component's C{origin}, then C{source_type} (C{SSH}), then
    every tag given, in that order, so a tag given wins (upstream applies
    C{WithTag}, C{WithAppInfo}, C{WithEnvelopeTags} in that order).

A gauge (C{SendMetric}, C{SendComponentMetric}):
  - C{gauge.metrics}: one C{name: {unit, value}} (C{SendMetric}'s unit is
    C{Metric});
  - C{source_id} and C{instance_id}: the component's own
    (C{loggregator_source_id}, C{loggregator_instance_id});
  - C{tags}: only C{origin} (C{loggregator_job_origin}), plus any given here.

C{timestamp} is nanoseconds since the epoch, taken when the envelope is built
(go-loggregator: C{time.Now().UnixNano()} in C{EmitLog}/C{EmitGauge}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from diegossh.proxy.loggregator.envelope_pb2 import Envelope, Log
from diegossh.proxy.target import LRPTarget

__all__ = [
    "SSH_SOURCE_TYPE",
    "ComponentIdentity",
    "appLogEnvelope",
    "gaugeEnvelope",
    "lrpLogTags",
]

SSH_SOURCE_TYPE = "SSH"
"""The source type of the proxy's app logs (C{cf logs} shows C{[SSH/0]})."""


@dataclass(frozen=True)
class ComponentIdentity:
    """
    Who the proxy is to Loggregator: C{loggregator_job_origin},
    C{loggregator_source_id} and C{loggregator_instance_id} of upstream's
    configuration (the BOSH job sets C{ssh_proxy}, C{ssh_proxy} and the
    instance's id). The agent adds deployment, job, index and ip itself.
    """

    origin: str = ""
    sourceId: str = ""
    instanceId: str = ""


def lrpLogTags(target: LRPTarget) -> dict[str, str]:
    """
    The tags of an instance's app logs: the desired LRP's metric tags, with
    C{source_id} defaulting to its log guid and C{instance_id} to its index
    (upstream's C{permissions_builder.createPermissions}).
    """
    tags = dict(target.metric_tags)
    tags.setdefault("source_id", target.log_guid)
    tags.setdefault("instance_id", str(target.index))
    return tags


def appLogEnvelope(
    message: str,
    tags: Mapping[str, str],
    *,
    identity: ComponentIdentity,
    timestamp: int,
    sourceType: str = SSH_SOURCE_TYPE,
    stream: Log.Type = Log.OUT,
) -> Envelope:
    """An app log line for the instance C{tags} name (see the module docstring)."""
    envelope = Envelope(
        timestamp=timestamp,
        source_id=tags.get("source_id", ""),
        instance_id=tags.get("instance_id", ""),
    )
    envelope.tags["origin"] = identity.origin
    envelope.tags["source_type"] = sourceType
    envelope.tags.update(tags)
    envelope.log.SetInParent()
    envelope.log.payload = message.encode("utf-8")
    envelope.log.type = stream
    return envelope


def gaugeEnvelope(
    name: str,
    value: float,
    unit: str,
    *,
    identity: ComponentIdentity,
    timestamp: int,
    tags: Mapping[str, str] | None = None,
) -> Envelope:
    """One component gauge (see the module docstring)."""
    envelope = Envelope(
        timestamp=timestamp,
        source_id=identity.sourceId,
        instance_id=identity.instanceId,
    )
    envelope.tags["origin"] = identity.origin
    envelope.tags.update(tags or {})
    envelope.gauge.SetInParent()
    metric = envelope.gauge.metrics[name]
    metric.unit = unit
    metric.value = float(value)
    return envelope
