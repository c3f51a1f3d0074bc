"""One helper for every progress bar of the command line (tqdm on stderr, with rate and ETA).

`progress(total, desc, enabled, unit=...)` returns a tqdm bar, or a disabled one (same methods, prints nothing) when
`enabled` is False (`--quiet`) or when stderr is not a terminal (tqdm's `disable=None`: logs and pipes stay clean).
`KERAS_IQA_PROGRESS=1` forces bars on even off a terminal (tests, CI logs); `KERAS_IQA_PROGRESS=0` turns them all off.

Library functions take `progress: bool = False`; the commands pass `not args.quiet`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from tqdm import tqdm

ENV = "KERAS_IQA_PROGRESS"


def _disable(enabled: bool) -> Optional[bool]:
    if not enabled:
        return True
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on", "always"):
        return False
    if forced in ("0", "false", "no", "off", "never"):
        return True
    return None  # tqdm: off when stderr is not a tty


def progress(total: Optional[int], desc: str, enabled: bool = True, unit: str = "it", **kwargs):
    """A tqdm bar on stderr (`desc: 3/10 image [00:04<00:09, 0.7image/s]`), or a silent one with the same methods."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", True)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=_disable(enabled), **kwargs)


def stages(names, desc: str, enabled: bool = True):
    """A bar over named steps: `for name in stages([...])` shows the step running as the bar's postfix."""
    bar = progress(len(names), desc, enabled, unit="step")
    try:
        for name in names:
            bar.set_postfix_str(str(name))
            yield name
            bar.update(1)
    finally:
        bar.close()
