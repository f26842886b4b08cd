"""The central's OPC UA link to the edges (docs/interfaces.md: edge OPC UA server); see docs/opcua.md."""

from central.edge_link.fleet import EdgeFleet, central_credentials
from central.edge_link.link import EdgeUnreachableError
from central.edge_link.outcome import PushOutcome, PushStatus

__all__ = ["EdgeFleet", "EdgeUnreachableError", "PushOutcome", "PushStatus", "central_credentials"]
