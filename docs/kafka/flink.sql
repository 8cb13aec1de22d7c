-- Tracker events from Kafka as a Flink SQL table (docs/kafka.md).
-- Every column but eid, vid, sid, created, first, ip and params is absent
-- from an event the request did not fill: NULL here.
CREATE TABLE tracker_events (
  `eid` STRING,
  `vid` STRING,
  `sid` STRING,
  `created` BIGINT,
  `first` BOOLEAN,
  `uid` STRING,
  `app` STRING,
  `last` STRING,
  `url` STRING,
  `ip` STRING,
  `ptype` STRING,
  `bhash` STRING,
  `auth` STRING,
  `xid` STRING,
  `split` STRING,
  `ename` STRING,
  `etyp` STRING,
  `ver` STRING,
  `sink` STRING,
  `targets` STRING,
  `country` STRING,
  `culture` STRING,
  `source` STRING,
  `medium` STRING,
  `campaign` STRING,
  `term` STRING,
  `ref` STRING,
  `aff` STRING,
  `browser` STRING,
  `device` STRING,
  `os` STRING,
  `tz` STRING,
  `outcome` STRING,
  `username` STRING,
  `duration` BIGINT,
  `score` DOUBLE,
  `latlon` ARRAY<DOUBLE>,
  `vp` ARRAY<BIGINT>,
  `new_visitor` BOOLEAN,
  `params` MAP<STRING, STRING>,
  `event_time` AS TO_TIMESTAMP_LTZ(`created`, 3),
  `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
  `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  WATERMARK FOR `event_time` AS `event_time` - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'tracker.events',
  'properties.bootstrap.servers' = 'kafka-1:9092,kafka-2:9092,kafka-3:9092',
  'properties.group.id' = 'flink-tracker-events',
  'scan.startup.mode' = 'earliest-offset',
  'value.format' = 'json',
  'value.json.fail-on-missing-field' = 'false',
  'value.json.ignore-parse-errors' = 'false'
);

-- At-least-once delivery: an event can arrive twice (same eid). Keep the first:
CREATE VIEW tracker_events_once AS
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY `eid` ORDER BY `event_time` ASC) AS `n`
  FROM tracker_events
) WHERE `n` = 1;
