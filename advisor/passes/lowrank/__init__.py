"""Helpers of the `factorize` pass: decompositions, rank selection and rank allocation.

- `decompose`: Tucker-2 (HOSVD) of kxk convolutions, truncated SVD of 1x1 convolutions and
  Linear layers, and the small modules that replace them.
- `vbmf`: empirical variational Bayesian matrix factorization (the automatic rank choice).
- `allocate`: ranks by retained energy, and a global FLOPs/latency budget spread over the layers.

The pass itself (config, registry entry, latency checks on the target) is
`advisor.passes.factorize`.
"""
