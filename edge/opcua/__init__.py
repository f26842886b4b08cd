"""The edge's OPC UA server (the address space and methods of docs/interfaces.md); see docs/opcua.md."""

from edge.opcua.server import EdgeOpcUaServer

__all__ = ["EdgeOpcUaServer"]
