"""Helpers of the `factorize` pass: decompositions, rank selection and rank allocation.

- `decompose`: Tucker-2 (HOSVD) of kxk convolutions, truncated SVD of 1x1 convolutions and
  Linear layers, and the small modules that replace them.
- `vbmf`: empirical variational Bayesian matrix factorization (the automatic rank choice).
- `allocate`: ranks by retained energy, and a global FLOPs/latency budget spread over the layers.
- `layers`: the model's Conv2d/Linear layers at the input shape, and which may be factorized.
- `ranks`: the pass's rank choice per layer (energy, VBMF, replay) or global (FLOPs/latency).
- `timing`: replace a layer only where it pays; micro-benchmarks of layers on the target.

The pass itself (config, registry entry, fine-tune) is `advisor.passes.factorize`.
"""
