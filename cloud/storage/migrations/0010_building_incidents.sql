-- A fire is one incident per building, however many detectors in it alarm: the
-- dispatcher sees one fire on the queue, each property manager gets one webhook, and
-- later detectors' alarms join it. `scope` says what an incident is about and so which
-- index makes repeats join: a device (incidents_one_active_per_device_type), a
-- resident (incidents_one_active_per_resident_type) or a building (below). A
-- building-scoped incident keeps the device whose alarm opened it in device_id.

ALTER TABLE incidents
    ADD COLUMN scope text NOT NULL DEFAULT 'device'
        CHECK (scope IN ('device', 'resident', 'building'));
UPDATE incidents SET scope = 'resident' WHERE resident_id IS NOT NULL;

CREATE UNIQUE INDEX incidents_one_active_per_building_type
    ON incidents (community_id, building, type)
    WHERE scope = 'building' AND status NOT IN ('resolved', 'false_alarm');
