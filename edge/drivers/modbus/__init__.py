"""Modbus TCP and RTU, behind the driver contract (``edge.drivers``).

bus     -- one connection and one lock per bus; the contract's read and write
plan    -- the fewest requests that cover a profile's points, and their decoding
probe   -- one-shot reads, writes and unit scans for installers on site
driver  -- the ``Driver`` the registry hands the agent (``DRIVER``)
"""

from edge.drivers.modbus.driver import ModbusDriver

DRIVER = ModbusDriver()
