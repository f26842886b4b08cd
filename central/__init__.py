"""Central optimizer service: economic dispatch, scheduled re-optimization, push to edges, HTTP API."""
