"""How evenly the instance-aware router spreads requests without reuse (issue 9).

    python bench/router_balance.py [--write docs/results.md]

For 2 and 4 prefill instances (8 and 16 testbed servers) and loads from idle to overload,
the largest deviation of any instance's share from an even split
(:func:`mfsched.experiments.balance.instance_balance`), for equal-sized requests and for
lognormal sizes. Writes the ``router-balance`` section.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import save

from mfsched.experiments.balance import instance_balance

RATES = (0.05, 0.5, 1.5, 3.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    lines = ["`python bench/router_balance.py --write docs/results.md` (400 requests without "
             "reuse, Poisson arrivals, fair sharing; deviation = max over instances of "
             "\\|share x instances - 1\\|)", "",
             "| instances | req/s/GPU | equal 800-token requests: requests | lognormal sizes: "
             "requests | lognormal sizes: new tokens |", "|---:|---:|---:|---:|---:|"]
    data = []
    for servers in (8, 16):
        for rate in RATES:
            eq = instance_balance(servers, rate, equal_sizes=True)
            ln = instance_balance(servers, rate, equal_sizes=False)
            data.append({"servers": servers, "rate": rate, "equal": eq.request_deviation,
                         "lognormal_requests": ln.request_deviation,
                         "lognormal_tokens": ln.token_deviation})
            lines.append(f"| {eq.instances} | {rate:g} | {eq.request_deviation:.1%} | "
                         f"{ln.request_deviation:.1%} | {ln.token_deviation:.1%} |")
    save("router_balance", data, "\n".join(lines), args.write, "router-balance")


if __name__ == "__main__":
    main()
