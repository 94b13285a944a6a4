"""Measurement on a target: latency (isolated subprocess per model and runtime), memory, FLOPs,
per-layer hot spots, accuracy/agreement, and the combined `Profile`; and the one in-process
timer (`timer`: micro-benchmarks and interleaved pairs) the passes use while they decide.

Nothing here changes a model, and nothing here imports `advisor.passes`. Submodules are imported
on demand (`from advisor.measure.latency import measure_latency`): the latency worker imports this
package and must stay free of torch unless it measures torch.
"""
