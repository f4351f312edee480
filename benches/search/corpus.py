#!/usr/bin/env python3
"""Writes a deterministic chat corpus for the search measurements (docs/PERFORMANCE.md).

    python3 benches/search/corpus.py 1000000 > /tmp/corpus.tsv

Each line: `room<TAB>at_ms<TAB>text`. 64 rooms; 50,000 made-up words drawn by a Zipf law
(s = 1.07, about what chat and e-mail corpora show), 1-40 words a message, mean about 11
(short, like chat). The same seed gives the same file on every machine, so edgechat's own
index and the tantivy comparison (benches/search/compare) index the same text.
`--queries` prints the query set instead (one query a line).
"""

import bisect
import itertools
import random
import sys

ROOMS = 64
VOCAB = 50_000
SEED = 19


def vocabulary(rng):
    syll = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["ch", "sh", "th", "st"]
    seen, words = set(), []
    while len(words) < VOCAB:
        w = "".join(rng.choice(syll) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 1_000_000
    rng = random.Random(SEED)
    words = vocabulary(rng)
    if "--queries" in sys.argv:
        # Ranks chosen to span the frequency range: very common, common, mid, rare, and
        # conjunctions whose words are common but rarely together.
        for q in [[5], [50], [500], [5000], [40000], [20, 200], [50, 500], [100, 1000, 3000],
                  [3, 7], [2, 49999]]:
            print(" ".join(words[r] for r in q))
        return
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.07 for r in range(VOCAB)))
    total = cum[-1]
    out = sys.stdout
    at = 1_700_000_000_000
    for _ in range(n):
        k = min(40, 1 + int(rng.expovariate(1 / 10)))
        text = " ".join(words[bisect.bisect(cum, rng.random() * total)] for _ in range(k))
        at += rng.randint(0, 400)
        out.write(f"{rng.randrange(ROOMS)}\t{at}\t{text}\n")


if __name__ == "__main__":
    main()
