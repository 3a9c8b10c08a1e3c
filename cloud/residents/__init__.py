"""Residents' personal and health data: sealed at rest, shown only through a logged read.

``crypto`` seals and opens records by envelope encryption under the operator's keys;
``records`` stores residents, reveals their data (writing the access log in the same
transaction), re-keys and erases. Who may reveal is the API's decision; ``records``
gives it the facts (``holds_open_incident``). docs/residents.md explains the scheme.
"""
