"""Generate rnnfast/data/corpus.txt: the demo's bundled training text.

The text is made here, from a small hand-written probabilistic grammar (a harbour town, its people
and their days), so the package ships no third-party prose. Deterministic for a given seed:

    python tools/make_corpus.py            # rewrites rnnfast/data/corpus.txt
"""
import os
import random

NAMES = ["Mara", "Tobin", "Ilse", "Corin", "Anouk", "Pell", "Wren", "Dario", "Sefa", "Olek"]
ROLES = ["the baker", "the ferryman", "the old clockmaker", "the harbour master", "a young sailor",
         "the schoolteacher", "the net mender", "the lamplighter", "a travelling tinker",
         "the fishmonger"]
PLACES = ["the harbour", "the market square", "the lighthouse", "the narrow bridge",
          "the bakery on Salt Street", "the chapel on the hill", "the tide pools", "the boatyard",
          "the inn by the quay", "the library"]
TIMES = ["At dawn", "In the evening", "Before the storm", "After the rain", "On market day",
         "Late that night", "Early in the morning", "When the tide turned", "In the long winter",
         "At noon"]
VERBS_T = ["carried", "mended", "painted", "found", "sold", "counted", "polished", "lost",
           "wrapped", "weighed"]
OBJECTS = ["a basket of apples", "the blue lantern", "an old map", "three silver fish",
           "a coil of rope", "the broken oar", "a loaf of rye bread", "a bundle of letters",
           "the brass compass", "a jar of honey"]
ADJ = ["quiet", "windy", "bright", "grey", "cold", "busy", "warm", "foggy", "still", "golden"]
FEEL = ["smiled", "laughed", "sighed", "hummed a tune", "said nothing", "waved", "nodded",
        "frowned", "listened", "looked at the sea"]
SAYINGS = ["The sea gives and the sea takes.", "A knot tied in haste comes loose at sea.",
           "Bread rises for those who wait.", "Every lamp was lit by a patient hand.",
           "Fair wind, full nets.", "Count the waves and you will count the days."]


def person(rng):
    return rng.choice(NAMES) if rng.random() < 0.6 else rng.choice(ROLES)


def cap(s):
    return s[0].upper() + s[1:]


def sentence(rng):
    k = rng.random()
    if k < 0.3:
        return f"{rng.choice(TIMES)}, {person(rng)} {rng.choice(VERBS_T)} {rng.choice(OBJECTS)} at {rng.choice(PLACES)}."
    if k < 0.5:
        return f"The day was {rng.choice(ADJ)} and {person(rng)} walked to {rng.choice(PLACES)}."
    if k < 0.65:
        a, b = person(rng), person(rng)
        return f"{cap(a)} met {b} near {rng.choice(PLACES)}, and {b} {rng.choice(FEEL)}."
    if k < 0.8:
        return f"\"{rng.choice(SAYINGS)}\" said {person(rng)}."
    if k < 0.9:
        n = rng.randint(2, 12)
        return f"{cap(person(rng))} {rng.choice(VERBS_T)} {n} times before {rng.choice(TIMES).lower()}."
    return f"{cap(person(rng))} {rng.choice(FEEL)}, for the wind over {rng.choice(PLACES)} was {rng.choice(ADJ)}."


def corpus(seed=7, paragraphs=900):
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        out.append(" ".join(sentence(rng) for _ in range(rng.randint(3, 6))))
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(__file__), "..", "rnnfast", "data", "corpus.txt")
    text = corpus()
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {len(text)} characters to {os.path.normpath(path)}")
