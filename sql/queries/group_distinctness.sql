-- group_distinctness: how distinct are the groups of a product?
-- grain: one row per product of regroup run ${run_date}
-- k_star and silhouette from gaip.groups; best_creatives = how many different creatives are the best
-- (top CTR) in some group (1 = every group prefers the same one); mean_ctr_gap = mean over the
-- creatives shown to at least two groups of (highest - lowest group CTR).
with best as (
  select product_id, group_id, creative_id,
         row_number() over (partition by product_id, group_id
                            order by ctr desc, impressions desc, creative_id) as rank
  from gaip.group_ctr version as of ${group_ctr_version}
  where run_date = date '${run_date}'
),
gap as (
  select product_id, creative_id, max(ctr) - min(ctr) as ctr_gap
  from gaip.group_ctr version as of ${group_ctr_version}
  where run_date = date '${run_date}'
  group by product_id, creative_id
  having count(*) >= 2
),
product as (
  select product_id, max(k_star) as k_star, max(silhouette) as silhouette, sum(size) as users
  from gaip.groups version as of ${groups_version}
  where run_date = date '${run_date}'
  group by product_id
)
select p.product_id, p.k_star, p.silhouette, p.users,
       coalesce(b.best_creatives, 0) as best_creatives,
       g.mean_ctr_gap
from product p
left join (select product_id, count(distinct creative_id) as best_creatives
           from best where rank = 1 group by product_id) b on b.product_id = p.product_id
left join (select product_id, avg(ctr_gap) as mean_ctr_gap from gap group by product_id) g
       on g.product_id = p.product_id
order by p.product_id
