"""The central's OPC UA link to the edges (docs/interfaces.md: edge OPC UA server); see docs/opcua.md."""

from central.edge_link.fleet import EdgeFleet, central_credentials
from central.edge_link.outcome import PushOutcome, PushStatus

__all__ = ["EdgeFleet", "PushOutcome", "PushStatus", "central_credentials"]
