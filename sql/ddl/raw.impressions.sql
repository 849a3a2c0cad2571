-- raw.impressions: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per ad impression
-- key: impression_id
create schema if not exists raw;
create table if not exists raw.impressions (
  event_date    date not null comment 'day of the impression',
  impression_id bigint not null comment 'event id, unique',
  user_id       bigint not null comment 'viewer',
  creative_id   bigint not null comment 'creative shown',
  clicked       int not null comment '1 if clicked, else 0'
)
using delta
partitioned by (event_date)
location '${warehouse}/raw/impressions'
comment 'one row per ad impression';
