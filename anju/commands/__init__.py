"""Sub-commands of the ``anju`` command line, one typer app per module, registered in anju.cli."""
