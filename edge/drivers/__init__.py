"""Protocol drivers: bytes on a bus in, raw register blocks or values out.

Nothing here knows about MQTT, batches or the database.
"""
