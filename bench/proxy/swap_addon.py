"""mitmproxy addon for bench/proxy/run.sh: the peer's equivalent of Sequester's token swap.

Replaces `Authorization: Bearer <SWAP_TOKEN>` with `Authorization: Bearer <SWAP_REAL>` on every
request that carries exactly that header. Nothing else: no host binding, no audit, no response
scrubbing. The values come from the environment so they never appear on a command line.
"""

import os

from mitmproxy import http

TOKEN = "Bearer " + os.environ["SWAP_TOKEN"]
REAL = "Bearer " + os.environ["SWAP_REAL"]


class Swap:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.headers.get("authorization") == TOKEN:
            flow.request.headers["authorization"] = REAL


addons = [Swap()]
