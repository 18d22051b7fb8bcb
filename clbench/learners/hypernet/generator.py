"""The hypernetwork: task embeddings -> all weights of a target network, in chunks (MLP or LSTM)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

GeneratorKind = Literal["mlp", "rnn"]
Parametrization = Literal["standard", "mip"]


def mip_encode(embeddings: torch.Tensor) -> torch.Tensor:
    """Magnitude-invariant input encoding (Ortiz et al. 2023): each of the d coordinates, bounded to (0, 1)
    by a sigmoid (our adaptation for free task embeddings), becomes [cos(pi g / 2), sin(pi g / 2)]; the
    K x 2d result has norm sqrt(d) whatever the embeddings."""
    angle = torch.sigmoid(embeddings) * (math.pi / 2)
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


def mip_init_(generator: ChunkedGenerator) -> None:
    """The MIP initialisation of the generator's linear layers, as the official code (`JJGO/hyperlight`,
    `FullyConnectedNet`) initialises a hypernetwork: weights normal with std gain / sqrt(fan_out) (Kaiming,
    fan-out mode), biases zero; the hidden layers with ReLU's gain sqrt(2), the output layer with gain 1.
    Hyperlight's output layer emits the whole weight vector at once, so its fan-out is the number of
    generated weights; our head emits it a chunk at a time (the same layer shared across chunks), so its
    fan-out is taken as `n_out`, the whole vector, not `chunk_size`. A generated entry then has variance
    |h|^2 / n_out for the last hidden state h, and the fan-out layers carry the input's norm: at init the
    residual h(E(e)) is of the primary network's scale, not above it. For the "mlp" generator only:
    hyperlight has no LSTM, and an LSTM's state is far smaller than its input, so the fan-out head would
    start the task-specific part ~14x below theta_0 (seed 0 of hnet rnn mip on split-digits-til then fell
    from 99.6 to 75.1 final accuracy); PyTorch's init already starts it at theta_0's scale."""
    relu = nn.init.calculate_gain("relu")
    for layer in generator.modules():
        if isinstance(layer, nn.Linear):
            head = layer is generator.head
            std = (1.0 if head else relu) / math.sqrt(generator.n_out if head else layer.out_features)
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)


class ChunkedGenerator(nn.Module):
    """Maps K input codes (K x `d_in`) to K flat vectors of `n_out` numbers, `chunk_size` at a time.

    Every chunk has a learned chunk embedding (`chunk_dim`, N(0, 1) at init); the input of chunk i is
    [code, chunk embedding i]. "mlp" (von Oswald et al. 2020): one fully connected net with ReLU hidden
    layers `hidden` maps each input to its chunk independently, all chunks and codes in one batch.
    "rnn" (dependency-preserving, after Chandra et al. 2023): stacked LSTMs (one per entry of `hidden`)
    read the chunks in the target's layer order, so later weights depend on earlier ones; a linear layer
    maps each step's state to its chunk. The chunks are concatenated and cut to `n_out`.
    """

    def __init__(self, kind: GeneratorKind, d_in: int, n_out: int, chunk_size: int, chunk_dim: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.kind, self.n_out = kind, n_out
        self.chunks = nn.Parameter(torch.randn(math.ceil(n_out / chunk_size), chunk_dim))
        widths = (d_in + chunk_dim, *hidden)
        if kind == "mlp":
            self.body = nn.Sequential(*(m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())))
        else:
            self.body = nn.ModuleList(nn.LSTM(a, b, batch_first=True) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(widths[-1], chunk_size)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        k, n = len(codes), len(self.chunks)
        h = torch.cat([codes[:, None, :].expand(k, n, -1), self.chunks.expand(k, -1, -1)], dim=2)
        if self.kind == "mlp":
            h = self.body(h)
        else:
            for lstm in self.body:
                h = lstm(h)[0]
        return self.head(h).flatten(1)[:, : self.n_out]


class Hypernetwork(nn.Module):
    """One learned embedding per task (`n_tasks` x `emb_dim`, N(0, 1) at init) and the generator of all
    target weights: `standard` weights = h(e_t) (PyTorch's default init); `mip` weights = theta_0 + h(E(e_t)),
    E = `mip_encode`, theta_0 a learned vector initialised as the target network would be (`initial`) and
    an "mlp" generator initialised by `mip_init_` (an "rnn" one keeps PyTorch's init).

    `theta()` lists the hypernetwork's own parameters (generator, theta_0): what the task embeddings are not.
    """

    def __init__(self, kind: GeneratorKind, parametrization: Parametrization, initial: torch.Tensor, n_tasks: int,
                 emb_dim: int, chunk_size: int, chunk_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.mip = parametrization == "mip"
        self.embeddings = nn.Parameter(torch.randn(n_tasks, emb_dim))
        d_in = 2 * emb_dim if self.mip else emb_dim
        self.generator = ChunkedGenerator(kind, d_in, len(initial), chunk_size, chunk_dim, hidden)
        if self.mip and kind == "mlp":
            mip_init_(self.generator)
        self.theta_0 = nn.Parameter(initial.clone()) if self.mip else None

    def theta(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "embeddings"]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """K task embeddings (K x emb_dim) -> K flat target weight vectors."""
        if not self.mip:
            return self.generator(embeddings)
        return self.theta_0 + self.generator(mip_encode(embeddings))
