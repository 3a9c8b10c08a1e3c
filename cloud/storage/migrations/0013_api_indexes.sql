-- An index for reading events by gateway, newest first.
--
-- An event's community is its gateway's. The API reads the events of a key's scope
-- gateway by gateway (`GET /events` under any scope) and those of one gateway
-- (`?gateway_id=`). events had indexes by device and by time only, so both reads
-- walked events_ts back through every community's events to find one community's:
-- for a quiet community, the whole table (about 300 ms over 400,000 events; 0.1 ms
-- with this index).

CREATE INDEX events_gateway_ts ON events (gateway_id, ts);
