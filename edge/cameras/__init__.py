"""The site's knowledge of its cameras, applied at the gateway.

A camera analytics box reports zones and lines by the ids set on the box; the
gateway config (``cameras:``, ``settings``) names them for the cloud's rules, says
when each zone is armed and which door each counting line guards. ``site`` applies
that to the camera events the normaliser made, before they are spooled. It works on
wire events only, so it knows no protocol, spool or agent. Nothing here sees an
image: boxes send counts and zones, and so does the gateway (docs/cameras.md).

Modules:

- ``settings``: the ``cameras`` section of the gateway config.
- ``site``: ``CameraSite``, which names, holds back and ties events to doors.
"""
