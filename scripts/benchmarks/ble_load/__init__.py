"""The child processes of the ``edge-ble`` benchmark: the agent, and a bare bumble host."""
