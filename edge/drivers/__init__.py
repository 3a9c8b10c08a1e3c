"""Protocol drivers, and the contract between them and the agent core.

The core (poller, stream pump, normaliser, local rules, commands, spool, uplink)
knows devices only by their profile and the values of their points; a driver knows
only how to reach a device over its transport. The contract, in ``contract.py``:

``Driver``
    One per protocol family (``modbus/``, later ``ble/``, ``serial/``, ``osdp/``),
    registered in ``registry.py`` under the protocols it serves (the schemes of
    ``edge.addresses`` and the ``protocol`` of profiles). ``open(address, devices,
    options)`` returns one bus for the devices that share a wire or socket.
    ``DriverUnavailable`` from ``open`` (no Bluetooth adapter, no serial port, a
    library missing) leaves those devices offline with that reason, reported once at
    start-up and in ``/metrics``; every other device keeps running.

Two shapes of bus
    ``PolledBus``: the core's ``BusPoller`` calls ``read(device)`` on each device's
    interval and gets a ``Sample`` (raw values by point name); the bus serialises its
    requests (RS-485 is half duplex). ``StreamingBus``: ``run(sink, stop)`` pushes
    samples as they arrive (BLE notifications and advertisements, serial frames, OSDP
    replies) to a ``StreamSink`` the core implements (``edge.streams.StreamPump``).

Health, the same for every protocol
    A polled bus raises ``DeviceError`` subclasses; a streaming bus calls
    ``sink.offline``/``sink.online`` as devices come and go and ``sink.fault`` for a
    bad frame. The core counts faults by ``DeviceError.kind`` (timeout, unreachable,
    disconnected, exception, ...), decides offline and online, emits
    ``device.offline``/``device.online`` and serves ``/metrics``.

Actuation
    ``write(device, point, value)`` on either shape: the core's ``DeviceActions``
    turns a profile action (unlock, fire release, alarm reset) into a write, so fire
    linkage releases an egress door whatever protocol drives it.

Installer hooks (optional)
    ``probe(device, options)`` reads a device once (``anju device test``): a ``Probe``
    holds each point's raw value with where it lives and the data it came from, in the
    protocol's terms (``IR 10-11 u32``, ``0x1234 0x5678``), and every request with its
    answer. The engineering values, units, labels and the events the rules would raise
    are the same for every protocol, so ``edge.inspection`` adds them from the profile.
    ``candidates(text)`` turns what the installer typed into where to look (Modbus unit
    ids), and ``scan(address, candidates, profiles, options, progress)`` looks there for
    devices on a bus or in the air (``anju device scan``), returning a ``ScanHit`` per
    device with each profile's check; ``scan_terms`` words the command's output. The
    commands reach these hooks only through the registry, so a driver that offers them
    needs no change to the command; one that does not raises ``NotSupported``.

A driver package holds everything of its protocol (transport, request planning,
decoding, its hooks) and imports neither the spool nor the uplink; the core reaches
it only through the registry. ``import-linter`` checks both (``pyproject.toml``).
A driver that fits this contract plugs in without a change to the core: see
``tests/integration/test_driver_contract.py``, where a toy protocol defined in the
test runs in the real agent.
"""
