"""Load a batch of raw log files into a raw table; broken rows go to gaip.rejects with their reason.

    python jobs/ingest.py --table raw.impressions --input landing/2026-11-07/ --format json \\
        --run-date 2026-11-07

Impressions are appended by key (a Delta MERGE): rows already in the table are never rewritten or removed,
and a row whose impression id is already loaded is rejected as duplicate:impression_id, so re-loading a
file adds nothing. Users, products and creatives are upserted by key: changed rows are updated, rows
absent from the file stay. Event dates outside [run date - horizon, run date + future days] are rejected
as out_of_range:event_date. Rows in = rows accepted + rows rejected is checked and printed.

A file that is empty, cannot be read as --format or lacks a column of the table stops the load in one
line (exit 2) before Spark starts; a single unparsable line is rejected as `unparsable`.
"""
from __future__ import annotations

import sys

from osmf_core.data.landing import IngestConfig, load_batch, prepare
from osmf_core.data.spark import spark_job


def main(argv=None) -> int:
    return spark_job("ingest", __doc__, IngestConfig, load_batch, argv, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
