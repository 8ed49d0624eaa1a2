SELECT kafka_partition, project_id, session_id
FROM sessions
-- Which sessions have a row at all, for the aggregator's filter of sessions that cannot exist
-- yet: any version of a row will do, so no FINAL, and no DISTINCT (a partition may hold
-- millions; the aggregator collapses the versions). A session stays in one partition.
WHERE kafka_partition IN (SELECT toInt32(arrayJoin(?)))
