"""The facts benchmark: made-up facts in a haystack, each asked in a paraphrase, plus general-knowledge controls.

A document of ``length`` tokens is a haystack (as for NIAH, :func:`liftlm.eval.niah.insert_needles`) with
``n_facts`` made-up facts inserted at their own depths. Each fact comes from a template (who built X, where Y
is kept, how many Z, in which year, what colour, who married whom, what something is called, how long …) filled
with made-up names, places and numbers drawn from ``random.Random(seed)``, so the same arguments give the same
document. Its question is a paraphrase that shares few content words with the fact sentence (the share is
measured by :func:`word_overlap` and stored with the example); a correct answer contains one of the fact's
accepted variants (:func:`facts_score`: a name or its surname, a number as digits or words).

The general-knowledge controls (:data:`CONTROLS`) are asked about the same document: an adapted model should
still know the capital of France.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .datasets import Example
from .niah import insert_needles

# ---------------------------------------------------------------- words and numbers

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """``n`` (0 ≤ n < 1,000,000) in English words, e.g. 412 → 'four hundred and twelve', 42 → 'forty-two'."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words covers 0 to 999999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    tail = "" if rest == 0 else (" and " if rest < 100 else " ") + number_words(rest)
    return number_words(n // 1000) + " thousand" + tail


def number_variants(n: int) -> list[str]:
    """The ways a correct answer may write ``n``: digits, and words with and without 'and'."""
    words = number_words(n)
    out = [str(n), words]
    if " and " in words:
        out.append(words.replace(" and ", " "))
    return out


_TOKEN = re.compile(r"[a-z0-9]+")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")


def _normalize(text: str) -> str:
    """Lowercase, '1,200' → '1200', hyphens and apostrophes to spaces, squeezed."""
    text = _DIGIT_COMMA.sub("", text.lower())
    return " ".join(_TOKEN.findall(text))


def facts_score(prediction: str, answers: str | Sequence[str], **_: object) -> float:
    """1.0 when the prediction contains any of the accepted answers as whole words (case-insensitive; digits
    with thousands commas and hyphenated number words match their plain forms), else 0.0."""
    variants = [answers] if isinstance(answers, str) else list(answers)
    if not variants or not all(isinstance(v, str) and v.strip() for v in variants):
        raise ValueError("the 'facts' metric needs at least one non-empty accepted answer")
    text = " " + _normalize(prediction) + " "
    return float(any(" " + _normalize(v) + " " in text for v in variants))


# ---------------------------------------------------------------- how much wording a question shares

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where
    which while who whom whose why will with would you your s""".split()
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """The stems of the words of ``text`` that are not stopwords (lowercased, crude suffix stripping)."""
    return {_stem(w) for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS}


def word_overlap(question: str, fact: str) -> float:
    """The share of the question's content words (stems) that also occur in the fact sentence."""
    q = content_words(question)
    return len(q & content_words(fact)) / len(q) if q else 0.0


# ---------------------------------------------------------------- the templates


@dataclass(frozen=True)
class FactTemplate:
    """A kind of fact: the sentence, its paraphrased question and the slot that answers it.

    Slots: ``{place}``, ``{person}`` (full name; ``{last}`` its surname), ``{person2}``/``{last2}``, ``{year}``,
    ``{count}`` (3–60), ``{big}`` (120–980), ``{age}`` (61–99), ``{ship}``, ``{pet}``, ``{word}`` and word
    lists (``{colour}``, ``{material}``, ``{object}`` with its paraphrase ``{object_alt}``, ``{instrument}``,
    ``{ingredient}``, ``{flower}``, ``{month}``, ``{hiding}``, ``{food}``, ``{animal}``)."""

    kind: str
    fact: str
    question: str
    answer: str


TEMPLATES: tuple[FactTemplate, ...] = (
    FactTemplate("built_by", "The lighthouse on {place} was built by {person} in {year}.",
                 "Who constructed the coastal beacon tower at {place}?", "person"),
    FactTemplate("founded_year", "{person} founded the {place} Rowing Club in {year}.",
                 "When did the boating society of {place} come into being?", "year"),
    FactTemplate("kept_in", "The silver {object} that once belonged to {person} is kept in the museum of {place}.",
                 "In which town can visitors see the {object_alt} formerly owned by {last}?", "place"),
    FactTemplate("bell_count", "The chapel at {place} has {count} bells in its tower.",
                 "How many chimes hang in the belfry of the church at {place}?", "count"),
    FactTemplate("bridge_year", "The stone bridge at {place} was opened in {year}.",
                 "Since what year has the river at {place} had its masonry crossing?", "year"),
    FactTemplate("ferry_colour", "The {place} ferry was painted {colour} by {person} in {year}.",
                 "What colour did the boat that crosses at {place} get?", "colour"),
    FactTemplate("roof_material", "The roof of the {place} market hall is made of {material}.",
                 "What substance covers the top of the building where traders sell goods in {place}?", "material"),
    FactTemplate("married", "{person} married {person2} in the spring of {year}.",
                 "Who stood at the altar with {last2} as bride or groom?", "person"),
    FactTemplate("pet_name", "The {animal} that lives at the {place} inn is called {pet}.",
                 "What name was given to the creature residing at the tavern of {place}?", "pet"),
    FactTemplate("road_length", "The only road out of {place} runs {big} kilometres to the coast.",
                 "How long a drive separates {place} from the shore?", "big"),
    FactTemplate("rope_walk", "The rope walk at {place} was {big} yards long.",
                 "How far did the shed where cords were twisted in {place} stretch?", "big"),
    FactTemplate("tower_height", "The clock tower of {place} stands {count} metres tall.",
                 "What is the height of the spire with the timepiece in {place}?", "count"),
    FactTemplate("music_teacher", "{person} taught {person2} to play the {instrument}.",
                 "Who was the music tutor of {last2}?", "person"),
    FactTemplate("wreck_finder", "{person} found the wreck of the {ship} off {place} in {year}.",
                 "Who located the sunken remains of the vessel {ship}?", "person"),
    FactTemplate("birthplace", "{person} was born in {place} in {year}.",
                 "In which town did {last} come into the world?", "place"),
    FactTemplate("mayor_years", "{person} served as mayor of {place} for {count} years.",
                 "How long did the town leader of {place} hold office?", "count"),
    FactTemplate("cake_ingredient", "The famous cake of {place} is baked with {ingredient}.",
                 "Which ingredient gives the well-known pastry from {place} its flavour?", "ingredient"),
    FactTemplate("festival_month", "The {place} lantern festival is held every {month}.",
                 "In which month do the people of {place} light paper lamps in celebration?", "month"),
    FactTemplate("school_pupils", "The school at {place} opened with {count} pupils.",
                 "How many children attended the first classes in {place}?", "count"),
    FactTemplate("horse_name", "{person} rode a grey horse named {pet}.",
                 "What was the mount of {last} called?", "pet"),
    FactTemplate("portrait_painter", "The portrait in the {place} library was painted by {person}.",
                 "Which artist made the picture hanging where {place} keeps its books?", "person"),
    FactTemplate("ship_sank", "The steamer {ship} sank near {place} in {year}.",
                 "When did the vessel called {ship} go under?", "year"),
    FactTemplate("bell_weight", "The great bell of {place} weighs {big} kilograms.",
                 "How heavy is the largest chime in {place}?", "big"),
    FactTemplate("island_people", "Only {big} people live on the island of {place}.",
                 "How many residents call the isle of {place} home?", "big"),
    FactTemplate("dialect", "The people of {place} speak an old dialect called {word}.",
                 "What is the name of the tongue used in {place}?", "word"),
    FactTemplate("bakery_founder", "{person} opened the first bakery in {place}.",
                 "Who established the earliest bread shop of {place}?", "person"),
    FactTemplate("monastery_flowers", "The garden of the {place} monastery is full of {flower}.",
                 "Which blooms fill the grounds of the abbey at {place}?", "flower"),
    FactTemplate("breakfast", "Every morning {person} ate {food} for breakfast.",
                 "What did {last} have as the first meal of the day?", "food"),
    FactTemplate("archive_key", "The key to the {place} archive hangs behind the {hiding}.",
                 "Where is the thing that unlocks the records room at {place} kept?", "hiding"),
    FactTemplate("captain", "The captain of the {ship} was {person}.",
                 "Who commanded the vessel {ship}?", "person"),
    FactTemplate("age_at_death", "{person} lived to the age of {age}.",
                 "How old was {last} upon dying?", "age"),
    FactTemplate("mill_owner", "The windmill at {place} belongs to {person}.",
                 "Who owns the wind-powered grain grinder in {place}?", "person"),
    FactTemplate("well_depth", "The old well in {place} is {count} metres deep.",
                 "How far down does the ancient water shaft of {place} go?", "count"),
)

_FIRST = ("Ilsa Tomas Marit Oskar Liesel Anders Henrike Jorun Edvard Sigrun Bertil Alma Konrad Ragna Matthias Elin "
          "Gustav Thora Ivo Wilma Casimir Agnes Leopold Frida Emil Ottilie Severin Greta Aurel Maren").split()
_LAST = ("Brandt Keller Lindqvist Ostrander Vollmer Haugen Petrak Dunmore Falkenrath Ekholm Marwick Tessaro Quillan "
         "Rosvik Halloran Kessing Abernath Solberg Castellane Ferrick Glasner Iversen Jarvik Lorrimer Nordahl "
         "Penhale Ravelin Thornbury Ulvang Zellner Brenmark Oakhurst Selwyn Varga Dalgren").split()
_PLACE_HEAD = "Varn Kell Osk Brem Tull Hav Mor Sel Dray Lund Ash Fen Grim Wend Rav Tor Quen Bryn Hald Skar".split()
_PLACE_TAIL = "holm mere by wick stad ford dal haven ness thorpe vik moor sund berg".split()
_COLOURS = {"ochre": [], "crimson": [], "teal": [], "violet": [], "amber": [], "scarlet": [], "turquoise": [],
            "mauve": [], "indigo": [], "grey": ["gray"], "maroon": [], "lilac": [], "saffron": [], "yellow": []}
_MATERIALS = "copper slate zinc tin cedar oak thatch lead marble granite bronze sandstone".split()
_OBJECTS = (("violin", "fiddle"), ("telescope", "spyglass"), ("lantern", "lamp"), ("compass", "navigation instrument"),
            ("sword", "blade"), ("ledger", "account book"), ("chalice", "goblet"), ("map", "chart"),
            ("diary", "journal"), ("pocket watch", "timepiece"), ("music box", "wind-up melody casket"))
_INSTRUMENTS = "cello harp oboe accordion clarinet lute bassoon zither trumpet viola".split()
_INGREDIENTS = "cardamom plums honey walnuts ginger rye cinnamon almonds lingonberries anise".split()
_FLOWERS = {"tulips": ["tulip"], "lavender": [], "peonies": ["peony"], "marigolds": ["marigold"],
            "irises": ["iris"], "foxgloves": ["foxglove"], "dahlias": ["dahlia"], "lilies": ["lily"],
            "poppies": ["poppy"], "asters": ["aster"]}
_MONTHS = "January February March April May June July August September October November December".split()
_HIDING = "mirror stove bookcase barometer tapestry cupboard wardrobe chimney".split()
_FOODS = {"porridge": [], "herring": [], "figs": ["fig"], "oysters": ["oyster"], "dumplings": ["dumpling"],
          "pancakes": ["pancake"], "apricots": ["apricot"], "sardines": ["sardine"]}
_ANIMALS = "cat dog goat parrot donkey tortoise raven pony".split()
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _made_up(rng: random.Random, syllables: int = 2) -> str:
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
    return (word + rng.choice("lnrs")).capitalize()


@dataclass(frozen=True)
class Fact:
    """One made-up fact: its sentence, the paraphrased question, the accepted answers, and where it sits."""

    kind: str  # the template's kind
    sentence: str
    question: str
    answers: tuple[str, ...]
    overlap: float  # word_overlap(question, sentence)
    depth: float = 0.0
    char: int = -1  # where the sentence starts in the document
    token: int = -1  # the index of its first token


class _Draw:
    """Slot values for one document: names, places, ships and made-up words are never repeated and never
    occur in the haystack."""

    def __init__(self, rng: random.Random, haystack_low: str):
        self.rng = rng
        self.low = haystack_low
        self.used: set[str] = set()

    def _fresh(self, make) -> str:
        for _ in range(10_000):
            value = make()
            if value.lower() not in self.used and value.lower() not in self.low:
                self.used.add(value.lower())
                return value
        raise RuntimeError("ran out of fresh made-up names for this document")

    def place(self) -> str:
        r = self.rng
        return self._fresh(lambda: r.choice(_PLACE_HEAD) + r.choice(_PLACE_TAIL) if r.random() < 0.7
                           else _made_up(r, 2) + r.choice(_PLACE_TAIL))

    def surname(self) -> str:
        r = self.rng
        return self._fresh(lambda: r.choice(_LAST) if r.random() < 0.8 else _made_up(r, 3))

    def word(self) -> str:
        return self._fresh(lambda: _made_up(self.rng, 2 + self.rng.randint(0, 1)))


def make_fact(template: FactTemplate, draw: _Draw) -> Fact:
    """Fill ``template`` with fresh values; the answers are those of its answer slot."""
    r = draw.rng
    values: dict[str, str] = {}
    answers: dict[str, list[str]] = {}
    fields = set(re.findall(r"{(\w+)}", template.fact + template.question))
    for who, last_key in (("person", "last"), ("person2", "last2")):
        if who in fields or last_key in fields:
            last = draw.surname()
            values[who], values[last_key] = f"{r.choice(_FIRST)} {last}", last
            answers[who] = [values[who], last]
    for name, make in (("place", draw.place), ("ship", draw.word), ("pet", draw.word), ("word", draw.word)):
        if name in fields:
            values[name] = make()
            answers[name] = [values[name]]
    for name, low, high in (("count", 3, 60), ("big", 120, 980), ("age", 61, 99)):
        if name in fields:
            n = r.randint(low, high)
            values[name], answers[name] = str(n), number_variants(n)
    if "year" in fields:
        values["year"] = str(r.randint(1702, 1968))
        answers["year"] = [values["year"]]
    if "object" in fields:
        values["object"], values["object_alt"] = r.choice(_OBJECTS)
    for name, pool in (("colour", _COLOURS), ("flower", _FLOWERS), ("food", _FOODS)):
        if name in fields:
            values[name] = r.choice(sorted(pool))
            answers[name] = [values[name], *pool[values[name]]]
    for name, pool in (("material", _MATERIALS), ("instrument", _INSTRUMENTS), ("ingredient", _INGREDIENTS),
                       ("month", _MONTHS), ("hiding", _HIDING), ("animal", _ANIMALS)):
        if name in fields:
            values[name] = r.choice(pool)
            answers[name] = [values[name]]
    sentence, question = template.fact.format(**values), template.question.format(**values)
    overlap = round(word_overlap(question, sentence), 4)
    return Fact(template.kind, sentence, question, tuple(answers[template.answer]), overlap)


# ---------------------------------------------------------------- general-knowledge controls

CONTROLS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the largest planet in our solar system?", ("Jupiter",)),
    ("What colour is the sky on a clear sunny day?", ("blue",)),
    ("How many days are there in a week?", ("7", "seven")),
    ("Who wrote the play Romeo and Juliet?", ("Shakespeare",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("Which animal says moo?", ("cow", "cows", "cattle")),
    ("What is the opposite of hot?", ("cold",)),
    ("How many months are there in a year?", ("12", "twelve")),
    ("What colour is fresh grass?", ("green",)),
    ("How many sides does a triangle have?", ("3", "three")),
    ("What is the capital of Italy?", ("Rome",)),
    ("Which planet is known as the Red Planet?", ("Mars",)),
    ("How many hours are there in a day?", ("24", "twenty-four")),
    ("What is the largest ocean on Earth?", ("Pacific",)),
    ("At what temperature in degrees Celsius does water freeze?", ("0", "zero")),
    ("What do bees make?", ("honey",)),
    ("What is frozen water called?", ("ice",)),
    ("What is the capital of England?", ("London",)),
    ("How many wheels does a bicycle have?", ("2", "two")),
    ("Which animal is known as the king of the jungle?", ("lion", "lions")),
)


# ---------------------------------------------------------------- documents


@dataclass(frozen=True)
class FactsDocument:
    """A haystack with made-up facts in it, and the control questions asked about it."""

    text: str
    length: int
    seed: int
    facts: tuple[Fact, ...]
    controls: tuple[tuple[str, tuple[str, ...]], ...]

    def to_examples(self) -> list[Example]:
        """One example per fact and per control question; every one carries the same document."""
        base = f"facts/{self.length}/{self.seed}"
        out = []
        for i, f in enumerate(self.facts):
            out.append(Example(
                id=f"{base}/fact{i}", document=self.text, question=f.question, answers=list(f.answers),
                task="facts", evidence=[f.sentence],
                metadata={"kind": "fact", "template": f.kind, "depth": f.depth, "length": self.length,
                          "seed": self.seed, "overlap": f.overlap, "fact_token": f.token}))
        for j, (question, answers) in enumerate(self.controls):
            out.append(Example(
                id=f"{base}/control{j}", document=self.text, question=question, answers=list(answers),
                task="facts", metadata={"kind": "control", "template": "control", "length": self.length,
                                        "seed": self.seed}))
        return out


def default_depths(n_facts: int) -> tuple[float, ...]:
    """Evenly spread depths: the middles of ``n_facts`` equal parts of the document."""
    return tuple(round((i + 0.5) / n_facts, 4) for i in range(n_facts))


def make_facts_document(
    haystack_text: str,
    tokenizer: Any,
    length: int,
    n_facts: int = 10,
    depths: Sequence[float] | None = None,
    *,
    seed: int = 0,
    n_controls: int = 5,
) -> FactsDocument:
    """A ``length``-token document with ``n_facts`` made-up facts of distinct template kinds.

    Fact ``i`` goes in at ``depths[i % len(depths)]`` (default :func:`default_depths`), moved back to the end
    of the sentence before it; ``n_controls`` control questions are drawn from :data:`CONTROLS`. Everything
    drawn comes from ``random.Random(seed)``.
    """
    if not 1 <= n_facts <= len(TEMPLATES):
        raise ValueError(f"the number of facts must be between 1 and {len(TEMPLATES)} (one per template kind), "
                         f"got {n_facts}")
    if not 0 <= n_controls <= len(CONTROLS):
        raise ValueError(f"the number of control questions must be between 0 and {len(CONTROLS)}, got {n_controls}")
    depths = tuple(default_depths(n_facts) if not depths else depths)
    rng = random.Random(seed)
    draw = _Draw(rng, haystack_text.lower())
    templates = rng.sample(TEMPLATES, n_facts)
    facts = [make_fact(t, draw) for t in templates]
    at = [float(depths[i % len(depths)]) for i in range(n_facts)]
    doc = insert_needles(haystack_text, tokenizer, length, [" " + f.sentence + " " for f in facts], at)
    placed = tuple(
        Fact(f.kind, f.sentence, f.question, f.answers, f.overlap, d, c + 1, t)
        for f, d, c, t in zip(facts, doc.depths, doc.needle_chars, doc.needle_tokens)
    )
    controls = tuple(rng.sample(CONTROLS, n_controls))
    return FactsDocument(doc.text, length, seed, placed, controls)
