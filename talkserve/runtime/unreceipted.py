"""A reply whose reader sends no read receipts: paced to its player, and bounded in bytes.

Triton 2.51 tells a python model nothing about whether its gRPC client reads: what `lipsync` sends
to a reader that stopped waits in the frontend (measured: a whole reply of raw frames, +154 MB per
stalled plain reader on pruned30-int8, with 325 MB kept after they left). Receipts
(talkserve.runtime.receipts) bound that precisely; a plain tritonclient, Go or Java client has
none, so two bounds that need nothing from it:

- **Pacing.** A part is computed only while its player has at most `lead_s` of it buffered (the
  stream's playback clock, talkserve.playback.Playback): a reply is never computed far ahead of
  real time, a reader that reads in real time never waits for it, and a reply nobody reads costs
  real time, not a burst of every core.
- **A byte budget.** Pacing still lets a stalled reader's queue grow at the video's own rate (raw
  512² RGB: 19.7 MB/s). So a reply without receipts may be sent `budget_bytes` of video in all;
  past that the reply stops at every stage and ends there (the stream's final response), logged
  and counted with the two ways past it: receipts, or `video_codec: h264` (67 kB/s: a 30 s reply is
  ~2 MB, far inside it). Not with an error response: on Triton 2.51 an error from `lipsync` in the
  middle of a reply leaves the ensemble's request in flight for good (measured: the server's exit
  timed out with one `talking_head` inference per stopped reply still counted).

Both are per stream and kept in the server's scratch (as the clock is), so a reply's sentences
drawn by different `lipsync` instances share them. A stopped reply frees its admission slot at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def stopped_flow(stream: str) -> str:
    """The receipts flow name (talkserve.runtime.receipts.Receipts.leave/left) that marks `stream` as
    stopped at its budget: it outlives the stream's admission lease, which is released at once."""
    return f"unreceipted:{stream}"


def paced(buffered: Callable[[], float], lead_s: float, live: Callable[[], bool],
          sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.02) -> bool:
    """Wait until the player has at most `lead_s` buffered; False if the reply stopped meanwhile."""
    while buffered() > lead_s:
        if not live():
            return False
        sleep(min(poll_s, max(buffered() - lead_s, 0.001)))
    return live()


class OverBudget(Exception):
    """The part would take the reply past its budget: the reply stops here."""


def charge(sent_bytes: int, part_bytes: int, budget_bytes: float, where: str) -> int:
    """The stream's video bytes after sending this part; OverBudget (naming the limit and the two
    ways past it) when it would pass the budget. A budget of 0 is no bound."""
    total = sent_bytes + part_bytes
    if budget_bytes and total > budget_bytes:
        raise OverBudget(f"a reply without read receipts may be sent {budget_bytes / 1e6:.0f} MB of video "
                         f"(serving.unreceipted_mb); this one reached it at {where} and stops there: send "
                         "`receipts` (TalkClient does) or ask for `video_codec: h264`")
    return total
