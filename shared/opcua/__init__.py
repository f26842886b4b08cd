"""The OPC UA link between the central and the edges (docs/interfaces.md: edge OPC UA server); see
docs/opcua.md.

``common`` holds the address space names and telemetry mapping, ``pki`` the certificates, ``trust`` the
trust lists, ``users`` the users file; ``ua_security`` adapts them to asyncua.
"""
