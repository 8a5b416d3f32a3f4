"""The stream role as a pipeline of small steps: decode → dedup → price → windows → commit → effects.

Each step is one module with one job and a typed interface; :mod:`.stream` composes them in one short function.
Nothing here knows Faust or aiokafka except :mod:`.faust_adapter`, the one place that touches their internals.
"""
