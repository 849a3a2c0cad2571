-- group_changes_since_last_run: how did the groups of each product change with the last regroup run?
-- grain: one row per product in the newest complete regroup run (gaip.runs)
-- Delta time travel: "now" is the table as of version ${user_groups_version} (the newest complete run in
-- the ledger gaip.runs), "before" as of version ${user_groups_prev_version} (the complete run before it);
-- each side's own run date is compared (${last_run_date} now, ${prev_run_date} before; a rerun of the
-- same date is compared with what it replaced). stayed = users in both; kept_together = share of
-- the users who stayed whose current group is the biggest share of one previous group
-- (1.0 = the same partition up to relabelling).
with now as (
  select product_id, user_id, group_id from gaip.user_groups version as of ${user_groups_version}
  where run_date = date '${last_run_date}'
),
before as (
  select product_id, user_id, group_id from gaip.user_groups version as of ${user_groups_prev_version}
  where run_date = date '${prev_run_date}'
),
overlap as (
  select n.product_id, n.group_id as group_now, b.group_id as group_before, count(*) as users
  from now n join before b on b.product_id = n.product_id and b.user_id = n.user_id
  group by n.product_id, n.group_id, b.group_id
),
kept as (
  select product_id, sum(best) as kept, sum(total) as stayed
  from (select product_id, group_now, max(users) as best, sum(users) as total
        from overlap group by product_id, group_now)
  group by product_id
),
sizes_now as (
  select product_id, count(*) as users_now, count(distinct group_id) as groups_now from now group by product_id
),
sizes_before as (
  select product_id, count(*) as users_before, count(distinct group_id) as groups_before
  from before group by product_id
)
select s.product_id, s.groups_now, coalesce(sb.groups_before, 0) as groups_before,
       s.users_now, coalesce(sb.users_before, 0) as users_before,
       coalesce(k.stayed, 0) as stayed,
       k.kept / k.stayed as kept_together
from sizes_now s
left join sizes_before sb on sb.product_id = s.product_id
left join kept k on k.product_id = s.product_id
order by s.product_id
