"""What a long-running process does with its heap once it has started."""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect start-up's garbage, then leave what start-up made (modules, settings, the app,
    the connections) out of the collector's passes from now on.

    Without it, the first full pass under load walks all of it at once: 20-33 ms with the event
    loop stopped, measured in the ingress at 1,000 webhooks/s, where every request under way waits
    for it (docs/performance.md). Objects made later are collected as before.
    """
    gc.collect()
    gc.freeze()
