"""Edge controller: one per battery cabinet; fast control loop, safety interlocks, OPC UA server."""
