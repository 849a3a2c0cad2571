-- ctr_by_group_over_time: CTR of every group of every product, run after run
-- grain: one row per (run date, product, group)
-- Sums over the creatives kept in gaip.group_ctr. Group ids are labels of one run's clustering: the
-- same id on two dates is not necessarily the same people (see group_changes_since_last_run).
select run_date, product_id, group_id,
       count(*) as creatives,
       sum(impressions) as impressions,
       sum(clicks) as clicks,
       sum(clicks) / sum(impressions) as ctr
from gaip.group_ctr version as of ${group_ctr_version}
group by run_date, product_id, group_id
order by product_id, group_id, run_date
