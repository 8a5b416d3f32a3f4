"""Hot-path benchmark: per-event CPU of the worker's pure steps, each beside a floor measured in the same run.

* Decoding: ``UsageCodec.decode`` (the specialised decoder *and* ``validate_event``) of batches of 50 events,
  beside fastavro's bare read of the same bytes into dicts (no events built, nothing validated) and fastavro's
  read followed by building and validating the events (the plain-library way to do what decode does).
* Pricing: ``PriceCatalog.price_tokens`` of one event with the shipped catalog, beside building the
  ``TokenUsage`` of the same counts (the least any pricing call does per event).

No dev stack needed: ``python -m bench.bench_hotpaths``. Times are thread CPU time, the best of interleaved
rounds, so neither time spent descheduled nor a neighbour's burst on a shared machine inflates them.
"""

from __future__ import annotations

import argparse
import gc
import io
import time
from collections.abc import Callable

import fastavro

from bench.common import write_section
from costplane.pricing.catalog import load_catalog
from costplane.pricing.cost import TokenUsage
from costplane.publisher.codec import UsageCodec, _schemas, _to_event
from costplane.publisher.validation import validate_event
from costplane.synthetic import generate


def best_per_item(steps: dict[str, Callable[[], object]], items: int, rounds: int) -> dict[str, float]:
    """CPU seconds per item of each step: the best of ``rounds``, the steps taken in turn within each round."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            gc.collect()
            t0 = time.thread_time()
            step()
            best[name] = min(best[name], (time.thread_time() - t0) / items)
    return best


def decode_costs(events: int, rounds: int) -> dict[str, float]:
    codec = UsageCodec.schemaless()
    batch = [e for e in generate(events, seed=8) if e.tenant == "acme"]
    messages = [codec.encode_batch("acme", batch[i : i + 50]) for i in range(0, len(batch), 50)]
    schema = _schemas().batch_fast
    if sum(len(codec.decode(v, h).events) for v, h in messages) != len(batch):
        raise RuntimeError("the benchmark's own events did not decode")

    def fastavro_read() -> None:
        for value, _ in messages:
            fastavro.schemaless_reader(io.BytesIO(value), schema, None)

    def fastavro_events() -> None:
        for value, _ in messages:
            record = fastavro.schemaless_reader(io.BytesIO(value), schema, None)
            for item in record["events"]:  # type: ignore[call-overload, index]
                validate_event(_to_event(item))

    def decode() -> None:
        for value, headers in messages:
            codec.decode(value, headers)

    steps = {"floor": fastavro_read, "fastavro_events": fastavro_events, "decode": decode}
    return best_per_item(steps, len(batch), rounds)


def pricing_costs(events: int, rounds: int) -> dict[str, float]:
    catalog = load_catalog()
    catalog.price_tokens("openai", "gpt-4o", 1000, 200, 0, 300, 0)

    def price() -> None:
        for i in range(events):
            catalog.price_tokens("openai", "gpt-4o", 1000 + i, 200, 0, 300, 0)

    def usage() -> None:
        for i in range(events):
            TokenUsage(1000 + i, 200, 0, 300, 0)

    return best_per_item({"floor": usage, "price": price}, events, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--no-write", action="store_true", help="Print only; do not update docs/benchmarks.md.")
    args = parser.parse_args()
    dec = decode_costs(args.events, args.rounds)
    pri = pricing_costs(args.events, args.rounds)
    us = 1e6
    ratio = dec["decode"] / dec["floor"]
    body = f"""
Command: `python -m bench.bench_hotpaths` (no dev stack; {args.events} events, thread CPU time per event, best of
{args.rounds} interleaved rounds).

| figure | ours | floor (same run) | ratio | target |
|---|---|---|---|---|
| decode + validate, batches of 50 | {dec["decode"] * us:.2f} µs/event | {dec["floor"] * us:.2f} µs/event \
(fastavro's bare read into dicts) | {ratio:.2f}× | < 1.15× |
| … the plain-library way | {dec["fastavro_events"] * us:.2f} µs/event (fastavro read, build and validate \
the events) | {dec["floor"] * us:.2f} µs/event | {dec["fastavro_events"] / dec["floor"]:.2f}× | — |
| pricing one event (`price_tokens`, shipped catalog) | {pri["price"] * us:.2f} µs/event | \
{pri["floor"] * us:.2f} µs/event (building its TokenUsage) | {pri["price"] / pri["floor"]:.2f}× | < 50 µs |

The decode target is {"**met**" if ratio < 1.15 else "**not met**"} in this run; pricing is
{"**within**" if pri["price"] * us < 50 else "**above**"} its 50 µs guard against accidental slow paths (a Decimal
or a dict built per event).
"""
    print(body)
    if not args.no_write:
        write_section("Hot paths", body)


if __name__ == "__main__":
    main()
