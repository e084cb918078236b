"""Mixed precision: fp32 graphs in, fp16 or bf16 graphs with measured fp32 islands out.

Modules, in the order a conversion uses them: :mod:`.policy` (targets, the policy, per-node
decisions), :mod:`.calibrate` (representative inputs, measured ranges), :mod:`.rules` (which
node computes in which type), :mod:`.graph` (Casts, the static type check, the CPU emulation
twin), :mod:`.convert` (one graph end to end), :mod:`.gate` (parity against PyTorch fp32) and
:mod:`.bundle` (convert and validate a whole bundle).
"""
