"""The edge's OPC UA server (CONTRACTS section 6); see docs/opcua.md."""

from edge.opcua.memory_control import InMemoryEdgeControl
from edge.opcua.server import EdgeOpcUaServer

__all__ = ["EdgeOpcUaServer", "InMemoryEdgeControl"]
