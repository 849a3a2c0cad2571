-- feat.paag_examples: generated from osmf_core/data/catalog.py by `make ddl`; do not edit by hand.
-- grain: one row per impression of the log window, with the viewer's attributes
-- key: impression_id
create schema if not exists feat;
create table if not exists feat.paag_examples (
  split                      string not null comment 'train (earlier days) or test (the last days of the window)',
  event_date                 date not null comment 'day of the impression',
  impression_id              bigint not null comment 'impression',
  user_id                    bigint not null comment 'viewer',
  product_id                 bigint not null comment 'product of the creative',
  creative_id                bigint not null comment 'creative shown',
  clicked                    int not null comment 'label',
  age                        int not null comment 'age segment, 13 segments from under 18 to 65+',
  color                      int not null comment 'preferred product colour, 15 options',
  is_vip                     int not null comment 'VIP member (1) or not (0)',
  os_plant                   int not null comment 'most used mobile OS: android, ios, harmonyos, other',
  has_car                    int not null comment 'owns a car',
  gender                     int not null comment '0 female, 1 male',
  marriage                   int not null comment '0 unknown, 1 single, 2 married',
  child_age                  int not null comment 'age range of the user''s children, 0 = no child, 10 segments',
  has_house                  int not null comment 'owns a house',
  profession                 int not null comment 'profession, 11 types',
  user_active                int not null comment 'activity level on the platform, 3 levels',
  education                  int not null comment 'education level, 6 categories',
  target_group               int not null comment 'social group: student, young professional, urban family, ...',
  member_level               int not null comment 'membership tier, higher = higher tier',
  customer_points            int not null comment 'engagement, five levels',
  purchase_power             int not null comment 'purchasing ability, lower = more power',
  resident_city_level        int not null comment 'city tier: 0 = tier 1 ... 4 = tier 5',
  per_month_order_num        int not null comment 'monthly paid orders over six months, 8 buckets',
  is_impulse_purchase_user   int not null comment 'tends to make impulse purchases',
  promotions_sensitive_level int not null comment 'sensitivity to promotions, higher = more sensitive'
)
using delta
partitioned by (split)
location '${warehouse}/feat/paag_examples'
comment 'PAAG training rows, read through petastorm';
