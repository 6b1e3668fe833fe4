"""Models tried for English that did not make the pack (decision 0027, "What else was tried"),
kept so that their figures can be printed again rather than taken on trust. Each learns from
the rows ``build.py`` learns from and prints ranked recall@3 on chitchat's validation
conversations (covered pairs, in floating point, before any rounding): from the model alone, and
with the pack's lean towards the intents the person answered with before (lambda nats times
log(2c + 1) for c uses, as ``Pack._lean`` adds it). Validation only: nothing here looks at the
held-out conversations.

    .venv/bin/python -m bench.suggest_pack.tried --variant pack
    .venv/bin/python -m bench.suggest_pack.tried --variant learnt-style
    .venv/bin/python -m bench.suggest_pack.tried --variant question
    .venv/bin/pip install torch==2.13.0  # only for the next one; not a dependency
    .venv/bin/python -m bench.suggest_pack.tried --variant hidden --width 256 --example-weight 1

- ``pack``: the pack's own inputs, the sender's run and the message it answers (pack 1.7.0);
- ``learnt-style``: the lean learnt instead of fixed: one input per intent the person answered
  with among their last ten messages, worth log(2c + 1), weighed by the model like any word;
- ``question``: the run's words and word pairs a second time, under their own prefix, when the
  message answered asked something (so that "not yet" after "did you eat?" can learn a weight of
  its own);
- ``hidden``: ``learnt-style``'s inputs through a hidden layer of ``--width`` rectified units
  beside the linear part, by Adam, printed after each epoch (``--width 0``: the linear part
  alone, learnt the same way, for comparison).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from bench.suggest_pack.build import (
    BUCKETS,
    EXAMPLE_WEIGHT,
    L2,
    MAX_TOKENS,
    STYLE_WINDOW,
    Rows,
    answered_with,
    leaned,
    matrix,
    normalised,
    train,
    training_rows,
)
from bench.suggest_pack.corpus import FOLD, Matcher, chitchat_pairs, load_intents
from scipy import sparse

from secureconnect.suggest.engine import fnv1a, normalise, word_features

QUESTION = "q "
LAMBDAS = (0.0, 0.25, 0.5, 0.75)


def design(rows: Rows, variant: str, matcher: Matcher, index: dict[str, int]) -> sparse.csr_matrix:
    x = matrix(rows.texts, rows.answered)
    if variant == "question":
        indptr, indices = [0], []
        for n, (text, answered) in enumerate(zip(rows.texts, rows.answered, strict=True)):
            extra: set[int] = set()
            if answered and "?" in normalise(answered, FOLD):
                tokens = normalise(text, FOLD)[-MAX_TOKENS:]
                extra = {fnv1a(f) & (BUCKETS - 1) for f in word_features(tokens, QUESTION)}
            indices += sorted(set(x.indices[x.indptr[n] : x.indptr[n + 1]]) | extra)
            indptr.append(len(indices))
        data = np.ones(len(indices))
        x = sparse.csr_matrix((data, indices, indptr), shape=x.shape)
    x = normalised(x)
    if variant in ("learnt-style", "hidden"):
        r, c, v = [], [], []
        for n, own in enumerate(rows.own):
            for intent, count in answered_with(own, matcher).items():
                r.append(n)
                c.append(index[intent] - 1)
                v.append(math.log(2 * count + 1))
        style = sparse.csr_matrix((v, (r, c)), shape=(x.shape[0], len(index)))
        x = sparse.hstack([x, style]).tocsr()
    return x


def validation_rows(matcher: Matcher, index: dict[str, int]) -> Rows:
    rows = Rows()
    for pair in chitchat_pairs("validation"):
        label = matcher(pair.reply, "en")
        rows.add(pair.context, pair.answered, index[label] if label else 0, 1.0, pair.own)
    return rows


def report(
    name: str, scores: np.ndarray, rows: Rows, matcher: Matcher, index: dict[str, int]
) -> None:
    """Ranked recall@3 on covered pairs, with the lean at each of ``LAMBDAS``."""
    labels = np.array(rows.labels)
    covered = np.flatnonzero(labels > 0)
    figures = []
    for lam in LAMBDAS:
        bonus = [lam * math.log(2 * c + 1) for c in range(STYLE_WINDOW + 1)]
        shifted = leaned(scores, rows.own, matcher, index, bonus)
        top3 = np.argsort(-shifted[:, 1:], axis=1, kind="stable")[:, :3] + 1
        recall = float(np.mean([labels[n] in top3[n] for n in covered]))
        figures.append(f"{lam}: {recall:.4f}")
    print(f"{name}: validation ranked recall@3 by lean " + ", ".join(figures), flush=True)


def hidden(
    x: sparse.csr_matrix,
    y: list[int],
    w: list[float],
    xv: sparse.csr_matrix,
    val: Rows,
    args: argparse.Namespace,
    matcher: Matcher,
    index: dict[str, int],
) -> None:
    import torch  # not a dependency: see the docstring

    torch.manual_seed(0)
    k, d = len(index) + 1, x.shape[1]

    def bags(m: sparse.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.tensor(m.indices, dtype=torch.long),
            torch.tensor(m.indptr[:-1], dtype=torch.long),
            torch.tensor(m.data, dtype=torch.float32),
        )

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.EmbeddingBag(d, k, mode="sum")
            if args.width:
                self.hidden = torch.nn.EmbeddingBag(d, args.width, mode="sum")
                self.bias = torch.nn.Parameter(torch.zeros(args.width))
                self.out = torch.nn.Linear(args.width, k)
                self.drop = torch.nn.Dropout(0.3)

        def forward(self, i: torch.Tensor, off: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            z = self.linear(i, off, per_sample_weights=v)
            if args.width:
                h = torch.relu(self.hidden(i, off, per_sample_weights=v) + self.bias)
                z = z + self.out(self.drop(h))
            return z

    model = Model()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    labels, weights = torch.tensor(y), torch.tensor(w, dtype=torch.float32)
    for epoch in range(args.epochs):
        order = np.random.default_rng(epoch).permutation(x.shape[0])
        for start in range(0, len(order), 256):
            batch = order[start : start + 256]
            per_row = torch.nn.functional.cross_entropy(
                model(*bags(x[batch])), labels[batch], reduction="none"
            )
            loss = (per_row * weights[batch]).sum() / weights[batch].sum()
            penalty = sum(p.pow(2).sum() for p in model.parameters() if p.dim() == 2)
            optimiser.zero_grad()
            (loss + 1e-6 * penalty).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            scores = model(*bags(xv)).numpy()
        model.train()
        report(f"width {args.width}, epoch {epoch + 1}", scores, val, matcher, index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant", choices=("pack", "learnt-style", "question", "hidden"), required=True
    )
    parser.add_argument("--example-weight", type=float, help="as build.py's")
    parser.add_argument("--width", type=int, default=256, help="hidden units (hidden only)")
    parser.add_argument("--epochs", type=int, default=14, help="epochs (hidden only)")
    args = parser.parse_args()
    source = load_intents()
    intents: list[dict[str, object]] = source["intents"]  # type: ignore[assignment]
    index = {str(i["id"]): n + 1 for n, i in enumerate(intents)}
    matcher = Matcher(intents)
    example_weight = {lang: args.example_weight or w for lang, w in EXAMPLE_WEIGHT.items()}
    # Without 1.8.0's exchanges: these are the models tried on 1.7.0's rows (decision 0027).
    rows = training_rows(source, matcher, index, example_weight, exchange_weight=0.0)
    val = validation_rows(matcher, index)
    x = design(rows, args.variant, matcher, index)
    xv = design(val, args.variant, matcher, index)
    if args.variant == "hidden":
        hidden(x, rows.labels, rows.weights, xv, val, args, matcher, index)
        return
    theta = train(x, np.array(rows.labels), np.array(rows.weights), len(index) + 1, L2)
    report(args.variant, np.asarray(xv @ theta[:-1]) + theta[-1], val, matcher, index)


if __name__ == "__main__":
    main()
