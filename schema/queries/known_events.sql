SELECT project_id, event_id, min(kafka_offset) AS first_offset, min(received_at_ms) AS first_received_at_ms
FROM events
WHERE kafka_partition = ? AND received_at_ms >= ?
GROUP BY project_id, event_id
