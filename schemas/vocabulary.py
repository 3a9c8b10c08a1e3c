"""The fixed vocabulary of the device schema: kinds, metrics with units, event types.

Names are part of the wire contract (docs/design.md section 4); adding one is a schema
change, renaming one is a breaking change.
"""

from enum import StrEnum


class DeviceKind(StrEnum):
    DOOR = "door"
    CAMERA = "camera"
    SMOKE = "smoke"
    WEARABLE = "wearable"


class Protocol(StrEnum):
    MODBUS_RTU = "modbus-rtu"
    MODBUS_TCP = "modbus-tcp"
    BLE = "ble"
    SERIAL = "serial"
    OSDP = "osdp"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Metric(StrEnum):
    SMOKE_OBSCURATION = "smoke.obscuration_pct_per_m"
    TEMPERATURE = "temperature_c"
    CO = "co_ppm"
    BATTERY = "battery_pct"
    HEART_RATE = "heart_rate_bpm"
    RR_INTERVAL = "rr_interval_ms"
    STEPS = "steps"
    MOTION = "motion_level"
    PEOPLE_COUNT = "people_count"
    RSSI = "rssi_dbm"
    DOOR_OPEN = "door.open"
    DOOR_LOCKED = "door.locked"


METRIC_UNITS: dict[Metric, str] = {
    Metric.SMOKE_OBSCURATION: "%/m",
    Metric.TEMPERATURE: "°C",
    Metric.CO: "ppm",
    Metric.BATTERY: "%",
    Metric.HEART_RATE: "1/min",
    Metric.RR_INTERVAL: "ms",
    Metric.STEPS: "1",
    Metric.MOTION: "1",
    Metric.PEOPLE_COUNT: "1",
    Metric.RSSI: "dBm",
    Metric.DOOR_OPEN: "bool",
    Metric.DOOR_LOCKED: "bool",
}


class EventType(StrEnum):
    SMOKE_ALARM = "smoke.alarm"
    SMOKE_CLEARED = "smoke.cleared"
    SMOKE_FAULT = "smoke.fault"
    SMOKE_TEST = "smoke.test"
    DOOR_FORCED_OPEN = "door.forced_open"
    DOOR_HELD_OPEN = "door.held_open"
    DOOR_CLOSED = "door.closed"
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    DOOR_UNLOCKED_BY_FIRE = "door.unlocked_by_fire"
    CAMERA_INTRUSION = "camera.intrusion"
    CAMERA_LOITERING = "camera.loitering"
    CAMERA_LINE_CROSSING = "camera.line_crossing"
    CAMERA_TAMPER = "camera.tamper"
    CAMERA_VIDEO_LOSS = "camera.video_loss"
    WEARABLE_SOS = "wearable.sos"
    WEARABLE_FALL = "wearable.fall"
    WEARABLE_FALL_SUSPECTED = "wearable.fall_suspected"
    WEARABLE_HEART_RATE_ABNORMAL = "wearable.heart_rate_abnormal"
    WEARABLE_INACTIVITY = "wearable.inactivity"
    WEARABLE_OUT_OF_RANGE = "wearable.out_of_range"
    DEVICE_OFFLINE = "device.offline"
    DEVICE_ONLINE = "device.online"
    BATTERY_LOW = "battery.low"
    DEVICE_TAMPER = "device.tamper"
    DEVICE_POWER_FAULT = "device.power_fault"
    TELEMETRY_GAP = "telemetry.gap"


EVENT_SEVERITY: dict[EventType, Severity] = {
    EventType.SMOKE_ALARM: Severity.CRITICAL,
    EventType.SMOKE_CLEARED: Severity.INFO,
    EventType.SMOKE_FAULT: Severity.WARNING,
    EventType.SMOKE_TEST: Severity.INFO,
    EventType.DOOR_FORCED_OPEN: Severity.CRITICAL,
    EventType.DOOR_HELD_OPEN: Severity.WARNING,
    EventType.DOOR_CLOSED: Severity.INFO,
    EventType.ACCESS_GRANTED: Severity.INFO,
    EventType.ACCESS_DENIED: Severity.INFO,
    EventType.DOOR_UNLOCKED_BY_FIRE: Severity.WARNING,
    EventType.CAMERA_INTRUSION: Severity.WARNING,
    EventType.CAMERA_LOITERING: Severity.WARNING,
    EventType.CAMERA_LINE_CROSSING: Severity.INFO,
    EventType.CAMERA_TAMPER: Severity.WARNING,
    EventType.CAMERA_VIDEO_LOSS: Severity.WARNING,
    EventType.WEARABLE_SOS: Severity.CRITICAL,
    EventType.WEARABLE_FALL: Severity.CRITICAL,
    EventType.WEARABLE_FALL_SUSPECTED: Severity.INFO,
    EventType.WEARABLE_HEART_RATE_ABNORMAL: Severity.WARNING,
    EventType.WEARABLE_INACTIVITY: Severity.WARNING,
    EventType.WEARABLE_OUT_OF_RANGE: Severity.WARNING,
    EventType.DEVICE_OFFLINE: Severity.WARNING,
    EventType.DEVICE_ONLINE: Severity.INFO,
    EventType.BATTERY_LOW: Severity.WARNING,
    EventType.DEVICE_TAMPER: Severity.WARNING,
    EventType.DEVICE_POWER_FAULT: Severity.WARNING,
    EventType.TELEMETRY_GAP: Severity.WARNING,
}
