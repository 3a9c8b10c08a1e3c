"""Parts of the edge-modbus benchmark that run in processes of their own.

``sims`` hosts simulated devices, ``agent`` runs the gateway agent under load, and
``child`` is the pipe protocol between them and the benchmark: the parent writes one
JSON spec line to the child's stdin and reads JSON lines from its stdout; the child
treats the end of its stdin as the parent gone and stops, so nothing outlives a run.
"""
