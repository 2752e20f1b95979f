"""Model FLOPs of the gpt config: what MFU and tokens/s are measured against. Pure: no torch.

The count is the usual one for transformer MFU (Kaplan et al. 2020; the PaLM paper's appendix B):
only matrix multiplications count, each multiply-add is 2 FLOPs, the backward pass costs twice the
forward, and attention counts every query-key pair as if no causal mask skipped half of them.
Per token, for L layers of width d, context T and vocabulary V:

    forward  = 2 * N + 4 * L * T * d      N = 12 * L * d^2 + V * d  (the matmul weights)
    training = 6 * N + 12 * L * T * d

N holds the blocks' projections (qkv 3d^2, output d^2, MLP 8d^2) and the output head (V x d, tied to
the token embedding, whose lookup is no matmul); biases, layer norms, softmax and GELU are left out.
"""

from __future__ import annotations

from orchestrator.config.schema import GptConfig


def matmul_params(model: GptConfig, vocab_size: int) -> int:
    """Weights that take part in a matrix multiplication per token (N above)."""
    return 12 * model.layers * model.width**2 + vocab_size * model.width


def training_flops_per_token(model: GptConfig, vocab_size: int, seq_len: int) -> int:
    """Model FLOPs of one training step (forward and backward) per token at sequence length `seq_len`."""
    return 6 * matmul_params(model, vocab_size) + 12 * model.layers * seq_len * model.width
