"""
A GPT language model in one file, following nanoGPT (Karpathy), which follows OpenAI's GPT-2 and HF's
transformers. The attention is picked by GPTConfig.attention: 'softmax' is causal self-attention through
torch's scaled_dot_product_attention; other attentions (linear_attention.py) slot in through ATTENTIONS.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from linear_attention import DeltaAttention, LinearAttention


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot turn the bias off)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x):
        B, T, C = x.size()  # batch, sequence length, embedding dim (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        # softmax(q kᵀ / sqrt(hs)) v over the causal mask, in a fused kernel where torch has one
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


# name -> attention module; 'linear' (DPFP + sum rule) and 'delta' (DPFP + delta rule) are the fast weight
# programmers of linear_attention.py, which also give GPT.generate a recurrent path
ATTENTIONS = {'softmax': CausalSelfAttention, 'linear': LinearAttention, 'delta': DeltaAttention}


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = ATTENTIONS[config.attention](config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster
    attention: str = 'softmax'  # one of ATTENTIONS
    feature_map: str = 'dpfp'  # linear and delta attention: 'dpfp' or 'elu' (elu+1) features of q and k
    dpfp_nu: int = 1  # DPFP's nu: the feature dimension is 2 nu d_head
    chunk_size: int = 64  # tokens per chunk of the chunked linear and delta rules (training)

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; known: {sorted(ATTENTIONS)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying (https://paperswithcode.com/method/weight-tying): one matrix embeds tokens and reads logits
        self.transformer.wte.weight = self.lm_head.weight

        # GPT-2 init: N(0, 0.02), and residual projections scaled by 1/sqrt(2 n_layer)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        """Number of parameters. Non-embedding count (default) leaves out the position embeddings; the token
        embeddings count since they are tied to lm_head's weights."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()
        if t > self.config.block_size:
            raise ValueError(f"sequence of length {t} is longer than block_size {self.config.block_size}")
        pos = torch.arange(0, t, dtype=torch.long, device=device)  # (t)

        tok_emb = self.transformer.wte(idx)  # (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)

        if targets is not None:
            logits = self.lm_head(x)
            # mean over the B·T tokens (DESIGN.md: L = (1/M) Σ_m ℓ_m)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        else:
            # inference: only the last position's logits are needed
            logits = self.lm_head(x[:, [-1], :])  # list index keeps the time dim
            loss = None
        return logits, loss

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=312e12):
        """Model flops utilisation as a fraction of peak_flops (default: A100 bf16 peak, 312 TFLOPS).
        Flops per token from the PaLM paper, Appendix B: 6N + 12 L H Q T."""
        N = self.get_num_params()
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * N + 12 * L * H * Q * T
        flops_per_iter = flops_per_token * T * fwdbwd_per_iter
        return (flops_per_iter / dt) / peak_flops

    def forward_recurrent(self, idx, states=None, pos0=0):
        """Recurrent forward for 'linear' and 'delta' attention: idx (b, t) continues a sequence whose first pos0
        tokens are summarised in states (one fast-weight state per layer; None at the start). Returns the last
        position's logits (b, 1, vocab) and the new states. A token costs the same whatever pos0 is."""
        if self.config.attention == 'softmax':
            raise ValueError("forward_recurrent needs a recurrent attention ('linear' or 'delta'), not 'softmax'")
        t = idx.size(1)
        if pos0 + t > self.config.block_size:
            raise ValueError(f"positions up to {pos0 + t} exceed block_size {self.config.block_size} (wpe)")
        pos = torch.arange(pos0, pos0 + t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        states = states if states is not None else [None] * len(self.transformer.h)
        new_states = []
        for block, state in zip(self.transformer.h, states):  # Block.forward, carrying the state
            y, state = block.attn.forward_step(block.ln_1(x), state)
            x = x + y
            x = x + block.mlp(block.ln_2(x))
            new_states.append(state)
        x = self.transformer.ln_f(x)
        return self.lm_head(x[:, [-1], :]), new_states

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Continue the sequences idx (b, t) by max_new_tokens tokens, sampling from softmax(logits/temperature)
        restricted to the top_k most likely tokens when top_k is given. Call in eval mode.
        'linear' and 'delta' attention run recurrently, feeding each new token to the carried fast-weight
        states. wpe knows only block_size positions, so past block_size tokens they condition, like softmax,
        on the last block_size tokens: the states are then rebuilt from those each step (chunked form)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        recurrent = self.config.attention != 'softmax'
        states, seen = None, 0  # recurrent: states summarise idx[:, :seen]
        for _ in range(max_new_tokens):
            if recurrent:
                if idx.size(1) > self.config.block_size:
                    # past wpe's positions: the last block_size tokens, from a fresh state
                    logits, states = self.forward_recurrent(idx[:, -self.config.block_size:])
                else:
                    logits, states = self.forward_recurrent(idx[:, seen:], states, pos0=seen)
                seen = idx.size(1)
            else:
                # crop the context to block_size if it grew too long
                idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
                logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('Inf')
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
