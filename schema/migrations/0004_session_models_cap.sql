-- A session keeps at most MAX_SESSION_MODELS (schema/src/rows.rs) distinct models; past it
-- the list stops growing and models_truncated says so.
ALTER TABLE sessions ADD COLUMN models_truncated UInt8 DEFAULT 0 AFTER models;
