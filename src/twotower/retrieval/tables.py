"""The "Catalog retrieval" table of a run (from each experiment's retrieval.json), apart from the sheet's
played re-ranking table: the two answer different questions and are never mixed."""

from __future__ import annotations

from collections.abc import Mapping

COLUMNS = ("recall@10", "recall@50", "recall@100", "recall@500", "hit@100", "ndcg@100")
BEYOND = ("coverage@100", "gini@100", "popularity@100", "diversity@100")


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def retrieval_table(payloads: Mapping[object, dict]) -> str:
    """Markdown: one row per (experiment, scorer) with recall/hit/ndcg, tail recall (with its users),
    coverage, Gini, popularity percentile and diversity of the top 100, and the user counts."""
    if not payloads:
        return ""
    first = next(iter(payloads.values()))
    tails = sorted(
        {k[len("tail_recall@100[") : -1] for k in first["scorers"]["model"]["all"] if k.startswith("tail_recall@100[")},
        key=lambda label: -int(label.split("<")[1]),
    )
    header = ["Experiment No", *COLUMNS, *(f"tail_recall@100 [{t}] (users)" for t in tails), *BEYOND, "users", "cold users"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for experiment, payload in payloads.items():
        for scorer, parts in payload["scorers"].items():
            m, cold = parts["all"], parts["cold"]
            cells = [f"{experiment} ({scorer})", *(_fmt(m.get(c)) for c in COLUMNS)]
            cells += [f"{_fmt(m.get(f'tail_recall@100[{t}]'))} ({m.get(f'n_users_tail[{t}]', 0):,})" for t in tails]
            cells += [_fmt(m.get(c), 1 if c == "popularity@100" else 3) for c in BEYOND]
            cells += [f"{m['n_users']:,}", f"{cold['n_users']:,}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def warm_cold_table(payloads: Mapping[object, dict]) -> str:
    """Markdown: recall@100 of every scorer on warm and on cold users, with the user counts."""
    if not payloads:
        return ""
    scorers = list(next(iter(payloads.values()))["scorers"])
    header = ["Experiment No", "users", *scorers]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for experiment, payload in payloads.items():
        for part in ("warm", "cold"):
            n = payload["scorers"]["model"][part]["n_users"]
            cells = [f"{experiment} ({part})", f"{n:,}"]
            cells += [_fmt(payload["scorers"][s][part].get("recall@100")) for s in scorers]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
