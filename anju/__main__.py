"""``python -m anju``: the same command line as the ``anju`` script, for a process that
starts another Anju process with its own interpreter (``anju cloud ingest
--processes``)."""

from anju.cli import main

main()
