"""Measure the simulated world's style lever from its truth alone, on the development seed (make calibrate-world).

    python jobs/calibrate_world.py                        # the v2 preset and a ladder of style scales
    python jobs/calibrate_world.py --style-scale 0.35 --taste-noise 0.2

Prints, per style scale, how far the best logged creative of each true segment is above the product's
average logged creative, and the oracle's CTR over that average, against the targets the v2 preset is
calibrated to; writes reports/calibrate_world.json. The logic: osmf_core.evaluation.calibrate.
"""
from __future__ import annotations

import sys

from osmf_core.data.config import ConfigError, config_error
from osmf_core.data.flags import add_config_args, config_from_args, job_parser
from osmf_core.evaluation.calibrate import CalibrateConfig, calibrate


def main(argv=None) -> int:
    ap = job_parser(__doc__)
    add_config_args(ap, CalibrateConfig)
    try:
        calibrate(config_from_args(CalibrateConfig, ap.parse_args(argv)))
    except (ConfigError, ValueError) as e:
        return config_error("calibrate_world", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
