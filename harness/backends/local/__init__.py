"""The embedded local mesh: real istiod, pilot-agent and Envoy as processes on loopback."""
